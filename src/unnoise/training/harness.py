"""The run harness that `unnoise train` and `unnoise distill` share: one loop, one way to log, checkpoint,
stop, resume and export.

A run (`RunHarness`: training's `Trainer`, distillation's `Distiller`) brings its network, EMA, optimiser and
`train_step`; the harness drives them to cfg.max_steps: the learning rate, the loss check, the optimiser and
EMA update (`optimize`), a metrics line every cfg.log_every steps, a checkpoint every cfg.checkpoint_every,
Ctrl-C or SIGTERM saving at the next step boundary, `--resume` from the newest checkpoint that loads, and the
EMA network exported as a model directory at the end.

Every random choice of step n comes from a generator seeded by (seed, n) (`step_generator`, `Batches`), so a
resumed run continues bit-exactly: 10 steps + resume + 10 steps = 20 steps.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from tqdm import tqdm

from .. import __version__
from ..atomic import clean_debris, fault_point, write_json_atomic, write_text_atomic
from ..data.base import to_float
from ..errors import UnnoiseError
from . import checkpoint
from .card import read_metrics
from .ema import EMA

if TYPE_CHECKING:
    from ..models import UNet

RUN_CONFIG = "config.json"


class TrainingError(UnnoiseError, RuntimeError):
    """Training cannot go on (diverged, or a resume that does not match its run)."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step `step`: distinct, well-mixed streams per (seed, step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1))


class Batches:
    """Epoch-wise shuffling of an in-memory dataset, computed from (seed, epoch) alone.

    With `weights` (per-item draw probabilities, see CaptionedImages.sampling_weights) an "epoch" is
    len(dataset) items drawn with replacement in proportion to them, still from (seed, epoch) alone.
    `caption_weights` (see CaptionedImages.caption_weights) weigh each item's captions; None: uniform.
    """

    def __init__(self, dataset: Any, seed: int, weights: torch.Tensor | None = None,
                 caption_weights: torch.Tensor | None = None):
        if len(dataset) == 0:
            raise TrainingError("the dataset is empty")
        self.dataset = dataset
        self.seed = seed
        self.weights = weights
        self.caption_weights = caption_weights
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def perm(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 9_973 + epoch)
            if self.weights is None:
                order = torch.randperm(len(self), generator=g)
            else:
                order = torch.multinomial(self.weights, len(self), replacement=True, generator=g)
            self._perm = (epoch, order)
        return self._perm[1]

    def indices(self, step: int, batch_size: int) -> torch.Tensor:
        pos = torch.arange(step * batch_size, (step + 1) * batch_size)
        n = len(self)
        return torch.cat([self.perm(int(e))[pos[pos // n == e] % n] for e in torch.unique(pos // n)])

    def draw(self, step: int, batch_size: int, cond_dropout: float, null_index: int, g: torch.Generator,
             part: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """Global batch of step n: images float in [−1, 1] of its rows `part` only (a torchrun process reads
        just its own slice from disk), (b, C, H, W), and caption-bank indices of the whole batch (B,)."""
        items = self.indices(step, batch_size)
        captions = self.dataset.draw_captions(items, generator=g, weights=self.caption_weights)
        drop = torch.rand(batch_size, generator=g) < cond_dropout
        x0 = to_float(self.dataset.get_images(items[part]))
        return x0, torch.where(drop, torch.full_like(captions, null_index), captions)


class LRSettings(Protocol):
    """What learning_rate reads: a TrainConfig or a DistillConfig."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...
    @property
    def lr_decay(self) -> str: ...
    @property
    def max_steps(self) -> int: ...


def learning_rate(cfg: LRSettings, step: int, history: Sequence[dict] = ()) -> float:
    """Linear warm-up, then constant or cosine decay to 10 % of the peak rate.  The peak is cfg.lr, or, for a run
    whose rate was changed by --resume --lr (its extra["history"]: at step s from a to b), a until step s, then
    linearly from a to b over the warm-up's length, so that Adam's steps do not jump tenfold at once."""
    changes = [h for h in history if "lr" in h["changes"] and h.get("step") is not None]
    peak = changes[0]["changes"]["lr"][0] if changes else cfg.lr
    for change in changes:
        if change["step"] > step:
            break
        old, new = change["changes"]["lr"]
        ramp = min(1.0, (step - change["step"] + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        peak = new + (old - new) * (1 - ramp)  # exactly b once the ramp is done
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_decay == "cosine":
        progress = min(1.0, step / max(1, cfg.max_steps))
        return peak * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return peak * warm


def adamw(parameters: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.AdamW:
    """AdamW at cfg.lr, cfg.adam_betas, with cfg.weight_decay but none on norms and biases (the parameters with
    fewer than 2 dimensions)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in parameters:
        (no_decay if p.ndim < 2 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.adam_betas,
    )


class StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM asks to stop at the next step boundary; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def tidy_run(out: Path, step: int, log: Callable[[str], None]) -> None:
    """Before a run (re)starts at `step`: sweep what killed writers left, and cut the run's records back to
    this step (metrics rows and sample grids after it belong to work that was lost and is about to be
    redone), so that each step appears once."""
    for d in (out, out / "checkpoints", out / "samples", out / "model"):
        gone = clean_debris(d)
        if gone:
            log(f"swept {len(gone)} temporary file(s) left in {d} by a process that died mid-write")
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        kept = "".join(json.dumps(r) + "\n" for r in read_metrics(metrics, upto=step))
        if kept != metrics.read_text(errors="replace"):
            write_text_atomic(metrics, kept)
    for grid in sorted((out / "samples").glob("step-*.*")):
        stem = grid.stem.removeprefix("step-")
        if stem.isdigit() and int(stem) > step:
            grid.unlink()


def append_metrics(out: Path, row: dict[str, Any]) -> None:
    """One row appended to out/metrics.jsonl (a kill may tear it: read_metrics skips a torn line)."""
    line = json.dumps(row) + "\n"
    with open(out / "metrics.jsonl", "a") as f:

        def torn() -> None:  # what a kill mid-write leaves (the crash tests' fault point)
            f.write(line[: len(line) // 2])
            f.flush()

        fault_point("metrics", before=torn)
        f.write(line)


class Config(Protocol):
    """A frozen run config (TrainConfig, DistillConfig)."""

    def replace(self: C, **changes: Any) -> C: ...


C = TypeVar("C", bound=Config)


def saved_config(out: str | Path, load: Callable[[dict[str, Any]], C], error: type[Exception],
                 what: str = "--resume") -> C:
    """A run's config.json, read by `load` (a config class's from_dict); every fault one `error` line naming
    the file (`what`: the command, for messages)."""
    path = Path(out) / RUN_CONFIG
    if not path.exists():
        nothing = "nothing to resume" if what == "--resume" else f"nothing to {what}"
        raise error(f"{what}: {path} not found ({nothing} in {out})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what}: {path} is not valid JSON ({e}); is it a run's config.json?") from None
    if not isinstance(data, dict):
        raise error(f"{what}: {path} must hold a JSON object, got a {type(data).__name__}")
    try:
        return load(data)
    except (TypeError, ValueError) as e:
        raise error(f"{what}: {path} is not a run's config: {e}") from e


def overridden(saved: C, overrides: dict[str, Any], free: Iterable[str], error: type[Exception],
               what: str = "--resume") -> C:
    """`saved` (a frozen config) with the overrides in `free`; any other override must equal the saved value."""
    free = set(free)
    clash = sorted(k for k, v in overrides.items() if k not in free and v != getattr(saved, k))
    if clash:
        raise error(f"{what}: these settings differ from the run's config.json: {', '.join(clash)}")
    return saved.replace(**{k: v for k, v in overrides.items() if k in free})


def newest_checkpoint(run: Path, error: type[Exception], what: str = "export") -> checkpoint.Checkpoint:
    """`export` (or `what`, e.g. --init): the run's newest checkpoint that loads (past corrupt ones, said so on
    stderr)."""
    ck = checkpoint.load_newest(run, log=lambda m: print(f"{what}: {m}", file=sys.stderr))
    if ck is None:
        raise error(f"{what}: no complete checkpoint in {run}")
    return ck


PROGRESS_LINE_S = 30.0  # seconds between the progress lines of a run whose stderr is not a terminal


def progress_line(step: int, total: int, loss: float, images_per_s: float, steps_per_s: float) -> str:
    """One line of progress for a log file: `step 19,550/80,000 (24%) · loss 0.0112 · 1.61 step/s · 103 img/s ·
    10 h 25 min left`."""
    left = (total - step) / steps_per_s if steps_per_s > 0 else float("inf")
    return (f"step {step:,}/{total:,} ({100 * step / total:.0f}%) · loss {loss:.4g} · {steps_per_s:.3g} step/s · "
            f"{images_per_s:.0f} img/s · {_duration(left)} left")


def _duration(seconds: float) -> str:
    """`2 h 05 min`, `12 min`, `40 s` (or `?` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class RunHarness:
    """The loop of a run; a subclass sets the attributes below in its __init__ and defines train_step and export.

    Distributed runs (torchrun) override `is_main`, `agree` and `barrier`; the others are one process."""

    cfg: Any  # a TrainConfig or a DistillConfig
    out: Path  # the run directory
    model: UNet  # the network being trained
    ema: EMA
    optimizer: torch.optim.Optimizer
    quiet: bool
    error: type[Exception] = TrainingError  # the run's error class (distillation: DistillError)
    description: str | None = None  # the progress bar's label
    step = 0  # optimiser steps done
    elapsed = 0.0  # wall seconds of the loop over all invocations
    bar: tqdm | None = None

    # --- what a run defines ------------------------------------------------------------------------
    def train_step(self) -> tuple[float, dict[str, float]]:
        """One optimiser step (ending in `optimize`): the loss to average into the metrics line, and more
        values for it (the last step's)."""
        raise NotImplementedError

    def export(self, directory: Path) -> Path:
        """The EMA network as a model directory."""
        raise NotImplementedError

    def checkpoint_state(self) -> dict[str, Any]:
        """More entries of a checkpoint's trainer_state.json."""
        return {}

    def checkpoint_extra(self) -> dict[str, torch.Tensor] | None:
        """More tensors a resume needs (extra.safetensors)."""
        return None

    def history(self) -> Sequence[dict]:
        """The recipe changes recorded by --resume ({"step", "changes"}); learning_rate reads the --lr ones."""
        return ()

    def after_step(self) -> None:
        """After a step's metrics, before its checkpoint (training: the sample grid)."""

    def after_loop(self) -> None:
        """After the last step, before the last checkpoint."""

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files."""
        return True

    def agree(self, flag: bool) -> bool:
        """`flag` as every process of the run sees it (true if true on any)."""
        return flag

    def barrier(self) -> None:
        """Wait for every process of the run."""

    # --- the harness -------------------------------------------------------------------------------
    def _log(self, msg: str, force: bool = False) -> None:
        """A line on stderr (the main process; `force`: even when quiet, for what a user must know)."""
        if not self.quiet or (force and self.is_main):
            tqdm.write(msg, file=sys.stderr)

    def resume(self) -> None:
        """The newest checkpoint that loads (past corrupt ones, said so); none at all: start over, said so."""
        checkpoint.resume_newest(self.out, self.restore, self._log)

    def restore(self, ck: checkpoint.Checkpoint) -> None:
        self.model.load_state_dict(ck.model)
        self.ema.load_state_dict(ck.ema, ck.state["ema_updates"])
        self.optimizer.load_state_dict(ck.optimizer)
        self.step = ck.step

    def save_checkpoint(self) -> None:
        if self.is_main:
            state = {"ema_updates": self.ema.num_updates, "unnoise_version": __version__,
                     "config": self.cfg.to_dict(), **self.checkpoint_state()}
            checkpoint.save(self.out, self.step, self.model.state_dict(), self.ema.state_dict(),
                            self.optimizer.state_dict(), state, keep=self.cfg.keep_checkpoints,
                            extra=self.checkpoint_extra())
        self.barrier()

    def optimize(self, loss: torch.Tensor) -> float:
        """Step self.step's update from its loss: refuse a non-finite loss, set the learning rate, clip the
        gradient, step the optimiser and the EMA.  Returns the gradient norm before clipping."""
        if self.agree(not bool(torch.isfinite(loss))):
            raise self.error(f"loss became {loss.item()} at step {self.step}; stopped without saving. The last good "
                             "checkpoint is untouched: resume with --resume, perhaps with a lower --lr.")
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.cfg, self.step, self.history())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return float(grad_norm)

    def ema_model(self) -> UNet:
        """A copy of the network with the EMA weights, in eval mode."""
        from ..models import UNet

        model = UNet(self.model.config)
        self.ema.copy_to(model)
        return model.eval()

    def run(self) -> Path:
        """Train to cfg.max_steps (or cfg.max_minutes, or Ctrl-C: saved, then KeyboardInterrupt); export."""
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            tidy_run(self.out, self.step, self._log)  # killed writers' debris; metrics rows past the resumed step
            write_json_atomic(self.out / RUN_CONFIG, cfg.to_dict())
        # a terminal gets a live bar; a file (nohup … > log) gets a plain line at most every PROGRESS_LINE_S
        live = not self.quiet and sys.stderr.isatty()
        bar = self.bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not live, unit="step",
                              dynamic_ncols=True, desc=self.description)
        began = last = said = time.perf_counter()
        deadline = None if cfg.max_minutes is None else last + 60 * cfg.max_minutes
        window: list[float] = []
        with StopFlag() as stop:
            while self.step < cfg.max_steps:
                loss, more = self.train_step()
                window.append(loss)
                now = time.perf_counter()
                self.elapsed += now - last
                last = now
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    ips = len(window) * cfg.batch_size / max(1e-9, now - began)
                    row = {"step": self.step, "loss": sum(window) / len(window), **more,
                           "lr": learning_rate(cfg, self.step - 1, self.history()), "images_per_s": ips,
                           "time": time.time()}
                    if self.is_main:
                        append_metrics(self.out, row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.0f}")
                    if not live and (now - said >= PROGRESS_LINE_S or self.step == cfg.max_steps):
                        self._log(progress_line(self.step, cfg.max_steps, row["loss"], ips, ips / cfg.batch_size))
                        said = now
                    window, began = [], now
                self.after_step()
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.agree(stop.requested):
                    self.save_checkpoint()
                    bar.close()
                    self._log(f"interrupted: saved step {self.step} to {self.out / 'checkpoints'}; "
                              "continue with --resume")
                    raise KeyboardInterrupt
                if deadline is not None and self.agree(now > deadline):  # every process stops at the same step
                    self._log(f"--max-minutes {cfg.max_minutes:g} reached at step {self.step}; continue with --resume")
                    break
        bar.close()
        self.after_loop()
        if self.step % cfg.checkpoint_every:
            self.save_checkpoint()
        model_dir = self.out / "model"
        if self.is_main:
            self.export(model_dir)
        self.barrier()
        return model_dir
