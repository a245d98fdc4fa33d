"""Distillation: a guided teacher (a model directory) → a few-step, w-conditioned student.

`Distiller` builds the teacher, the student, the data and the optimiser, and exports the student; what the
student learns at each step is the distillation method's, one class each in methods.py (consistency, guidance,
trajectory, progressive).  The loop, metrics, Ctrl-C, checkpoints, `--resume` and the EMA are the run harness
that `unnoise train` uses too (training/harness.py), with its step-seeded batches: every random choice of step n
comes from a generator seeded by (seed, n), so `--resume` continues bit-exactly.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import torch

from .. import __version__, schedules
from ..conditioning.guidance import guided
from ..denoisers import DiscreteDenoiser
from ..training import checkpoint
from ..training.ema import EMA
from ..training.harness import Batches, RunHarness, adamw, newest_checkpoint, step_generator
from .config import DistillConfig, DistillError, resume_config
from .grids import _view, ode_segment, progressive_spacing, student_teacher_segments, trajectory_segments
from .methods import CLASSES, ROUND_TEACHER, Method

if TYPE_CHECKING:
    from ..models import UNet

__all__ = ["ROUND_TEACHER", "Distiller", "distill", "export_distill_run", "ode_segment", "progressive_spacing",
           "resolve", "student_teacher_segments", "trajectory_segments"]


def chain_wall_s(training: dict) -> float:
    """A student's distillation wall time with its whole chain (unnoise.json's `training`)."""
    return float(training.get("wall_s_total") or training.get("wall_s") or 0.0)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def check_student_teacher(cfg: DistillConfig, info: Any) -> None:
    """A distilled teacher teaches only by trajectory, on its own grid, within the w range it learnt."""
    name, d = cfg.teacher, info.defaults
    learnt = info.training.get("config", {})
    if cfg.method != "trajectory":
        raise DistillError(f"{name} is a distilled student: it can teach only --method trajectory (a student of "
                           f"fewer calls), not {cfg.method}; or distil from its teacher")
    if d.get("sampler") != "ddim":
        raise DistillError(f"{name} paints with {d.get('sampler')!r}; only a ddim student (trajectory, progressive) "
                           "can teach, on its own grid")
    if cfg.steps >= int(d["steps"]):
        raise DistillError(f"--steps {cfg.steps}: {name} already paints in {d['steps']} calls; a student of it "
                           "needs fewer")
    if cfg.spacing != d.get("spacing"):
        raise DistillError(f"--spacing {cfg.spacing}: {name} was distilled on {d.get('spacing')}; its student "
                           "keeps that spacing (leave --spacing out)")
    if cfg.last_target != "ode":
        raise DistillError(f"--last-target {cfg.last_target}: with a distilled teacher its own last call decides "
                           "the end point (leave --last-target out)")
    lo, hi = learnt.get("guidance_min", cfg.guidance_min), learnt.get("guidance_max", cfg.guidance_max)
    if cfg.guidance_min < lo or cfg.guidance_max > hi:
        raise DistillError(f"--guidance-min/--guidance-max [{cfg.guidance_min:g}, {cfg.guidance_max:g}] leave the "
                           f"range {name} learnt, [{lo:g}, {hi:g}]")


class Distiller(RunHarness):
    """Builds teacher, student, data and optimiser from a DistillConfig; `run()` (the harness's loop) distils to
    cfg.max_steps with the method of cfg.method (`self.method`, a methods.Method)."""

    error = DistillError

    def __init__(self, cfg: DistillConfig, *, resume: bool = False, quiet: bool = False):
        from ..modeldir import load_model_dir
        from ..models import UNet

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.quiet = quiet
        self.out = Path(cfg.out)
        teacher, self.info, self.teacher_path = load_model_dir(cfg.teacher)
        self.teacher = cast("UNet", teacher)  # for the type checker: a UNet once the diffusers check below passes
        if self.info.scheduler:
            raise DistillError(f"{self.teacher_path} is a diffusers pipeline folder: unnoise distill teaches from "
                               "text-conditioned unnoise models only")
        self.teacher.requires_grad_(False)
        # a distilled student may teach a student of fewer calls (progressive, K' → K): its own sampler's calls
        self.student_teacher = bool(self.teacher.config.guidance_embedding)
        self.teacher_digest = file_digest(self.teacher_path / "model.safetensors")
        # --init is checked before the data loads
        init_net, self.init = self._load_init(cfg.init, cfg) if cfg.init else (None, {})
        self.schedule = schedules.get(self.info.schedule, self.info.num_train_steps)
        self.cfg = cfg = resolve(cfg, self.info)
        if self.student_teacher:
            check_student_teacher(cfg, self.info)
        # the spacing its exported defaults paint with (progressive: the nested grid it trained on)
        self.paint_spacing = CLASSES[cfg.method].paint_spacing(self.schedule, cfg)
        self._load_data(cfg)
        self.prediction_type = self.info.prediction_type
        self.shape = (self.info.channels, self.info.image_size, self.info.image_size)  # (C, H, W) of its images
        self.model = self.student = self._build_student(cfg, init_net)  # `model`: the harness's name for it
        self.target = UNet(self.student.config).requires_grad_(False).eval()  # f_θ⁻: the EMA weights
        self.ema = EMA(self.student, cfg.ema_decay)
        self.optimizer = adamw(self.student.parameters(), cfg)
        self.teacher_d = DiscreteDenoiser(self.teacher, self.schedule, self.prediction_type)
        self.student_d = DiscreteDenoiser(self.student, self.schedule, self.prediction_type)
        self.target_d = DiscreteDenoiser(self.target, self.schedule, self.prediction_type)
        self.sigmas = self.schedule.sigmas(cfg.ode_steps, cfg.spacing)  # (N + 1,) float64, last 0
        # (K,) the σs its K-step sampler queries
        self.student_sigmas = self.schedule.sigmas(cfg.steps, cfg.spacing)[:-1]
        self.method: Method = CLASSES[cfg.method](self)  # what the student learns at each step
        self.description = f"distilling ({cfg.method})"
        self.step, self.elapsed = 0, 0.0
        if resume:
            self.resume()

    # --- set-up ---------------------------------------------------------------------------------
    def _load_data(self, cfg: DistillConfig) -> None:
        """The teacher's data (or cfg.data), its step-seeded batches and its captions' text conditions."""
        from ..conditioning.text import CaptionBank, TextEncoder
        from ..data import get_dataset

        data = cfg.data or self.info.dataset
        try:
            self.dataset = get_dataset(data, split="train", image_size=self.info.image_size)
        except ValueError as e:
            raise DistillError(f"cannot load the teacher's data {data!r} ({e}); pass --data digits|emoji|FOLDER") from e
        if self.dataset.channels != self.info.channels:
            raise DistillError(f"{data} has {self.dataset.channels} channels, the teacher paints {self.info.channels}")
        self.batches = Batches(self.dataset, cfg.seed)
        self.encoder = TextEncoder.load()
        self.bank = CaptionBank(self.dataset.captions, self.encoder)

    def _build_student(self, cfg: DistillConfig, init_net: torch.nn.Module | None) -> UNet:
        """The teacher's network with a w embedding, started from the teacher's weights (or --init's), widened
        for --student-width 2."""
        from ..models import UNet
        from ..models.widen import widen

        student_config = self.teacher.config.replace(guidance_embedding=True)
        with torch.random.fork_rng():  # the w embedding's first layer is random: make it the seed's
            torch.manual_seed(cfg.seed)
            student = UNet(student_config)
        _init_from(student, self.teacher.state_dict())
        if init_net is not None and init_net.config == student_config:
            student.load_state_dict({k: v.float() for k, v in init_net.state_dict().items()})
        if cfg.student_width == 2:  # twice as wide, the same function to start with (Net2Net)
            student = widen(student, generator=torch.Generator().manual_seed(cfg.seed))
            if init_net is not None and init_net.config == student.config:  # a wide student going on
                student.load_state_dict({k: v.float() for k, v in init_net.state_dict().items()})
        return student

    def _load_init(self, init: str, cfg: DistillConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
        """--init: the student starts from an earlier student of the same teacher (e.g. to go on with other
        settings: a longer EMA, a decaying lr, σ on the sampler's grid).  Returns it and its record for unnoise.json."""
        from ..modeldir import ModelDirError, load_model_dir
        from ..models.widen import widened_config

        try:
            module, info, path = load_model_dir(init)
        except ModelDirError as e:
            raise DistillError(f"--init: {e}") from e
        net = cast("UNet", module)
        if not net.config.guidance_embedding:
            raise DistillError(f"--init: {path} is not a distilled student (it has no guidance input)")
        if info.training.get("teacher_digest") != self.teacher_digest:
            raise DistillError(f"--init: {path} was distilled from another teacher than {self.teacher_path}")
        narrow = self.teacher.config.replace(guidance_embedding=True)
        allowed = [narrow] if cfg.student_width == 1 else [narrow, widened_config(narrow)]
        if net.config not in allowed:
            wide = net.config == widened_config(narrow)
            raise DistillError(f"--init: {path}'s network differs from the student's"
                               + (" (it is twice as wide: pass --student-width 2)" if wide else ""))
        return net, {"path": str(path), "digest": file_digest(path / "model.safetensors"),
                     "method": info.training.get("method"), "steps": info.training.get("steps"),
                     "wall_s": info.training.get("wall_s"), "wall_s_total": chain_wall_s(info.training)}

    def restore(self, ck: checkpoint.Checkpoint) -> None:
        if ck.state.get("teacher_digest") != self.teacher_digest:
            raise DistillError(f"--resume: the teacher's weights changed since this run began ({self.teacher_path})")
        super().restore(ck)
        self.elapsed = float(ck.state.get("elapsed_s", 0.0))
        self.method.resumed(ck.path, ck.extra)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"teacher_digest": self.teacher_digest, "elapsed_s": self.elapsed}

    def checkpoint_extra(self) -> dict[str, torch.Tensor] | None:
        return self.method.checkpoint_extra()

    # --- the models as functions of (x, σ) ------------------------------------------------------------
    def guided_teacher(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor],
                       uncond: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        """The teacher guided at a scale w (B,) per sample (conditioning.guidance.guided: both CFG passes as one
        batch of 2B, or w as its input for a distilled teacher), x̂0 clamped to [−1, 1] as generation.generate
        clamps it (so the student learns what painting does)."""
        return guided(self.teacher_d, cond, uncond, w, takes_guidance=self.student_teacher, clip=1.0)(x, sigma)

    @staticmethod
    def consistency_fn(denoiser, x, sigma, cond, w) -> torch.Tensor:
        """f(x, σ, w) = D(x, σ, cond, w) for σ > 0 and exactly x at the boundary σ = 0."""
        out = denoiser(x, sigma, {**cond, "guidance": w})
        return torch.where(_view(sigma, x) == 0, x, out)

    # --- one step --------------------------------------------------------------------------------------
    def draw(self, step: int | None = None, size: int | None = None):
        """Step n's batch, all from the generator of (seed, n): x0, captions, w, grid index, noise."""
        cfg = self.cfg
        step = self.step if step is None else step
        size = cfg.batch_size if size is None else size
        g = step_generator(cfg.seed, step)
        x0, captions = self.batches.draw(step, size, cfg.cond_dropout, self.bank.null_index, g)
        w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(size, generator=g)
        n = torch.randint(0, self.grid_steps(), (size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        n = self.method.position(n, g, size)  # guidance: a σ instead of a grid index, drawn last
        cond = self.bank.condition(captions)
        uncond = self.bank.condition(torch.full_like(captions, self.bank.null_index))
        return x0, cond, uncond, w, n, noise

    @property
    def rounds(self) -> int:
        return self.method.rounds

    def grid_steps(self) -> int:
        """Steps of the student's grid this round: N (consistency), N/2^(r+1) (progressive round r)."""
        return self.method.grid_steps()

    def loss(self) -> torch.Tensor:
        pred, target = self.method.pair()
        diff = (pred - target).flatten(1)  # (B, C·H·W)
        if self.cfg.loss == "l2":
            return diff.pow(2).mean()
        c = 0.00054 * math.sqrt(diff.shape[1])  # iCT's pseudo-Huber constant (Song & Dhariwal 2023, §3.3)
        return (torch.sqrt(diff.pow(2).sum(1) + c * c) - c).mean()

    def weight(self, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The per-sample scale on the x̂0 error: truncated-SNR max(SNR, 1) = max(1/σ², 1) in the VP sense is
        max(1/σ, 1) on an unsquared error (Salimans & Ho 2022, §4), its square root (between the two), or 1
        for every sample ("uniform")."""
        if self.cfg.weighting == "uniform":
            return torch.ones_like(_view(sigma, like))
        scale = torch.clamp(1.0 / sigma, min=1.0)
        return _view(scale.sqrt() if self.cfg.weighting == "sqrt_truncated_snr" else scale, like)

    def train_step(self) -> tuple[float, dict[str, float]]:
        self.method.begin_step()  # progressive: a new round
        loss = self.loss()
        self.optimize(loss)
        return float(loss.detach()), {}

    # --- outputs -----------------------------------------------------------------------------------------
    def ema_student(self) -> torch.nn.Module:
        return self.ema_model()

    def export(self, directory: Path, dtype: torch.dtype = torch.float16) -> Path:
        """The EMA student as a model directory whose defaults paint with its own sampler and steps."""
        from ..conditioning.vocabulary import FILE as VOCABULARY
        from ..modeldir import BUNDLED, save_model_dir

        cfg = self.cfg
        sampler = self.method.sampler
        # the chain before this run: the student it started from (whose chain holds a student teacher's), else a
        # student teacher's own
        before = (self.init["wall_s_total"] if self.init
                  else chain_wall_s(self.info.training) if self.student_teacher else 0.0)
        meta = SimpleNamespace(channels=self.info.channels, image_size=self.info.image_size, name=self.info.dataset,
                               example_prompts=self.info.example_prompts)
        return save_model_dir(
            directory, self.ema_student(), schedule=self.schedule, prediction_type=self.prediction_type, dataset=meta,
            text_encoder=self.info.text_encoder, dtype=dtype,
            defaults={"steps": cfg.steps, "guidance": cfg.guidance, "sampler": sampler, "spacing": self.paint_spacing},
            # the student reads prompts as its teacher does: the same vocabulary for prompt snapping
            extra_files={VOCABULARY: vocabulary} if (vocabulary := self.teacher_path / VOCABULARY).exists() else None,
            # a bundled teacher by name (portable: the path differs on every install), else its directory
            training={"distilled_from": cfg.teacher if cfg.teacher in BUNDLED else str(self.teacher_path),
                      "teacher_digest": self.teacher_digest,
                      "method": cfg.method, "steps": self.step, "wall_s": round(self.elapsed, 1),
                      "wall_s_total": round(self.elapsed + before, 1),
                      **({"init": self.init} if self.init else {}),
                      "config": cfg.to_dict(), "unnoise_version": __version__},
        )


def resolve(cfg: DistillConfig, info=None) -> DistillConfig:
    """Fill in what defaults to the teacher's: the σ spacing and the student's default guidance scale
    (the teacher's, clipped into the distilled range)."""
    if info is None:
        from ..modeldir import load_model_dir

        _, info, _ = load_model_dir(cfg.teacher)
    spacing = cfg.spacing or info.defaults.get("spacing", schedules.DEFAULT_SPACING)
    guidance = cfg.guidance if cfg.guidance is not None else float(info.defaults.get("guidance", 3.0))
    return cfg.replace(spacing=spacing, guidance=min(max(guidance, cfg.guidance_min), cfg.guidance_max))


def _init_from(student: torch.nn.Module, teacher_state: dict[str, torch.Tensor]) -> None:
    """The teacher's weights; only the (zero-initialised) guidance embedding is the student's own."""
    result = student.load_state_dict(teacher_state, strict=False)
    stray = [k for k in result.missing_keys if not k.startswith("guidance_mlp.")] + list(result.unexpected_keys)
    if stray:
        raise DistillError(f"student and teacher networks differ: {stray[:3]}")


def export_distill_run(run: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float16) -> Path:
    """A distillation run's latest checkpoint (the EMA student) → a model directory, e.g. to bundle it."""
    cfg = resume_config(run, {"out": str(run)}, what="export")
    ck = newest_checkpoint(Path(run), DistillError)
    distiller = Distiller(cfg, quiet=True)
    distiller.restore(ck)
    return distiller.export(Path(out), dtype=dtype)


def distill(cfg: DistillConfig, *, resume: bool = False, quiet: bool = False) -> Path:
    """Run (or continue) a distillation; returns the exported student's model directory."""
    return Distiller(cfg, resume=resume, quiet=quiet).run()
