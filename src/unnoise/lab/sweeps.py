"""Side-by-side runs for the lab: the guidance dial (part 6) and where the steps go (part 7).

The dial paints one prompt and seed at several guidance scales.  As rows of one batch with one scale
each, every scale shares each network call; looping over scales would cost one call per scale.

"Where the steps go" paints one prompt and seed with several inference spacings at a small step count,
and measures each result against a many-step reference from the same seed, split into the two things
the folklore says a spacing trades: big shapes (the picture seen as an 8×8 grid of block averages)
and fine detail (what is left over).  The page reports what these numbers show; it asserts nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..schedules import Schedule

COARSE_CELLS = 8  # big shapes: the picture as COARSE_CELLS × COARSE_CELLS block averages
MIN_REFERENCE_STEPS = 50  # the reference run takes max(this, 2 × steps) steps


def reference_steps(steps: int, limit: int = 1000) -> int:
    """Steps of the reference run for a spacing comparison at `steps` steps."""
    return min(limit, max(MIN_REFERENCE_STEPS, 2 * steps))


def spacing_chart(schedule: Schedule, steps: int, spacings: Sequence[str]) -> dict[str, Any]:
    """Where each spacing puts its steps: σ list, fractional t of each step, and how many steps start in the
    noisy half (σ > 1: noise outweighs signal, past part 2's crossing) and in the clean half.  Raises
    ScheduleError (a ValueError) when a spacing cannot place `steps` distinct steps."""
    rows = []
    for name in spacings:
        sigmas = schedule.sigmas(steps, name)  # (steps + 1,) float64, last 0
        ts = schedule.sigma_to_t(sigmas[:-1])
        noisy = int((sigmas[:-1] > 1).sum())
        rows.append({
            "spacing": name, "sigmas": sigmas.tolist(), "ts": ts.tolist(),
            "noisy_steps": noisy, "clean_steps": steps - noisy,
        })
    return {"schedule": schedule.name, "num_steps": schedule.num_steps, "steps": steps,
            "crossing_step": schedule.crossing_step(), "spacings": rows}


def coarse(x: torch.Tensor, cells: int = COARSE_CELLS) -> torch.Tensor:
    """(C, H, W) → the same size, each block of an about cells × cells grid replaced by its mean."""
    k = max(1, min(x.shape[-2:]) // cells)
    pooled = F.avg_pool2d(x[None].double(), k, ceil_mode=True)
    return F.interpolate(pooled, scale_factor=k, mode="nearest")[0, :, : x.shape[-2], : x.shape[-1]]


def _rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def compare_to_reference(x: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """How a few-step picture differs from the many-step one, (C, H, W) in [−1, 1] each:

    shape_error   RMS difference of the block averages: big shapes moved, merged or went missing;
    detail_ratio  RMS of the detail (picture − its block averages) over the reference's: below 1 the
                  detail is mushier than the reference's, above 1 it is grainier;
    error         the plain RMS difference, for scale.
    """
    x, reference = x.double().clamp(-1, 1), reference.double().clamp(-1, 1)
    cx, cr = coarse(x), coarse(reference)
    ref_detail = _rms(reference - cr)
    ratio = _rms(x - cx) / ref_detail if ref_detail > 1e-9 else 1.0
    out = {"shape_error": _rms(cx - cr), "detail_ratio": ratio, "error": _rms(x - reference)}
    return {k: (v if math.isfinite(v) else 0.0) for k, v in out.items()}
