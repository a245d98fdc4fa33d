"""The lab's half of an exported static site (`unnoise lab --export DIR`): what the page's static mode
(static/local.js) answers /api with, written from the very objects the served lab answers with.

`write_lab_site(out_dir, models)` writes the pictures the page starts from and returns the JSON-able dict
that the exporter puts in site.json under "lab": /api/status, /api/samplers and /api/schedules as the
server gives them, each model's size, schedule and defaults, and the limits and constants the page checks
requests against.  (The exporter's index.html carries `<meta name="unnoise-site" content="site.json">`,
which switches the page to answering its own requests.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from PIL import Image

from .. import __version__, schedules
from ..atomic import atomic_write
from ..errors import UnnoiseError
from ..limits import DEFAULT_SAMPLER, DEFAULT_STRENGTH, LAB_MAX_GUIDANCE
from ..modeldir import load_info, model_schedule
from ..sampling import SAMPLERS
from .messages import (
    DIAL_SCALES,
    LADDER_STRENGTHS,
    LEARNED_PARTS,
    MAX_SEED,
    SamplerInfo,
    SamplerList,
    ScheduleCurves,
    ScheduleList,
)
from .sweeps import MIN_REFERENCE_STEPS
from .uploads import the_cat

CAT_PNG = "pictures/cat.png"
IMAGE_ID = r"^(cat|[0-9a-f]{20})$"  # the picture ids the lab's requests accept


class SiteError(UnnoiseError, ValueError):
    """The static site cannot be written as asked (a model that cannot be read)."""


def sampler_list() -> SamplerList:
    """The registered samplers and inference spacings: /api/samplers, and the static page's list."""
    listed = [SamplerInfo(name=s.name, order=s.order, stochastic=s.stochastic, calls_per_step=s.calls_per_step,
                          paper=s.paper) for s in SAMPLERS.values()]
    return SamplerList(default=DEFAULT_SAMPLER, samplers=listed, default_spacing=schedules.DEFAULT_SPACING,
                       spacings=list(schedules.SPACINGS))


def curves(s: schedules.Schedule) -> ScheduleCurves:
    """One schedule as /api/schedules gives it: ᾱ per step and where signal = noise."""
    return ScheduleCurves(name=s.name, num_steps=s.num_steps, zero_terminal_snr=s.zero_terminal_snr,
                          crossing_step=s.crossing_step(), alphas_cumprod=s.alphas_cumprod.tolist())


def lab_site_data(models: Mapping[str, str | os.PathLike], num_train_steps: int = 1000) -> dict[str, Any]:
    """The dict of site.json's "lab": what the static page needs to answer /api as the served lab does.

    `models` maps each exported model's name to its directory (or bundled name)."""
    from .app import LabConfig
    from .learned import PainterFactory

    config = LabConfig(num_train_steps=num_train_steps)
    factory = PainterFactory(dict(models))
    scheds = {name: schedules.get(name, num_train_steps) for name in schedules.available()}
    scheds.update(factory.model_schedules())  # a diffusers folder's own β schedule, by its model
    described: dict[str, Any] = {}
    defaults = factory.model_defaults()
    for name, path in sorted(models.items()):
        try:
            info, _ = load_info(path)
        except (OSError, ValueError) as e:
            raise SiteError(f"cannot export model {name!r} from {path}: {e}") from e
        own = model_schedule(info)
        key = next((k for k, s in scheds.items() if s.num_steps == own.num_steps
                    and bool((s.alphas_cumprod == own.alphas_cumprod).all())), None)
        if key is None:  # a schedule none of the lab's lists has (another T): listed under the model's name
            key = f"{name} (model)"
            scheds[key] = replace(own, name=key)
        described[name] = {"image_size": info.image_size, "channels": info.channels, "schedule": key,
                           "prediction_type": info.prediction_type, "example_prompts": info.example_prompts[:8],
                           "defaults": defaults.get(name, {})}
    known = sorted(models)
    default_model = "emoji" if "emoji" in known else (known[0] if known else "")
    status = {"version": __version__, "learned": bool(known), "models": known, "default_model": default_model,
              "parts": list(LEARNED_PARTS) if known else [], "model_defaults": defaults,
              "running": 0, "waiting": 0, "limits": {k: float(v) for k, v in asdict(config).items()}}
    schedule_list = ScheduleList(default="linear", schedules=[curves(s) for s in scheds.values()])
    return {
        "status": status,
        "samplers": sampler_list().model_dump(),
        "schedules": schedule_list.model_dump(),
        "models": described,
        "pictures": {"cat": CAT_PNG},
        "constants": {"max_seed": MAX_SEED, "max_guidance": LAB_MAX_GUIDANCE, "default_strength": DEFAULT_STRENGTH,
                      "image_pattern": IMAGE_ID, "dial_scales": list(DIAL_SCALES),
                      "ladder_strengths": list(LADDER_STRENGTHS), "min_reference_steps": MIN_REFERENCE_STEPS},
    }


def write_lab_site(out_dir: str | os.PathLike, models: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
    """Write the page's pictures (pictures/cat.png) into out_dir; return site.json's "lab".

    The page and the static folder (scripts, styles, the runtime) are the exporter's to write."""
    from .app import LabConfig

    out = Path(out_dir)
    data = lab_site_data(models)
    (out / CAT_PNG).parent.mkdir(parents=True, exist_ok=True)
    cat = Image.fromarray(the_cat(LabConfig().image_size).pixels)
    atomic_write(out / CAT_PNG, lambda tmp: cat.save(tmp, format="PNG"))  # exact pixels, no colour profile
    return data
