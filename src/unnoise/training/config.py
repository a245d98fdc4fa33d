"""The training configuration: every knob of `unnoise train`, resolved and written to config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .. import schedules
from ..diffusion import PREDICTION_TYPES
from ..errors import UnnoiseError
from ..limits import DEFAULT_GUIDANCE, DEFAULT_STEPS

PRECISIONS = ("bf16", "fp32")
MODEL_SIZES = ("tiny", "small", "default")
BALANCES = ("items", "families")  # how training draws items: see CaptionedImages.sampling_weights
CAPTION_DRAWS = ("uniform", "names")  # how training draws an item's caption: see CaptionedImages.caption_weights
# Settings a resumed run may change; everything else must match the run's config.json.
RESUME_FREE = ("max_steps", "max_minutes", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints",
               "threads", "out")
# Settings of the recipe that may change mid-run; each change is recorded in extra["history"] with its step.
RESUME_RECIPE = ("balance", "caption_draw", "lr")  # lr: a manual step decay of a constant-lr run


class TrainConfigError(UnnoiseError, ValueError):
    """A training setting out of its range (from the command line or a run's config.json)."""


@dataclass(frozen=True)
class TrainConfig:
    data: str  # "digits", "emoji", "emoji-styles" or a folder with metadata.jsonl
    out: str  # run directory: config.json, metrics.jsonl, samples/, checkpoints/, model/
    image_size: int | None = None  # None: the dataset's native size (32)
    model_size: str = "default"  # UNet preset: tiny (tests), small, default
    prediction_type: str = "epsilon"  # what the network predicts: epsilon, v_prediction, sample
    schedule: str = "linear"  # noise schedule name (schedules.available())
    num_train_steps: int = 1000  # T of the DDPM schedule
    loss_weighting: str = "min_snr"  # uniform or min_snr (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # γ of Min-SNR-γ
    cond_dropout: float = 0.1  # share of captions replaced by the empty prompt, for classifier-free guidance
    balance: str = "items"  # draw items uniformly, or "families": each family of near-duplicates (skin tones) as one
    caption_draw: str = "uniform"  # an item's caption: uniform over its set, or "names": its names 3/4 of the time
    max_steps: int = 20_000  # optimiser steps in total (a resumed run continues to this)
    max_minutes: float | None = None  # stop (checkpoint, export) after this much wall time in one invocation
    batch_size: int = 64  # global batch: split evenly over the processes of a torchrun launch
    lr: float = 3e-4  # AdamW peak learning rate
    warmup_steps: int = 500  # linear learning-rate warm-up
    lr_decay: str = "constant"  # after warm-up: constant or cosine (to 10 % of lr)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW β1, β2
    grad_clip: float = 1.0  # clip the global gradient norm to this
    ema_decay: float = 0.999  # EMA decay (with a (1+n)/(10+n) warm-up)
    precision: str = "fp32"  # fp32, or bf16 autocast (pays only where the CPU has native bf16: docs/model.md)
    channels_last: bool = True  # NHWC memory format for convolutions
    compile: bool = False  # torch.compile the network
    seed: int = 0  # seeds data order, timesteps, noise and initialisation
    log_every: int = 50  # steps between metrics lines
    sample_every: int = 1000  # steps between sample grids (0: never)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 3  # how many checkpoints to keep on disk
    sample_steps: int = DEFAULT_STEPS  # sampler steps for the periodic grids
    sample_guidance: float = DEFAULT_GUIDANCE  # classifier-free guidance scale for the periodic grids
    threads: int | None = None  # torch intra-op threads (None: PyTorch's default)
    unet: dict[str, Any] | None = None  # the resolved UNet config (filled in from model_size when a run starts)
    init: str | None = None  # start from this model directory, or a run directory's newest checkpoint (its EMA)
    init_widen: bool = False  # …doubled in width by Net2Net (models/widen.py): the same function, more room
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded with the run

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise TrainConfigError(f"invalid training config: {msg}")

        if self.model_size not in MODEL_SIZES:
            bad(f"model_size must be one of {', '.join(MODEL_SIZES)}, got {self.model_size!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            bad(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        if self.schedule not in schedules.available():
            bad(f"unknown schedule {self.schedule!r}; choose from {', '.join(schedules.available())}")
        if self.prediction_type == "epsilon" and self.schedule.endswith(schedules.ZTSNR_SUFFIX):
            bad("epsilon prediction cannot recover the image at zero terminal SNR; use v_prediction (Lin et al. 2023)")
        if self.loss_weighting not in ("uniform", "min_snr"):
            bad(f"loss_weighting must be uniform or min_snr, got {self.loss_weighting!r}")
        if self.precision not in PRECISIONS:
            bad(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lr_decay not in ("constant", "cosine"):
            bad(f"lr_decay must be constant or cosine, got {self.lr_decay!r}")
        if self.balance not in BALANCES:
            bad(f"balance must be one of {', '.join(BALANCES)}, got {self.balance!r}")
        if self.caption_draw not in CAPTION_DRAWS:
            bad(f"caption_draw must be one of {', '.join(CAPTION_DRAWS)}, got {self.caption_draw!r}")
        if not 0 <= self.cond_dropout < 1:
            bad(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if not 1 <= self.max_steps <= 10_000_000:
            bad(f"max_steps must be between 1 and 10,000,000, got {self.max_steps}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            bad(f"max_minutes must be a positive number, got {self.max_minutes}")
        if not 1 <= self.batch_size <= 65_536:
            bad(f"batch_size must be between 1 and 65,536, got {self.batch_size}")
        if not 0 < self.lr < 1:
            bad(f"lr must be in (0, 1), got {self.lr}")
        if self.image_size is not None and self.image_size not in (16, 32, 64, 128):
            bad(f"image_size must be 16, 32, 64 or 128, got {self.image_size}")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.sample_every < 0 or self.warmup_steps < 0:
            bad("checkpoint_every and log_every must be ≥ 1; sample_every and warmup_steps ≥ 0")
        if not 0 <= self.ema_decay < 1:
            bad(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.threads is not None and self.threads < 1:
            bad(f"threads must be ≥ 1, got {self.threads}")
        if self.init_widen and self.init is None:
            bad("init_widen widens the network of init; give init (a model or run directory) too")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TrainConfigError(f"invalid training config: unknown keys {sorted(unknown)}")
        d = dict(d)
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
