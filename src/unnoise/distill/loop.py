"""The distillation loop: a guided teacher (a model directory) → a few-step, w-conditioned student.

Shared with `unnoise train` (imported, not copied): the step-seeded batches (`Batches`, every random
choice of step n drawn from a generator seeded by (seed, n), so `--resume` continues bit-exactly), the
learning-rate schedule, Ctrl-C handling, the EMA and the atomic safetensors checkpoints.

Consistency distillation (Song et al. 2023, Algorithm 2; Luo et al. 2023, LCM) on the teacher's ODE grid
σ_0 > … > σ_N = 0 (schedule.sigmas(N, spacing)): draw n, x_n = x0 + σ_n·z; one DDIM step of the
*guided* teacher (scale w, per sample) takes x_n to x_{n+1}; the student f_θ(x_n, σ_n, w) learns the
EMA target f_θ⁻(x_{n+1}, σ_{n+1}, w), where f(x, 0) = x is the boundary.  The student is the teacher's
network with a w embedding (models.UNetConfig.guidance_embedding) and f_θ its x̂0 = D_θ(x, σ).

Guidance distillation (Meng et al. 2023, stage 1) keeps the step count and removes the doubled batch: at
σ drawn log-uniformly over the schedule's range, the student D_θ(x, σ, w) learns the guided teacher's
clamped x̂0; it is then sampled with an ordinary solver (DPM-Solver++ 2M), one single-batch call per step.
With sigma_sampling="grid" σ is instead one of the K levels the student's own K-step sampler queries.

Trajectory distillation (one phase, like TRACT, Berthelot et al. 2023, with the DDIM-inverse target of
Salimans & Ho 2022) fixes the student's K-step grid σ_0 > … > σ_K = 0 (schedule.sigmas(K, spacing)): at
x = x0 + σ_i·z the guided teacher solves the interval σ_i → σ_{i+1} with ⌈N/K⌉ DPM-Solver++(2M) steps
(`ode_segment`), and the student learns the x̂0 whose one DDIM step lands there.  Its K-step DDIM
sampling follows the teacher's fine solve, not the teacher's own K-step one.  Trajectory and guidance targets
depend on the teacher alone, so with cfg.reuse = R each serves R consecutive steps (`Distiller.teacher_batch`).

Progressive distillation (Salimans & Ho 2022, Algorithm 2) halves the step count in rounds: the
student's one DDIM step from σ_i to σ_{i+2} must land where two steps of the round's teacher do
(round 0: the guided teacher, later: the previous round's student).  It is here for the measurement
in docs/distill.md; consistency is the default.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from tqdm import tqdm

from .. import __version__, schedules
from ..conditioning.guidance import batch_conditions
from ..denoisers import DiscreteDenoiser
from ..sampling.core import toward
from ..training import checkpoint
from ..training.ema import EMA
from ..training.loop import Batches, _step_generator, _StopFlag, learning_rate
from .config import DistillConfig, DistillError

RUN_CONFIG = "config.json"
ROUND_TEACHER = "round-teacher.safetensors"  # progressive: the frozen teacher of the current round


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, 1, 1) in like's dtype."""
    return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def ode_segment(denoiser, x: torch.Tensor, sigmas, order: int = 2) -> torch.Tensor:
    """Solve the probability-flow ODE from σ = sigmas[0] to sigmas[-1] (which may be > 0) by
    DPM-Solver++(2M): the steps of sampling.dpm_solver.dpmpp_2m (first order at the start, the midpoint
    correction after, x̂0 itself on a step to 0), on a piece of a grid.  sigmas is one grid for every sample
    (a list) or a grid per sample, (B, m + 1) — each step is then one network call for all of them.
    order=1: plain DDIM steps (a distilled student's own sampler).  denoiser(x, σ (B,)) → x̂0."""
    grid = torch.as_tensor(sigmas, dtype=torch.float64)
    grid = grid.expand(x.shape[0], -1) if grid.ndim == 1 else grid
    lam = -grid.clamp(min=1e-300).log()  # λ = −log σ; the +∞ at σ = 0 is never used
    history: tuple[torch.Tensor, torch.Tensor] | None = None  # (λ, x̂0) of the previous step
    for j in range(grid.shape[1] - 1):
        m0 = denoiser(x, grid[:, j].to(x.dtype))
        ends = grid[:, j + 1] == 0  # these samples land on x̂0 itself
        if bool(ends.all()):
            return m0
        h = lam[:, j + 1] - lam[:, j]
        x_next = toward(m0, x, _view(grid[:, j + 1] / grid[:, j], x))  # e^{−h} = σ_{i+1}/σ_i: DDIM
        if history is not None and order == 2:
            r0 = (lam[:, j] - history[0]) / h
            x_next = x_next + _view(0.5 * -torch.expm1(-h) / r0, x) * (m0 - history[1])
        x_next = torch.where(ends.view(-1, *([1] * (x.ndim - 1))), m0, x_next)
        history, x = (lam[:, j], m0), x_next
    return x


def trajectory_segments(schedule, steps: int, spacing: str, ode_steps: int, last: str = "ode") -> list[list[float]]:
    """The teacher's fine grid inside each of the student's K intervals σ_i → σ_{i+1}: ⌈N/K⌉ steps
    uniform in log σ; the interval that ends at 0 goes log-uniformly to σ_min, then one step to 0 (for
    the log_snr spacing these are exactly the points of schedule.sigmas(⌈N/K⌉·(K−1) + 1); with
    log_snr_trailing the student's last call is at σ_max·(σ_min/σ_max)^((K−1)/K), and its interval, too,
    gets ⌈N/K⌉ teacher steps).  last="x0": the interval that ends at 0 is one step, [σ_{K−1}, 0]: the
    teacher's x̂0 at σ_{K−1}."""
    coarse = schedule.sigmas(steps, spacing).tolist()
    m = max(1, math.ceil(ode_steps / steps))
    out = []
    for a, b in zip(coarse[:-1], coarse[1:]):
        if b > 0:
            seg = torch.linspace(math.log(a), math.log(b), m + 1, dtype=torch.float64).exp().tolist()
        elif m > 1 and a > schedule.sigma_min * (1 + 1e-6) and last == "ode":
            seg = torch.linspace(math.log(a), math.log(schedule.sigma_min), m, dtype=torch.float64).exp().tolist() + [0.0]
        else:
            seg = [a, 0.0]
        seg[0], seg[-1] = a, b  # the student's σs bit for bit
        out.append(seg)
    return out


def student_teacher_segments(schedule, steps: int, spacing: str, teacher_steps: int) -> list[list[float]]:
    """A distilled teacher's own grid (its sampler's teacher_steps σs) cut at the student's K σs: the
    teacher's calls inside each student interval.  Every σ of the student's grid must be one of the
    teacher's (e.g. log_snr_trailing: the 1- and 2-step grids are subsets of the 4-step one)."""
    fine = schedule.sigmas(teacher_steps, spacing).tolist()
    cuts = []
    for s in schedule.sigmas(steps, spacing).tolist():
        near = [j for j, f in enumerate(fine) if math.isclose(f, s, rel_tol=1e-6, abs_tol=0.0)]
        if not near:
            raise DistillError(f"the student's {steps}-step {spacing} grid has σ = {s:.4g}, not a point of the teacher's "
                               f"{teacher_steps}-step grid {[round(f, 4) for f in fine]}: pick a spacing whose grids nest")
        cuts.append(near[0])
    return [fine[a:b + 1] for a, b in zip(cuts[:-1], cuts[1:])]


def progressive_spacing(schedule, spacing: str, ode_steps: int, steps: int) -> str:
    """The spacing a progressive student paints with: its K-step grid must be the one its last round trained
    on, every (N/K)-th point of the N-step grid.  The spacing itself where it nests (log_snr_trailing,
    trailing, anything at K = 1); for log_snr and log_snr@S the nested grid is still uniform in log σ from
    σ_max, but its last call is σ_{N−N/K}, not S: stored as "log_snr@σ_{N−N/K}".  Other spacings: DistillError."""
    nested = schedule.sigmas(ode_steps, spacing)[:: ode_steps // steps]  # (K + 1,) σ_0 > σ_s > … > 0
    candidates = [spacing]
    if spacing == "log_snr" or schedules.last_sigma(spacing) is not None:
        candidates.append(f"{schedules.LAST_SIGMA_SPACING}{float(nested[-2])!r}")
    for candidate in candidates:
        if torch.allclose(schedule.sigmas(steps, candidate), nested, rtol=1e-9, atol=0.0):
            return candidate
    raise DistillError(f"--spacing {spacing}: progressive distillation needs a {steps}-step grid that is every "
                       f"{ode_steps // steps}-th point of the {ode_steps}-step one, and {spacing}'s is not; use log_snr, "
                       "log_snr@S, log_snr_trailing or trailing")


def chain_wall_s(training: dict) -> float:
    """A student's distillation wall time with its whole chain (unnoise.json's `training`)."""
    return float(training.get("wall_s_total") or training.get("wall_s") or 0.0)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Distiller:
    """Builds teacher, student, data and optimiser from a DistillConfig; `run()` distils to cfg.max_steps."""

    def __init__(self, cfg: DistillConfig, *, resume: bool = False, quiet: bool = False):
        from ..conditioning.text import CaptionBank, TextEncoder
        from ..data import get_dataset
        from ..modeldir import load_model_dir
        from ..models import UNet
        from ..models.widen import widen

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.quiet = quiet
        self.out = Path(cfg.out)
        self.teacher, self.info, self.teacher_path = load_model_dir(cfg.teacher)
        if self.info.scheduler:
            raise DistillError(f"{self.teacher_path} is a diffusers pipeline folder: unnoise distill teaches from "
                               "text-conditioned unnoise models only")
        self.teacher.requires_grad_(False)
        # a distilled student may teach a student of fewer calls (progressive, K' → K): its own sampler's calls
        self.student_teacher = bool(self.teacher.config.guidance_embedding)
        self.teacher_digest = file_digest(self.teacher_path / "model.safetensors")
        init_net, self.init = self._load_init(cfg.init, cfg) if cfg.init else (None, {})  # checked before the data loads
        self.schedule = schedules.get(self.info.schedule, self.info.num_train_steps)
        self.cfg = cfg = resolve(cfg, self.info)
        spacing = cfg.spacing
        if self.student_teacher:
            self._check_student_teacher(cfg)
        # the spacing its exported defaults paint with (progressive: the nested grid it trained on)
        self.paint_spacing = (progressive_spacing(self.schedule, spacing, cfg.ode_steps, cfg.steps)
                              if cfg.method == "progressive" else spacing)

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

        self.prediction_type = self.info.prediction_type
        student_config = self.teacher.config.replace(guidance_embedding=True)
        with torch.random.fork_rng():  # the w embedding's first layer is random: make it the seed's
            torch.manual_seed(cfg.seed)
            self.student = UNet(student_config)
        _init_from(self.student, self.teacher.state_dict())
        if init_net is not None and init_net.config == student_config:
            self.student.load_state_dict({k: v.float() for k, v in init_net.state_dict().items()})
        if cfg.student_width == 2:  # twice as wide, the same function to start with (Net2Net)
            self.student = widen(self.student, generator=torch.Generator().manual_seed(cfg.seed))
            if init_net is not None and init_net.config == self.student.config:  # a wide student going on
                self.student.load_state_dict({k: v.float() for k, v in init_net.state_dict().items()})
        self.target = UNet(self.student.config).requires_grad_(False).eval()  # f_θ⁻: the EMA weights
        self.ema = EMA(self.student, cfg.ema_decay)
        decay, no_decay = [], []
        for p in self.student.parameters():
            (no_decay if p.ndim < 2 else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.adam_betas,
        )
        self.teacher_d = DiscreteDenoiser(self.teacher, self.schedule, self.prediction_type)
        self.student_d = DiscreteDenoiser(self.student, self.schedule, self.prediction_type)
        self.target_d = DiscreteDenoiser(self.target, self.schedule, self.prediction_type)
        self.sigmas = self.schedule.sigmas(cfg.ode_steps, spacing)  # (N + 1,) float64, last 0
        self.student_sigmas = self.schedule.sigmas(cfg.steps, spacing)[:-1]  # (K,) the σs its K-step sampler queries
        if self.student_teacher:  # the teacher's own DDIM steps, order 1
            self.segments = student_teacher_segments(self.schedule, cfg.steps, spacing, self.info.defaults["steps"])
        else:
            self.segments = trajectory_segments(self.schedule, cfg.steps, spacing, cfg.ode_steps, cfg.last_target)
        self.rounds = int(round(math.log2(cfg.ode_steps // cfg.steps))) if cfg.method == "progressive" else 1
        self.round_teacher: torch.nn.Module | None = None  # progressive, rounds ≥ 1
        self._targets: dict[int, tuple] = {}  # trajectory, guidance: step → its fresh teacher targets (teacher_batch)
        self.step = 0
        self.elapsed = 0.0  # wall seconds over all invocations
        if resume:
            self._load_latest()

    # --- set-up ---------------------------------------------------------------------------------
    def _check_student_teacher(self, cfg: DistillConfig) -> None:
        """A distilled teacher teaches only by trajectory, on its own grid, within the w range it learnt."""
        name, d = cfg.teacher, self.info.defaults
        learnt = self.info.training.get("config", {})
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

    def _load_init(self, init: str, cfg: DistillConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
        """--init: the student starts from an earlier student of the same teacher (e.g. to go on with other
        settings: a longer EMA, a decaying lr, σ on the sampler's grid).  Returns it and its record for unnoise.json."""
        from ..modeldir import ModelDirError, load_model_dir
        from ..models.widen import widened_config

        try:
            net, info, path = load_model_dir(init)
        except ModelDirError as e:
            raise DistillError(f"--init: {e}") from e
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
        return net, {"path": str(path), "digest": file_digest(path / "model.safetensors"), "method": info.training.get("method"),
                "steps": info.training.get("steps"), "wall_s": info.training.get("wall_s"),
                "wall_s_total": chain_wall_s(info.training)}

    def _load_latest(self) -> None:
        path = checkpoint.latest_path(self.out)
        if path is None:
            raise DistillError(f"--resume: no checkpoint in {self.out / 'checkpoints'}")
        ck = checkpoint.load(path)
        if ck.state.get("teacher_digest") != self.teacher_digest:
            raise DistillError(f"--resume: the teacher's weights changed since this run began ({self.teacher_path})")
        self.student.load_state_dict(ck.model)
        self.ema.load_state_dict(ck.ema, ck.state["ema_updates"])
        self.optimizer.load_state_dict(ck.optimizer)
        self.step, self.elapsed = ck.step, float(ck.state.get("elapsed_s", 0.0))
        if self.cfg.student_states and self.cfg.reuse > 1:
            if ck.extra is None:
                raise DistillError(f"--resume: {path} has no saved window of targets, which --student-states needs")
            self._restore_window(ck.extra)
        if self.cfg.method == "progressive" and self._round(self.step) > 0:
            self._load_round_teacher()
        self._log(f"resumed from {path} at step {self.step}")

    def _log(self, msg: str) -> None:
        if not self.quiet:
            tqdm.write(msg, file=sys.stderr)

    def save_checkpoint(self) -> None:
        state = {"ema_updates": self.ema.num_updates, "unnoise_version": __version__, "config": self.cfg.to_dict(),
                 "teacher_digest": self.teacher_digest, "elapsed_s": self.elapsed}
        checkpoint.save(self.out, self.step, self.student.state_dict(), self.ema.state_dict(),
                        self.optimizer.state_dict(), state, keep=self.cfg.keep_checkpoints, extra=self._window())

    _FIELDS = ("x", "sigma", "cond", "w", "target", "scale")  # a teacher_batch entry

    def _window(self) -> dict[str, torch.Tensor] | None:
        """With --student-states the targets depend on the student's weights when they were made, so a resume
        cannot recompute the reuse window: it is saved with the checkpoint (step.field[.key] → tensor)."""
        if not self.cfg.student_states or self.cfg.reuse == 1:  # without reuse no target outlives its step
            return None
        out = {}
        for k, entry in self._targets.items():
            for name, value in zip(self._FIELDS, entry):
                items = value.items() if name == "cond" else [(None, value)]
                out.update({f"{k}.{name}" + (f".{key}" if key else ""): v.contiguous() for key, v in items})
        return out

    def _restore_window(self, tensors: dict[str, torch.Tensor]) -> None:
        entries: dict[int, dict[str, Any]] = {}
        for name, v in tensors.items():
            k, field, *key = name.split(".", 2)
            entry = entries.setdefault(int(k), {"cond": {}})
            if key:
                entry["cond"][key[0]] = v
            else:
                entry[field] = v
        self._targets = {k: tuple(e[f] for f in self._FIELDS) for k, e in entries.items()}

    # --- the models as functions of (x, σ) ------------------------------------------------------------
    def guided_teacher(self, x, sigma, cond, uncond, w) -> torch.Tensor:
        """x̂0 = x̂0_u + w·(x̂0_c − x̂0_u) with a scale w (B,) per sample, both passes as one batch of 2B,
        clamped to [−1, 1] as generation.generate does (so the student learns what painting does)."""
        if self.student_teacher:  # w is its input: one pass
            return self.teacher_d(x, sigma, {**cond, "guidance": w}).clamp(-1.0, 1.0)
        b = x.shape[0]
        both = self.teacher_d(torch.cat([x, x]), torch.cat([sigma, sigma]), batch_conditions(cond, uncond, b))
        c, u = both[:b], both[b:]
        return (u + _view(w, x) * (c - u)).clamp(-1.0, 1.0)

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
        g = _step_generator(cfg.seed, step)
        x0, captions = self.batches.draw(step, size, cfg.cond_dropout, self.bank.null_index, g)
        w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(size, generator=g)
        n = torch.randint(0, self.grid_steps(), (size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        if cfg.method == "guidance" and cfg.sigma_sampling == "grid":  # one of the K σs its sampler queries
            n = self.student_sigmas[torch.randint(0, len(self.student_sigmas), (size,), generator=g)]
        elif cfg.method == "guidance":  # a continuous σ instead of a grid index, drawn last: other streams unchanged
            lo, hi = math.log(self.schedule.sigma_min), math.log(self.schedule.sigma_max)
            n = torch.exp(lo + (hi - lo) * torch.rand(size, generator=g, dtype=torch.float64))
        cond = self.bank.condition(captions)
        uncond = self.bank.condition(torch.full_like(captions, self.bank.null_index))
        return x0, cond, uncond, w, n, noise

    def _round(self, step: int) -> int:
        return min(self.rounds - 1, step * self.rounds // self.cfg.max_steps)

    def grid_steps(self) -> int:
        """Steps of the student's grid this round: N (consistency), N/2^(r+1) (progressive round r)."""
        if self.cfg.method in ("consistency", "guidance"):
            return self.cfg.ode_steps
        if self.cfg.method == "trajectory":
            return self.cfg.steps
        return self.cfg.ode_steps >> (self._round(self.step) + 1)

    def loss(self) -> torch.Tensor:
        if self.cfg.method in ("trajectory", "guidance"):  # targets from the teacher alone: reusable
            x, sigma, cond, w, target, scale = self.teacher_batch()
            pred = self.student_d(x, sigma, {**cond, "guidance": w})
            pred, target = scale * pred, scale * target
        else:
            x0, cond, uncond, w, n, noise = self.draw()
            pair = self._consistency_pair if self.cfg.method == "consistency" else self._progressive_pair
            pred, target = pair(x0, cond, uncond, w, n, noise)
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

    def _consistency_pair(self, x0, cond, uncond, w, n, noise):
        sigma, sigma_next = self.sigmas[n].float(), self.sigmas[n + 1].float()  # (B,) σ_n > σ_{n+1} ≥ 0
        x = x0 + _view(sigma, x0) * noise  # (B, C, H, W) x_n on the forward process
        with torch.no_grad():
            # 1. one DDIM step of the guided teacher, σ_n → σ_{n+1} (the Euler step of the PF-ODE)
            x_next = toward(self.guided_teacher(x, sigma, cond, uncond, w), x, _view(sigma_next / sigma, x))
            # 2. the target network's answer there (exactly x_{n+1} where σ_{n+1} = 0)
            self.ema.copy_to(self.target)
            target = self.consistency_fn(self.target_d, x_next, sigma_next, cond, w)
        return self.consistency_fn(self.student_d, x, sigma, cond, w), target

    def teacher_batch(self):
        """(x, σ, cond, w, target, scale) for this step: the fresh teacher targets of steps n − R + 1 … n
        (R = cfg.reuse, batch_size/R samples each).  Kept between steps; after a resume they are recomputed
        from the steps' seeds."""
        r = self.cfg.reuse
        first = max(0, self.step - r + 1)
        self._targets = {k: v for k, v in self._targets.items() if k >= first}
        for k in range(first, self.step + 1):
            if k not in self._targets:
                x0, cond, uncond, w, n, noise = self.draw(k, self.cfg.batch_size // r)
                make = self._trajectory_target if self.cfg.method == "trajectory" else self._guidance_target
                with torch.no_grad():
                    x, sigma, target = make(x0, cond, uncond, w, n, noise)
                scale = self.weight(sigma, x)
                if self.cfg.interval_weights is not None:  # trajectory: n is the interval
                    scale = scale * _view(torch.tensor(self.cfg.interval_weights, dtype=torch.float64)[n], x)
                self._targets[k] = (x, sigma, cond, w, target, scale)
        parts = [self._targets[k] for k in range(first, self.step + 1)]
        x, sigma, w, target, scale = (torch.cat([p[i] for p in parts]) for i in (0, 1, 3, 4, 5))
        return x, sigma, {key: torch.cat([p[2][key] for p in parts]) for key in parts[0][2]}, w, target, scale

    def _guidance_target(self, x0, cond, uncond, w, sigma, noise):
        sigma = sigma.float()  # (B,) log-uniform over [σ_min, σ_max]
        x = x0 + _view(sigma, x0) * noise
        return x, sigma, self.guided_teacher(x, sigma, cond, uncond, w)

    def _progressive_pair(self, x0, cond, uncond, w, n, noise):
        # The round's teacher grid is every 2^(R−1−r)-th point of the N-step grid; the student's is every other one of that.
        stride = self.cfg.ode_steps // (2 * self.grid_steps())
        s0, s1, s2 = (self.sigmas[(2 * n + k) * stride].float() for k in range(3))  # σ_i > σ_{i+½} > σ_{i+1}
        x = x0 + _view(s0, x0) * noise
        with torch.no_grad():
            x1 = toward(self.round_x0(x, s0, cond, uncond, w), x, _view(s1 / s0, x))
            x2 = toward(self.round_x0(x1, s1, cond, uncond, w), x1, _view(s2 / s1, x))
            # the x̂0 whose single DDIM step σ_i → σ_{i+1} lands on x2: x2 = x̃ + r·(x − x̃), r = σ_{i+1}/σ_i
            r = _view(s2 / s0, x)
            target = (x2 - r * x) / (1 - r)
        pred = self.student_d(x, s0, {**cond, "guidance": w})
        scale = self.weight(s0, x)
        return scale * pred, scale * target

    def _trajectory_target(self, x0, cond, uncond, w, n, noise):
        s0 = torch.tensor([seg[0] for seg in self.segments], dtype=torch.float64)[n].float()  # (B,) σ_i
        s1 = torch.tensor([seg[-1] for seg in self.segments], dtype=torch.float64)[n].float()  # σ_{i+1}
        x = x0 + _view(s0, x0) * noise
        if self.cfg.student_states:
            x = self._student_states(x0, noise, x, cond, w, n)
        end = torch.empty_like(x)
        lengths = torch.tensor([len(seg) for seg in self.segments])[n]
        for m in lengths.unique().tolist():  # intervals with as many fine steps are solved together, a grid per sample
            idx = (lengths == m).nonzero().squeeze(1)
            c, u = ({k: v[idx] for k, v in d.items()} for d in (cond, uncond))
            teacher = partial(self.guided_teacher, cond=c, uncond=u, w=w[idx])
            grids = torch.tensor([self.segments[i] for i in n[idx].tolist()], dtype=torch.float64)
            end[idx] = ode_segment(teacher, x[idx], grids, order=1 if self.student_teacher else 2)
        # the x̂0 whose DDIM step σ_i → σ_{i+1} lands on the teacher's end point (r = 0: the end point itself)
        r = _view(s1 / s0, x)
        return x, s0, (end - r * x) / (1 - r)

    def _student_states(self, x0, noise, x, cond, w, n):
        """--student-states p: the first ⌈p·B⌉ samples start interval i where the student's own painting is at σ_i:
        from x0 + σ_0·z (every sample's first state), i of its DDIM steps with its x̂0 clamped as painting clamps it,
        no gradient — the CFG-guided states it meets when it paints, not the data's noised marginals.  The
        teacher's fine solve from there is still the target.  The rest keep x = x0 + σ_i·z."""
        k = math.ceil(self.cfg.student_states * x.shape[0])
        coarse = [seg[0] for seg in self.segments]  # σ_0 > … > σ_{K−1}
        y = x0[:k] + coarse[0] * noise[:k]
        for j in range(int(n[:k].max()) if k else 0):  # step j: σ_j → σ_{j+1} for the samples that go past σ_j
            idx = (n[:k] > j).nonzero().squeeze(1)
            sigma = torch.full((len(idx),), coarse[j], dtype=x.dtype)
            d = self.student_d(y[idx], sigma, {**{key: v[idx] for key, v in cond.items()}, "guidance": w[idx]})
            y[idx] = toward(d.clamp(-1.0, 1.0), y[idx], coarse[j + 1] / coarse[j])
        return torch.cat([y, x[k:]])

    def round_x0(self, x, sigma, cond, uncond, w):
        if self.round_teacher is None:
            return self.guided_teacher(x, sigma, cond, uncond, w)
        return self.consistency_fn(self.round_teacher, x, sigma, cond, w).clamp(-1.0, 1.0)

    def _load_round_teacher(self) -> None:
        from safetensors.torch import load_file

        from ..models import UNet

        net = UNet(self.student.config).requires_grad_(False).eval()
        net.load_state_dict(load_file(str(self.out / ROUND_TEACHER)))
        self.round_teacher = DiscreteDenoiser(net, self.schedule, self.prediction_type)

    def _start_round(self) -> None:
        """Progressive: the EMA student of the last round becomes the frozen teacher of the next."""
        from safetensors.torch import save_file

        tmp = self.out / f".{ROUND_TEACHER}.tmp"
        save_file({k: v.contiguous() for k, v in self.ema.state_dict().items()}, str(tmp))
        tmp.replace(self.out / ROUND_TEACHER)
        self._load_round_teacher()
        self._log(f"round {self._round(self.step)}: {self.grid_steps()} student steps")

    def train_step(self) -> float:
        if self.cfg.method == "progressive" and self.step and self._round(self.step) != self._round(self.step - 1):
            self._start_round()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.cfg, self.step)
        loss = self.loss()
        if not bool(torch.isfinite(loss)):
            raise DistillError(f"loss became {loss.item()} at step {self.step}; stopped without saving. The last good "
                               "checkpoint is untouched: resume with --resume, perhaps with a lower --lr.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.student)
        self.step += 1
        return float(loss.detach())

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json_atomic(self.out / RUN_CONFIG, cfg.to_dict())
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=self.quiet, unit="step", dynamic_ncols=True,
                   desc=f"distilling ({cfg.method})")
        began = last = time.perf_counter()
        deadline = None if cfg.max_minutes is None else last + 60 * cfg.max_minutes
        window = []
        with _StopFlag() as stop:
            while self.step < cfg.max_steps:
                window.append(self.train_step())
                now = time.perf_counter()
                self.elapsed += now - last
                last = now
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    row = {"step": self.step, "loss": sum(window) / len(window), "lr": learning_rate(cfg, self.step - 1),
                           "images_per_s": len(window) * cfg.batch_size / max(1e-9, now - began), "time": time.time()}
                    with open(self.out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    window, began = [], now
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if stop.requested:
                    self.save_checkpoint()
                    bar.close()
                    self._log(f"interrupted: saved step {self.step} to {self.out / 'checkpoints'}; continue with --resume")
                    raise KeyboardInterrupt
                if deadline is not None and now > deadline:
                    self._log(f"--max-minutes {cfg.max_minutes:g} reached at step {self.step}; continue with --resume")
                    break
        bar.close()
        if self.step % cfg.checkpoint_every:
            self.save_checkpoint()
        return self.export(self.out / "model")

    # --- outputs -----------------------------------------------------------------------------------------
    def ema_student(self) -> torch.nn.Module:
        from ..models import UNet

        model = UNet(self.student.config)
        self.ema.copy_to(model)
        return model.eval()

    def export(self, directory: Path, dtype: torch.dtype = torch.float16) -> Path:
        """The EMA student as a model directory whose defaults paint with its own sampler and steps."""
        from ..conditioning.vocabulary import FILE as VOCABULARY
        from ..modeldir import BUNDLED, save_model_dir

        cfg = self.cfg
        sampler = {"consistency": "consistency", "guidance": "dpmpp_2m", "trajectory": "ddim", "progressive": "ddim"}[cfg.method]
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
    from .config import resume_config

    return Distiller(resume_config(run, {"out": str(run)}), resume=True, quiet=True).export(Path(out), dtype=dtype)


def distill(cfg: DistillConfig, *, resume: bool = False, quiet: bool = False) -> Path:
    """Run (or continue) a distillation; returns the exported student's model directory."""
    return Distiller(cfg, resume=resume, quiet=quiet).run()
