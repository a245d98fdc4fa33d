"""Model directories: what `unnoise train` exports and `Painter.from_pretrained` loads.

    DIR/config.json        the UNet's config (models.UNet.save_pretrained)
    DIR/model.safetensors  its weights (fp16 for the bundled models; computed in float32)
    DIR/unnoise.json       everything else needed to paint: schedule, prediction type, text encoder,
                           image shape, example prompts, default sampler settings, how it was trained

A diffusers pipeline folder (model_index.json, unet/, scheduler/) loads here too, read by diffusers_folder.py.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from . import schedules
from .atomic import fault_point, fsync_dir, fsync_file, tmp_name
from .diffusers_folder import MODEL_INDEX, info_fields, is_pipeline_folder, load_unet, schedule_from_config
from .errors import UnnoiseError
from .limits import PAINT_DEFAULTS

META = "unnoise.json"
FORMAT_VERSION = 1
BUNDLED = ("emoji", "emoji-fast", "digits", "digits-fast", "digits-1step")  # the -fast and -1step models are
# distilled students: 4 calls and 1 call (digits-1step learned digits-fast's painting; docs/distill.md)


class ModelDirError(UnnoiseError, ValueError):
    """A model name or directory that cannot be loaded."""


@dataclass(frozen=True)
class ModelInfo:
    schedule: str  # noise schedule name
    num_train_steps: int  # T
    prediction_type: str  # epsilon, v_prediction or sample
    text_encoder: str  # id of the text encoder the model was trained with
    channels: int  # 1 (digits) or 3
    image_size: int  # side of the square images
    dataset: str = ""  # what it was trained on
    example_prompts: list[str] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)  # steps, guidance, sampler
    training: dict[str, Any] = field(default_factory=dict)  # steps, config, wall time …
    scheduler: dict[str, Any] = field(default_factory=dict)  # a diffusers pipeline folder's scheduler config ({}: none)
    num_classes: int | None = None  # classes of a class-conditional network (diffusers num_class_embeds); None: none
    clip_sample: float | None = 1.0  # x̂0 is clipped to [−c, c] while painting; None: not clipped


def bundled_root() -> Path:
    return Path(str(resources.files("unnoise") / "bundled"))


def resolve(name_or_dir: str | os.PathLike) -> Path:
    """A bundled model name (BUNDLED: "emoji", "emoji-fast", "digits", "digits-fast", "digits-1step") or a
    directory → the model directory."""
    s = str(name_or_dir)
    if s in BUNDLED:
        path = bundled_root() / s
        if not (path / META).exists():
            raise ModelDirError(f"the bundled model {s!r} is not installed in {path}")
        return path
    path = Path(s)
    if not path.exists():
        from .suggest import did_you_mean

        raise ModelDirError(f"unknown model {s!r}{did_you_mean(s, BUNDLED)} (not a bundled model: "
                            f"{', '.join(BUNDLED)}; nor an existing directory)")
    if path.is_dir() and not (path / META).exists() and is_pipeline_folder(path):
        return path  # a diffusers pipeline folder (diffusers_folder.py)
    if path.is_dir() and (path / "checkpoints").is_dir() and (path / "config.json").is_file():
        done = f"; it has finished: use {path / 'model'}" if (path / "model" / META).exists() else ""
        raise ModelDirError(f"{path} is a training run, not a model{done}; its newest checkpoint, while it "
                            f"trains: unnoise export {path} --out DIR, then --model DIR")
    if not path.is_dir() or not (path / META).exists():
        raise ModelDirError(f"{path} is not an unnoise model directory (no {META}) nor a diffusers pipeline folder "
                            f"(no {MODEL_INDEX}); a training run exports one to RUN/model")
    return path


def save_model_dir(
    directory: str | os.PathLike,
    model: torch.nn.Module,  # a models.UNet
    *,
    schedule: schedules.Schedule,
    prediction_type: str,
    dataset: Any,
    text_encoder: str,
    dtype: torch.dtype = torch.float16,
    training: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    extra_files: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write a model directory atomically (temp folder, then rename over the old one).  `extra_files`
    ({name: source path}) are copied in before the rename, e.g. a teacher's vocabulary.safetensors."""
    directory = Path(directory)
    tmp = tmp_name(directory)
    model.save_pretrained(tmp, dtype=dtype)  # type: ignore[operator]  # nn.Module's __getattr__ hides UNet's method
    info = {
        "format": FORMAT_VERSION,
        "schedule": schedule.name,
        "num_train_steps": schedule.num_steps,
        "prediction_type": prediction_type,
        "text_encoder": text_encoder,
        "channels": int(dataset.channels),
        "image_size": int(dataset.image_size),
        "dataset": str(dataset.name),
        "example_prompts": list(getattr(dataset, "example_prompts", []))[:16],
        "defaults": defaults or dict(PAINT_DEFAULTS),
        "training": training or {},
    }
    (tmp / META).write_text(json.dumps(info, indent=2) + "\n")
    for name, source in (extra_files or {}).items():
        shutil.copyfile(source, tmp / name)
    for f in tmp.iterdir():
        fsync_file(f)
    fault_point("export")
    # A killed process leaves the new folder in hiding (swept), or, between the two renames, the old one
    # moved aside, which atomic.clean_debris puts back.
    old = tmp_name(directory, "old")
    if directory.exists():
        os.rename(directory, old)
        fault_point("export-swap")
    os.rename(tmp, directory)
    fsync_dir(directory.parent)
    if old.exists():
        shutil.rmtree(old)
    return directory


def paint_defaults(info: ModelInfo) -> dict[str, Any]:
    """How the model paints when not told otherwise: steps, guidance, sampler, spacing (unnoise.json's
    `defaults` over the project's own)."""
    return {**PAINT_DEFAULTS, "spacing": schedules.DEFAULT_SPACING, **info.defaults}


def guidance_range(info: ModelInfo) -> tuple[float, float] | None:
    """The guidance scales a distilled student learned (w is its network input), or None for a model guided
    by classifier-free guidance, which takes any w."""
    if info.training.get("distilled_from") is None:
        return None
    config = info.training.get("config", {})
    return float(config.get("guidance_min", 1.0)), float(config.get("guidance_max", 6.0))


# JSON types of unnoise.json's fields and of its painting defaults (checked once, here, where the file is read).
_INFO_TYPES = {"schedule": "string", "num_train_steps": "integer", "prediction_type": "string",
               "text_encoder": "string",
               "channels": "integer", "image_size": "integer", "dataset": "string", "example_prompts": "list",
               "defaults": "object", "training": "object"}
_DEFAULT_TYPES = {"steps": "integer", "guidance": "number", "sampler": "string", "spacing": "string"}
_PYTHON_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "list": (list,), "object": (dict,)}


def _check_info(info: ModelInfo, file: Path) -> None:
    """Each field of its JSON type, so that e.g. `"guidance": null` is named here, not met deep inside painting."""
    fields = [(name, getattr(info, name), kind) for name, kind in _INFO_TYPES.items()]
    fields += [(f"defaults.{name}", info.defaults[name], kind) for name, kind in _DEFAULT_TYPES.items()
               if isinstance(info.defaults, dict) and name in info.defaults]
    for name, value, kind in fields:
        if isinstance(value, bool) or not isinstance(value, _PYTHON_TYPES[kind]):
            raise ModelDirError(f"{file}: {name} must be a{'n' * (kind[0] in 'aeiou')} {kind}, got {json.dumps(value)}")


def load_info(name_or_dir: str | os.PathLike) -> tuple[ModelInfo, Path]:
    """A model's ModelInfo (validated) and its resolved directory, without loading the network."""
    path = resolve(name_or_dir)
    if not (path / META).exists():
        return ModelInfo(**info_fields(path)), path
    try:
        raw = json.loads((path / META).read_text())
    except json.JSONDecodeError as e:
        raise ModelDirError(f"corrupt {path / META}: {e}") from e
    if not isinstance(raw, dict):
        raise ModelDirError(f"{path / META} must hold a JSON object, got a {type(raw).__name__}")
    if raw.pop("format", None) != FORMAT_VERSION:
        raise ModelDirError(f"{path / META}: unsupported format (this unnoise reads format {FORMAT_VERSION})")
    try:
        info = ModelInfo(**raw)
    except TypeError as e:
        raise ModelDirError(f"{path / META}: {e}") from e
    _check_info(info, path / META)
    schedules.get(info.schedule, info.num_train_steps)  # validates
    return info, path


def model_schedule(info: ModelInfo) -> schedules.Schedule:
    """The noise schedule a model was trained on: its diffusers scheduler config's, else the named one."""
    if info.scheduler:
        return schedule_from_config(info.scheduler)
    return schedules.get(info.schedule, info.num_train_steps)


def load_model_dir(
    name_or_dir: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelInfo, Path]:
    """(network in eval mode, float32, on device), its ModelInfo, and the resolved directory."""
    from .models import UNet

    info, path = load_info(name_or_dir)
    if info.scheduler:
        return load_unet(path, device), info, path
    model = UNet.from_pretrained(path, dtype=torch.float32).to(device).eval()
    return model, info, path
