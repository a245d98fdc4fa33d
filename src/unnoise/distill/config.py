"""The distillation configuration: every knob of `unnoise distill`, resolved and written to config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import schedules
from ..errors import UnnoiseError
from ..training.harness import overridden, saved_config

STUDENT_STEPS = (1, 2, 4)  # the step counts a student is distilled for
METHODS = ("consistency", "guidance", "trajectory", "progressive")
SIGMA_SAMPLINGS = ("log_uniform", "grid")  # guidance distillation: where the student is taught
LOSSES = ("l2", "huber")
# the per-sample scale on the x̂0 error (guidance, trajectory, progressive)
WEIGHTINGS = ("truncated_snr", "sqrt_truncated_snr", "uniform")
# Settings a resumed run may change; everything else must match the run's config.json.
RESUME_FREE = ("max_steps", "max_minutes", "log_every", "checkpoint_every", "keep_checkpoints", "threads", "out")


class DistillError(UnnoiseError, ValueError):
    """Bad distillation settings, or a resume that does not match its run."""


@dataclass(frozen=True)
class DistillConfig:
    teacher: str  # bundled model name (emoji, digits) or a model directory
    out: str  # run directory: config.json, metrics.jsonl, checkpoints/, model/
    steps: int = 4  # K: the student's default sampler steps (1, 2 or 4); progressive distils down to it
    method: str = "consistency"  # consistency (Song et al. 2023, LCM), guidance (Meng et al. 2023, stage 1),
    # trajectory (each of the student's K DDIM steps lands where the teacher's fine solve does), progressive
    data: str | None = None  # digits, emoji or a folder; None: the dataset the teacher was trained on
    init: str | None = None  # start the student from this student model directory (same teacher) instead of the teacher
    sigma_sampling: str = "log_uniform"  # guidance: σ log-uniform over the schedule, or the K σs of the student's
    # sampler
    ode_steps: int = 32  # N: the teacher's ODE grid (consistency) / its first step count (progressive) /
    # its calls per student interval, ⌈N/K⌉ (trajectory)
    spacing: str | None = None  # σ spacing of the grid and of the student's sampler (None: the teacher's default)
    guidance_min: float = 1.0  # w is drawn uniformly from [guidance_min, guidance_max] per sample
    guidance_max: float = 6.0  # (Meng et al. 2023 / LCM: one student for a range of guidance scales)
    guidance: float | None = None  # the student's default w in unnoise.json (None: the teacher's default)
    cond_dropout: float = 0.1  # share of captions replaced by the empty prompt (so "" paints unconditionally)
    loss: str = "huber"  # l2, or pseudo-Huber (Song & Dhariwal 2023, iCT: c = 0.00054·sqrt(dim))
    weighting: str = "truncated_snr"  # scale of a sample's x̂0 error: max(1/σ, 1) (Salimans & Ho 2022), √, or 1
    # (which σ each pulls hardest: distill.md)
    interval_weights: tuple[float, ...] | None = None  # trajectory: a factor per student interval (K of them, from
    # the noisiest) on top of the weighting, e.g. (1, 1, 1, 100): uniform, but the σ_min → 0 call pulled as hard as
    # the others in the network's output space (distill.md)
    last_target: str = "ode"  # trajectory, the interval that ends at 0: the teacher's fine solve to 0 ("ode"), or
    # its guided x̂0 at the interval's start in one call ("x0": a final denoising step; measured in distill.md)
    reuse: int = 1  # trajectory, guidance: each teacher target serves this many consecutive steps (the batch is the
    # fresh batch_size/reuse samples of this step and of the reuse − 1 steps before; the teacher's targets do not
    # depend on the student, so a resume recomputes them and stays exact)
    student_states: float = 0.0  # trajectory: this share of each fresh batch starts its interval i > 0 where the
    # student's own painting is (its DDIM steps from σ_0, no gradient) instead of on noised data: the states it meets
    # when it paints, CFG-guided, off the data's marginals (distill.md); its window of targets goes into checkpoints
    student_width: int = 1  # the student's width relative to its teacher's network: 1, or 2 (base channels and head
    # width doubled, started as exactly the teacher's function by Net2Net widening; models/widen.py, distill.md)
    max_steps: int = 4000  # optimiser steps in total (a resumed run continues to this)
    max_minutes: float | None = None  # stop (checkpoint, export) after this much wall time in one invocation
    batch_size: int = 32  # images per step
    lr: float = 1e-4  # AdamW peak learning rate
    warmup_steps: int = 100  # linear learning-rate warm-up
    lr_decay: str = "constant"  # after warm-up: constant or cosine (to 10 % of lr)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW β1, β2
    grad_clip: float = 1.0  # clip the global gradient norm to this
    ema_decay: float = 0.95  # EMA μ: the consistency target network f_θ⁻ and the exported student (LCM: 0.95)
    seed: int = 0  # seeds data order, w, grid points, noise
    log_every: int = 50  # steps between metrics lines
    checkpoint_every: int = 250  # steps between checkpoints
    keep_checkpoints: int = 3  # how many checkpoints to keep on disk
    threads: int | None = None  # torch intra-op threads (None: PyTorch's default)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise DistillError(f"invalid distillation config: {msg}")

        if not isinstance(self.teacher, str) or not self.teacher:
            bad("teacher must be emoji, digits or a model directory")
        if isinstance(self.steps, bool) or self.steps not in STUDENT_STEPS:
            bad(f"steps must be one of {', '.join(map(str, STUDENT_STEPS))}, got {self.steps!r}")
        if self.method not in METHODS:
            bad(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.loss not in LOSSES:
            bad(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.weighting not in WEIGHTINGS:
            bad(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.sigma_sampling not in SIGMA_SAMPLINGS:
            bad(f"sigma_sampling must be one of {', '.join(SIGMA_SAMPLINGS)}, got {self.sigma_sampling!r}")
        if self.sigma_sampling == "grid" and self.method != "guidance":
            bad("sigma_sampling 'grid' is for the guidance method (the other methods have their own grids)")
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            bad("init must be a student model directory")
        if self.spacing is not None:
            try:
                schedules.check_spacing(self.spacing)
            except schedules.ScheduleError as e:
                bad(str(e))
        if not 2 <= self.ode_steps <= 1000:
            bad(f"ode_steps must be from 2 to 1000, got {self.ode_steps}")
        halvings = self.ode_steps // self.steps
        if self.method == "progressive" and (self.ode_steps % self.steps or halvings & (halvings - 1)):
            bad(f"progressive distillation halves the steps: ode_steps ({self.ode_steps}) must be steps·2^k")
        for name in ("guidance_min", "guidance_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 100:
                bad(f"{name} must be a finite number from 0 to 100, got {v!r}")
        if self.guidance_min > self.guidance_max:
            bad(f"guidance_min ({self.guidance_min}) exceeds guidance_max ({self.guidance_max})")
        if self.guidance is not None and not self.guidance_min <= self.guidance <= self.guidance_max:
            bad(f"guidance {self.guidance} lies outside the distilled range [{self.guidance_min}, {self.guidance_max}]")
        if not 0 <= self.cond_dropout < 1:
            bad(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.interval_weights is not None:
            iw = self.interval_weights
            if self.method != "trajectory":
                bad("interval_weights are for the trajectory method (one factor per student interval)")
            numbers = all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in iw)
            if len(iw) != self.steps or not numbers or not all(0 < v <= 1e6 for v in iw):
                bad(f"interval_weights must be {self.steps} positive numbers (one per student step), got {list(iw)!r}")
        if self.last_target not in ("ode", "x0"):
            bad(f"last_target must be ode or x0, got {self.last_target!r}")
        if self.last_target != "ode" and self.method != "trajectory":
            bad("last_target is for the trajectory method (the target of its last interval)")
        if isinstance(self.reuse, bool) or not isinstance(self.reuse, int) or not 1 <= self.reuse <= 64:
            bad(f"reuse must be an integer from 1 to 64, got {self.reuse!r}")
        if self.reuse > 1 and self.method not in ("trajectory", "guidance"):
            bad("reuse is for the trajectory and guidance methods (the others' targets change with the student)")
        if self.reuse > 1 and self.batch_size % self.reuse:
            bad(f"batch_size ({self.batch_size}) must be a multiple of reuse ({self.reuse})")
        v = self.student_states
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 1):
            bad(f"student_states must be a share from 0 to 1, got {v!r}")
        if v and self.method != "trajectory":
            bad("student_states is for the trajectory method (where the student starts its intervals)")
        if isinstance(self.student_width, bool) or self.student_width not in (1, 2):
            bad(f"student_width must be 1 (the teacher's network) or 2 (twice as wide), got {self.student_width!r}")
        if not 1 <= self.max_steps <= 10_000_000:
            bad(f"max_steps must be between 1 and 10,000,000, got {self.max_steps}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            bad(f"max_minutes must be a positive number, got {self.max_minutes}")
        if not 1 <= self.batch_size <= 65_536:
            bad(f"batch_size must be between 1 and 65,536, got {self.batch_size}")
        if not 0 < self.lr < 1:
            bad(f"lr must be in (0, 1), got {self.lr}")
        if self.lr_decay not in ("constant", "cosine"):
            bad(f"lr_decay must be constant or cosine, got {self.lr_decay!r}")
        if not 0 <= self.ema_decay < 1:
            bad(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.warmup_steps < 0 or self.keep_checkpoints < 1:
            bad("checkpoint_every, log_every and keep_checkpoints must be ≥ 1; warmup_steps ≥ 0")
        if self.threads is not None and self.threads < 1:
            bad(f"threads must be ≥ 1, got {self.threads}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        if self.interval_weights is not None:
            d["interval_weights"] = list(self.interval_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise DistillError(f"invalid distillation config: unknown keys {sorted(unknown)}")
        d = dict(d)
        for key in ("adam_betas", "interval_weights"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def replace(self, **changes: Any) -> DistillConfig:
        return dataclasses.replace(self, **changes)


def resume_config(out: str | Path, overrides: dict[str, Any], what: str = "--resume") -> DistillConfig:
    """The run's saved config with the explicitly given settings that may change on resume (`what`: the
    command, for messages)."""
    saved = saved_config(out, DistillConfig.from_dict, DistillError, what)
    return overridden(saved, overrides, RESUME_FREE, DistillError, what)
