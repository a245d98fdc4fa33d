"""The training loop: ε-prediction (or v / x0) on free, infinite (x_t, t, caption) pairs.

Every random choice of step n — which images, which captions, which are dropped to the empty prompt,
the timesteps and the noise — is drawn from a generator seeded by (seed, n), for the *global* batch.
A process of a torchrun launch takes its slice of that batch.  So a resumed run continues exactly
(10 + resume + 10 steps = 20 steps), and N processes reproduce one process with the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import __version__, diffusion, schedules
from ..atomic import atomic_write, clean_debris, fault_point, write_json_atomic, write_text_atomic
from ..data.base import to_float
from ..errors import UnnoiseError
from . import checkpoint, distributed
from .card import read_metrics
from .config import TrainConfig
from .ema import EMA

RUN_CONFIG = "config.json"


class TrainingError(UnnoiseError, RuntimeError):
    """Training cannot go on (diverged, or a resume that does not match its run)."""


def _step_generator(seed: int, step: int) -> torch.Generator:
    # distinct, well-mixed streams per (seed, step)
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1))


class Batches:
    """Epoch-wise shuffling of an in-memory dataset, computed from (seed, epoch) alone.

    With `weights` (per-item draw probabilities, see CaptionedImages.sampling_weights) an "epoch" is
    len(dataset) items drawn with replacement in proportion to them, still from (seed, epoch) alone.
    """

    def __init__(self, dataset, seed: int, weights: torch.Tensor | None = None):
        if len(dataset) == 0:
            raise TrainingError("the dataset is empty")
        self.dataset = dataset
        self.seed = seed
        self.weights = weights
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
             part: slice = slice(None)):
        """Global batch of step n: images float in [−1, 1] of its rows `part` only (a torchrun process reads
        just its own slice from disk), (b, C, H, W), and caption-bank indices of the whole batch (B,)."""
        items = self.indices(step, batch_size)
        captions = self.dataset.draw_captions(items, generator=g)
        drop = torch.rand(batch_size, generator=g) < cond_dropout
        x0 = to_float(self.dataset.get_images(items[part]))
        return x0, torch.where(drop, torch.full_like(captions, null_index), captions)


class LRSettings(Protocol):
    """What learning_rate reads: a TrainConfig or a distillation's DistillConfig."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...
    @property
    def lr_decay(self) -> str: ...
    @property
    def max_steps(self) -> int: ...


def learning_rate(cfg: LRSettings, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_decay == "cosine":
        progress = min(1.0, step / max(1, cfg.max_steps))
        return cfg.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return cfg.lr * warm


class _StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM asks to stop at the next step boundary; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """Builds everything a run needs from a TrainConfig; `run()` trains to cfg.max_steps."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, device: str | None = None, quiet: bool = False):
        from ..conditioning.text import CaptionBank, TextEncoder
        from ..data import get_dataset
        from ..models import UNet

        self.dist = distributed.init(device)
        self.quiet = quiet or not self.dist.is_main
        self.out = Path(cfg.out)
        self.cfg = cfg
        if cfg.batch_size % self.dist.world_size:
            raise TrainingError(f"batch size {cfg.batch_size} must divide evenly over {self.dist.world_size} processes")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

        self.schedule = schedules.get(cfg.schedule, cfg.num_train_steps)
        # the set-up takes tens of seconds on a first run: say what is happening (stderr, main process only)
        started = time.perf_counter()
        self._log(f"loading the data: {cfg.data} …")
        with distributed.local_main_first(self.dist):  # one process per machine decodes a folder into its cache
            self.dataset = get_dataset(cfg.data, split="train", image_size=cfg.image_size)
        self.batches = Batches(self.dataset, cfg.seed, self.dataset.sampling_weights(cfg.balance))
        size = self.dataset.image_size
        self._log(f"  {len(self.dataset):,} images of {size}×{size}, {len(self.dataset.captions):,} captions "
                  f"({time.perf_counter() - started:.1f} s)")
        started = time.perf_counter()
        self._log("encoding the captions with the text encoder (cached on disk: fast from the second run) …")
        self.encoder = TextEncoder.load()
        self.bank = CaptionBank(self.dataset.captions, self.encoder)  # shared on-disk cache: encode once per machine
        self._log(f"  {len(self.bank.captions):,} captions ready ({time.perf_counter() - started:.1f} s)")

        self._log(f"building the network ({cfg.model_size}) on {self.dist.device} …")
        unet_config = model_config(cfg, self.dataset)
        self.cfg = cfg = cfg.replace(unet=unet_config.to_dict())  # a resumed run rebuilds exactly this network
        torch.manual_seed(cfg.seed)  # initialisation: identical on every rank
        self.model = UNet(unet_config).to(self.dist.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, cfg.ema_decay)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 else decay).append(p)  # no weight decay on norms and biases
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.adam_betas,
        )
        self.step = 0
        if resume:
            self._load_latest()
            for change in self.cfg.extra.get("history", []):
                if change.get("step") is None:
                    change["step"] = self.step
        self.net: torch.nn.Module = self.model
        if self.dist.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.autocast = (
            torch.autocast(self.dist.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
        )
        params = sum(p.numel() for p in self.model.parameters())
        self._log(f"  {params / 1e6:.2f} M parameters; training {'from step ' + str(self.step) if resume else ''}"
                  f"{' ' if resume else ''}towards step {cfg.max_steps:,} (the first steps are the slowest) …")

    # --- set-up ---------------------------------------------------------------------------------
    def _load_latest(self) -> None:
        """The newest checkpoint that loads (past corrupt ones, said so); none at all: start over, said so."""
        checkpoint.resume_newest(self.out, self.restore, self._log)

    def restore(self, ck: checkpoint.Checkpoint) -> None:
        self.model.load_state_dict(ck.model)
        self.ema.load_state_dict(ck.ema, ck.state["ema_updates"])
        self.optimizer.load_state_dict(ck.optimizer)
        self.step = ck.step

    # --- reporting ----------------------------------------------------------------------------------
    def _log(self, msg: str, force: bool = False) -> None:
        """A line on stderr (rank 0; `force`: even when quiet, for what a user must know)."""
        if not self.quiet or (force and self.dist.is_main):
            tqdm.write(msg, file=sys.stderr)

    def _metrics(self, row: dict[str, Any]) -> None:
        if self.dist.is_main:
            append_metrics(self.out, row)

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            state = {"ema_updates": self.ema.num_updates, "unnoise_version": __version__, "config": self.cfg.to_dict()}
            checkpoint.save(
                self.out, self.step, self.model.state_dict(), self.ema.state_dict(), self.optimizer.state_dict(),
                state, keep=self.cfg.keep_checkpoints,
            )
        distributed.barrier(self.dist)

    # --- one step --------------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float]:
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        g = _step_generator(cfg.seed, self.step)
        b = cfg.batch_size // world
        part = slice(rank * b, (rank + 1) * b)
        x0, captions = self.batches.draw(self.step, cfg.batch_size, cfg.cond_dropout, self.bank.null_index, g, part)
        t = torch.randint(0, self.schedule.num_steps, (cfg.batch_size,), generator=g)
        noise = torch.randn((cfg.batch_size, *x0.shape[1:]), generator=g)  # the global batch's, at any world size
        torch.manual_seed(g.initial_seed() + rank)  # dropout layers draw from the global RNG: pin it per step
        captions, t, noise = captions[part], t[part], noise[part]
        x_t = self.schedule.add_noise(x0, noise, t)
        target = diffusion.training_target(self.schedule, x0, noise, t, cfg.prediction_type)
        weight = diffusion.loss_weight(self.schedule, t, cfg.prediction_type, cfg.loss_weighting, cfg.min_snr_gamma)
        cond = self.bank.condition(captions)
        dev = self.dist.device
        x_t, target, weight = x_t.to(dev), target.to(dev), weight.to(dev)
        if cfg.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        cond = {k: v.to(dev) for k, v in cond.items()}

        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
        with self.autocast:
            out = self.net(x_t, t.to(dev, torch.float32), cond)
        per_sample = F.mse_loss(out.float(), target, reduction="none").mean(dim=(1, 2, 3))
        loss = (weight * per_sample).mean()
        bad = not bool(torch.isfinite(loss))
        if distributed.any_true(bad, self.dist):
            raise TrainingError(
                f"loss became {loss.item()} at step {self.step}; stopped without saving. The last good "
                f"checkpoint is untouched: resume with --resume, perhaps with a lower --lr."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return float(distributed.all_reduce_mean(loss.detach(), self.dist)), float(grad_norm)

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            tidy_run(self.out, self.step, self._log)
            write_json_atomic(self.out / RUN_CONFIG, cfg.to_dict())
        bar = self.bar = tqdm(total=cfg.max_steps, initial=self.step, disable=self.quiet, unit="step",
                              dynamic_ncols=True)
        window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
        with _StopFlag() as stop:
            while self.step < cfg.max_steps:
                loss, grad_norm = self.train_step()
                window_loss, window_n = window_loss + loss, window_n + 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    ips = window_n * cfg.batch_size / elapsed
                    row = {
                        "step": self.step, "loss": window_loss / window_n, "grad_norm": grad_norm,
                        "lr": learning_rate(cfg, self.step - 1), "images_per_s": ips, "time": time.time(),
                    }
                    self._metrics(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.0f}")
                    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
                # the grid first: a checkpoint of step n then implies its grid, and a resume re-makes the grid
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.dist.is_main:
                    self.sample_grid()
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if distributed.any_true(stop.requested, self.dist):
                    self.save_checkpoint()
                    bar.close()
                    self._log(f"interrupted: saved step {self.step} to {self.out / 'checkpoints'}; continue with --resume")
                    raise KeyboardInterrupt
        bar.close()
        if cfg.sample_every and self.dist.is_main and not self._grid_path().exists():
            self.sample_grid()  # the last step's, if the loop did not make it
        if self.step % cfg.checkpoint_every:
            self.save_checkpoint()
        model_dir = self.out / "model"
        if self.dist.is_main:
            self.export(model_dir)
        distributed.barrier(self.dist)
        return model_dir

    # --- outputs -----------------------------------------------------------------------------------------
    def ema_model(self) -> torch.nn.Module:
        from ..models import UNet

        model = UNet(self.model.config)
        self.ema.copy_to(model)
        return model.eval()

    def export(self, directory: Path, dtype: torch.dtype = torch.float16, defaults: dict | None = None) -> Path:
        """The EMA network as a model directory that `Painter.from_pretrained` loads."""
        from ..modeldir import save_model_dir

        return save_model_dir(
            directory, self.ema_model(), schedule=self.schedule, prediction_type=self.cfg.prediction_type,
            dataset=self.dataset, text_encoder=self.encoder.id, dtype=dtype, defaults=defaults,
            training={"steps": self.step, "config": self.cfg.to_dict(), "unnoise_version": __version__},
        )

    def sample_grid(self, seeds_per_prompt: int = 4) -> Path:
        from ..generation import generate
        from ..images import grid, to_pil

        prompts = list(getattr(self.dataset, "example_prompts", self.dataset.captions[:8]))[:8]
        cond = self.encoder.encode([p for p in prompts for _ in range(seeds_per_prompt)])
        uncond = self.encoder.encode([""] * len(prompts) * seeds_per_prompt)
        x = generate(
            self.ema_model(), self.schedule, self.cfg.prediction_type, cond, uncond,
            shape=(self.dataset.channels, self.dataset.image_size, self.dataset.image_size), seeds=list(range(len(prompts) * seeds_per_prompt)),
            steps=self.cfg.sample_steps, guidance=self.cfg.sample_guidance,
        )
        out = self._grid_path()
        out.parent.mkdir(parents=True, exist_ok=True)
        tiles = [to_pil(im).resize((64, 64), 0) for im in x]
        atomic_write(out, lambda p: grid(tiles, cols=seeds_per_prompt * 2).save(p, format="PNG"), fault="samples")
        write_text_atomic(out.with_suffix(".txt"), "\n".join(prompts) + "\n")
        return out

    def _grid_path(self) -> Path:
        return self.out / "samples" / f"step-{self.step:08d}.png"


def tidy_run(out: Path, step: int, log: Callable[[str], None]) -> None:
    """Before a run (re)starts at `step`: sweep what killed writers left, and cut the run's records back to
    this step (metrics rows and sample grids after it belong to work that was lost and is about to be
    redone), so that each step appears once.  Shared by `unnoise train` and `unnoise distill`."""
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
        fault_point("metrics", before=lambda: (f.write(line[: len(line) // 2]), f.flush()))  # a torn line
        f.write(line)


def model_config(cfg: TrainConfig, dataset):
    """The run's UNet: its stored config, else the preset sized to the data."""
    from ..models import UNetConfig

    if cfg.unet is not None:
        return UNetConfig.from_dict(cfg.unet)
    preset = getattr(UNetConfig, cfg.model_size)()
    return dataclasses.replace(
        preset,
        in_channels=dataset.channels, out_channels=dataset.channels, image_size=dataset.image_size,
        prediction_type=cfg.prediction_type,
    )


def resume_config(out: str | Path, overrides: dict[str, Any], what: str = "--resume") -> TrainConfig:
    """The run's saved config with the explicitly given settings that may change on resume (`what`: the
    command, for messages)."""
    path = Path(out) / RUN_CONFIG
    if not path.exists():
        raise TrainingError(f"{what}: {path} not found (no run in {out})")
    try:
        saved = TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise TrainingError(f"{what}: {path} is not a run's config: {e}") from e
    free = {"max_steps", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "threads", "out"}
    recipe = {"balance"}  # may change mid-run; each change is recorded in extra["history"] with its step
    clash = sorted(k for k, v in overrides.items() if k not in free | recipe and v != getattr(saved, k))
    if clash:
        raise TrainingError(f"{what}: these settings differ from the run's config.json: {', '.join(clash)}")
    cfg = saved.replace(**{k: v for k, v in overrides.items() if k in free | recipe})
    changes = {k: [getattr(saved, k), v] for k, v in overrides.items() if k in recipe and v != getattr(saved, k)}
    if changes:  # "step" is filled in by the Trainer once it knows which checkpoint it resumed
        cfg = cfg.replace(extra={**saved.extra, "history": [*saved.extra.get("history", []), {"step": None, "changes": changes}]})
    return cfg


def export_run(run: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float16,
               defaults: dict | None = None) -> Path:
    """A run's newest good checkpoint (its EMA weights) → a model directory, while the run may go on.  The run
    is read from `run` itself, never from the path stored in its config.json (a run may be moved or copied)."""
    run = Path(run)
    cfg = resume_config(run, {"out": str(run)}, what="export")
    ck = checkpoint.load_newest(run, log=lambda m: print(f"export: {m}", file=sys.stderr))
    if ck is None:
        raise TrainingError(f"export: no complete checkpoint in {run}")
    trainer = Trainer(cfg, quiet=True)
    try:
        trainer.restore(ck)
        return trainer.export(Path(out), dtype=dtype, defaults=defaults)
    finally:
        distributed.shutdown(trainer.dist)


def train(cfg: TrainConfig, *, resume: bool = False, device: str | None = None, quiet: bool = False) -> Path:
    info = distributed.init(device)
    advice = f"the checkpoints in {Path(cfg.out) / 'checkpoints'} are intact: start every torchrun again with --resume"
    trainer = None
    try:
        with distributed.peer_loss_is_an_error(info, advice):
            trainer = Trainer(cfg, resume=resume, device=device, quiet=quiet)
            return trainer.run()
    finally:
        if getattr(trainer, "bar", None) is not None:
            trainer.bar.close()  # so that an error message starts on a line of its own
        distributed.shutdown(info)

