"""Training: ε-prediction (or v / x0) on free, infinite (x_t, t, caption) pairs.  `Trainer` builds the run
and its step; the loop, checkpoints, resume and export are the run harness's (harness.py).

Every random choice of step n — which images, which captions, which are dropped to the empty prompt,
the timesteps and the noise — is drawn from a generator seeded by (seed, n), for the *global* batch.
A process of a torchrun launch takes its slice of that batch.  So a resumed run continues exactly
(10 + resume + 10 steps = 20 steps), and N processes reproduce one process with the same global batch.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .. import __version__, diffusion, schedules
from ..atomic import atomic_write, write_text_atomic
from . import distributed
from .config import RESUME_FREE, RESUME_RECIPE, TrainConfig
from .ema import EMA
from .harness import (
    RUN_CONFIG,
    Batches,
    RunHarness,
    TrainingError,
    adamw,
    learning_rate,
    newest_checkpoint,
    overridden,
    saved_config,
    step_generator,
)

if TYPE_CHECKING:
    from ..models import UNet, UNetConfig

__all__ = ["RUN_CONFIG", "Batches", "Trainer", "TrainingError", "export_run", "initial_network", "learning_rate",
           "model_config", "resume_config", "train"]


class Trainer(RunHarness):
    """Builds everything a run needs from a TrainConfig; `run()` (the harness's loop) trains to cfg.max_steps."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, device: str | None = None, quiet: bool = False):
        from ..conditioning.text import CaptionBank, TextEncoder
        from ..data import get_dataset
        from ..models import UNet

        self.dist = distributed.init(device)
        self.quiet = quiet or not self.dist.is_main
        self.out = Path(cfg.out)
        self.cfg = cfg
        if cfg.batch_size % self.dist.world_size:
            raise TrainingError(f"batch size {cfg.batch_size} must divide evenly over {self.dist.world_size} "
                                "processes")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

        self.schedule = schedules.get(cfg.schedule, cfg.num_train_steps)
        # the set-up takes tens of seconds on a first run: say what is happening (stderr, main process only)
        started = time.perf_counter()
        self._log(f"loading the data: {cfg.data} …")
        with distributed.local_main_first(self.dist):  # one process per machine decodes a folder into its cache
            self.dataset = get_dataset(cfg.data, split="train", image_size=cfg.image_size)
        self.batches = Batches(self.dataset, cfg.seed, self.dataset.sampling_weights(cfg.balance),
                               self.dataset.caption_weights(cfg.caption_draw))
        size = self.dataset.image_size
        self._log(f"  {len(self.dataset):,} images of {size}×{size}, {len(self.dataset.captions):,} captions "
                  f"({time.perf_counter() - started:.1f} s)")
        started = time.perf_counter()
        self._log("encoding the captions with the text encoder (cached on disk: fast from the second run) …")
        self.encoder = TextEncoder.load()
        self.bank = CaptionBank(self.dataset.captions, self.encoder)  # shared on-disk cache: encode once per machine
        self._log(f"  {len(self.bank.captions):,} captions ready ({time.perf_counter() - started:.1f} s)")

        start = None
        if cfg.init is not None and cfg.unet is None:  # a new run from --init (a resumed one has its own weights)
            self._log(f"building the network from {cfg.init}{' (widened)' if cfg.init_widen else ''} on "
                      f"{self.dist.device} …")
            start = initial_network(cfg, self.dataset)
        else:
            self._log(f"building the network ({cfg.model_size}) on {self.dist.device} …")
        unet_config = start.config if start is not None else model_config(cfg, self.dataset)
        self.cfg = cfg = cfg.replace(unet=unet_config.to_dict())  # a resumed run rebuilds exactly this network
        torch.manual_seed(cfg.seed)  # initialisation: identical on every rank
        self.model = UNet(unet_config)
        if start is not None:
            self.model.load_state_dict(start.state_dict())
        self.model = self.model.to(self.dist.device)
        if cfg.channels_last:
            # Module.to takes memory_format at run time; torch's stubs list only device/dtype/tensor overloads
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer = adamw(self.model.parameters(), cfg)
        self.step = 0
        if resume:
            self.resume()
            for change in self.cfg.extra.get("history", []):
                if change.get("step") is None:
                    change["step"] = self.step
        self.net: torch.nn.Module = self.model
        if self.dist.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        if cfg.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]  # a compiled module calls as the module
        self.autocast: AbstractContextManager[Any] = (
            torch.autocast(self.dist.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
        )
        params = sum(p.numel() for p in self.model.parameters())
        self._log(f"  {params / 1e6:.2f} M parameters; training {'from step ' + str(self.step) if resume else ''}"
                  f"{' ' if resume else ''}towards step {cfg.max_steps:,} (the first steps are the slowest) …")

    # --- the harness's hooks: processes of a torchrun launch -------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def agree(self, flag: bool) -> bool:
        return distributed.any_true(flag, self.dist)

    def barrier(self) -> None:
        distributed.barrier(self.dist)

    # --- one step --------------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, dict[str, float]]:
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        g = step_generator(cfg.seed, self.step)
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

        with self.autocast:
            out = self.net(x_t, t.to(dev, torch.float32), cond)
        per_sample = F.mse_loss(out.float(), target, reduction="none").mean(dim=(1, 2, 3))
        loss = (weight * per_sample).mean()
        grad_norm = self.optimize(loss)
        return float(distributed.all_reduce_mean(loss.detach(), self.dist)), {"grad_norm": grad_norm}

    # --- sample grids: a checkpoint of step n implies its grid, and a resume re-makes the grid ------------
    def history(self) -> list[dict]:
        return self.cfg.extra.get("history", [])

    def after_step(self) -> None:
        if self.cfg.sample_every and self.step % self.cfg.sample_every == 0 and self.is_main:
            self.sample_grid()

    def after_loop(self) -> None:
        if self.cfg.sample_every and self.is_main and not self._grid_path().exists():
            self.sample_grid()  # the last step's, if the loop did not make it

    # --- outputs -----------------------------------------------------------------------------------------
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
        size = self.dataset.image_size
        x = generate(
            self.ema_model(), self.schedule, self.cfg.prediction_type, cond, uncond,
            shape=(self.dataset.channels, size, size), seeds=list(range(len(prompts) * seeds_per_prompt)),
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


def model_config(cfg: TrainConfig, dataset: Any) -> UNetConfig:
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


def initial_network(cfg: TrainConfig, dataset: Any) -> UNet:
    """`--init`: the network a new run starts from — a model directory's UNet, or a run directory's newest
    checkpoint's EMA weights — doubled in width by Net2Net with `--widen` (the same function, seeded by the run's
    seed), checked against the run's data and prediction type."""
    from ..models import UNet, UNetConfig
    from ..models.widen import widen

    path = Path(cfg.init or "")
    if (path / RUN_CONFIG).is_file() and (path / "checkpoints").is_dir():
        saved = saved_config(path, TrainConfig.from_dict, TrainingError, "--init")
        ck = newest_checkpoint(path, TrainingError, what="--init")
        if saved.unet is None:
            raise TrainingError(f"--init {path}: its config.json names no network (unet)")
        net = UNet(UNetConfig.from_dict(saved.unet))
        net.load_state_dict(ck.ema)
    elif path.is_dir():
        net = UNet.from_pretrained(path)  # its errors name the file
    else:
        raise TrainingError(f"--init {path}: not a directory (give a model directory or a run directory)")
    if cfg.init_widen:
        net = widen(net, generator=torch.Generator().manual_seed(cfg.seed))
    c = net.config
    needs = {"in_channels": dataset.channels, "out_channels": dataset.channels, "image_size": dataset.image_size,
             "prediction_type": cfg.prediction_type, "cond_dim": UNetConfig().cond_dim}
    for name, value in needs.items():
        if getattr(c, name) != value:
            raise TrainingError(f"--init {path}: its network has {name} {getattr(c, name)!r}, this run needs "
                                f"{value!r}")
    return net


def resume_config(out: str | Path, overrides: dict[str, Any], what: str = "--resume") -> TrainConfig:
    """The run's saved config with the explicitly given settings that may change on resume (`what`: the
    command, for messages)."""
    saved = saved_config(out, TrainConfig.from_dict, TrainingError, what)
    cfg = overridden(saved, overrides, RESUME_FREE + RESUME_RECIPE, TrainingError, what)
    changes = {k: [getattr(saved, k), v] for k, v in overrides.items() if k in RESUME_RECIPE and v != getattr(saved, k)}
    if changes:  # "step" is filled in by the Trainer once it knows which checkpoint it resumed
        history = [*saved.extra.get("history", []), {"step": None, "changes": changes}]
        cfg = cfg.replace(extra={**saved.extra, "history": history})
    return cfg


def export_run(run: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float16,
               defaults: dict | None = None) -> Path:
    """A run's newest good checkpoint (its EMA weights) → a model directory, while the run may go on.  The run
    is read from `run` itself, never from the path stored in its config.json (a run may be moved or copied)."""
    run = Path(run)
    cfg = resume_config(run, {"out": str(run)}, what="export")
    ck = newest_checkpoint(run, TrainingError)
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
        if trainer is not None and trainer.bar is not None:
            trainer.bar.close()  # so that an error message starts on a line of its own
        distributed.shutdown(info)

