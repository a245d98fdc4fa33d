"""The distillation methods, one small class each behind one interface, `Method`: what the student learns at
a step (`pair`: its scaled prediction and target) and where on the noise scale (`grid_steps`, `position`).
loop.Distiller (data, teacher and student, optimiser, EMA, export; the loop and checkpoints are the run harness of
training/harness.py) drives every method the same way; a method reads the run's models and settings through the
Distiller it serves.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from ..denoisers import DiscreteDenoiser
from ..sampling.core import toward
from .config import DistillConfig, DistillError
from .grids import _view, ode_segment, progressive_spacing, student_teacher_segments, trajectory_segments

if TYPE_CHECKING:
    from ..schedules import Schedule
    from .loop import Distiller

ROUND_TEACHER = "round-teacher.safetensors"  # progressive: the frozen teacher of the current round
Conditions = dict[str, torch.Tensor]


class Method:
    """One distillation method.  The defaults serve a method on the teacher's N-step grid."""

    sampler = "ddim"  # the exported student's default sampler
    rounds = 1  # rounds of the run (progressive halves the step count once a round)

    def __init__(self, d: Distiller) -> None:
        self.d = d

    @classmethod
    def paint_spacing(cls, schedule: Schedule, cfg: DistillConfig) -> str:
        """The σ spacing the exported student paints with (checked before the data loads)."""
        return str(cfg.spacing)

    def grid_steps(self) -> int:
        """Steps of the grid whose index n each sample draws, at the Distiller's current step."""
        return self.d.cfg.ode_steps

    def position(self, n: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
        """Where each sample sits on the noise scale: the grid index n, or a σ of the method's own (drawn
        from g after every other stream of the batch, so those stay the same)."""
        return n

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) of the Distiller's current step, each scaled as the loss compares them."""
        raise NotImplementedError

    def begin_step(self) -> None:
        """Before each optimiser step."""

    def checkpoint_extra(self) -> dict[str, torch.Tensor] | None:
        """More tensors a resume needs (saved with the checkpoint)."""
        return None

    def resumed(self, path: Any, extra: dict[str, torch.Tensor] | None) -> None:
        """After the checkpoint at path (with its extra tensors) is loaded."""


class Consistency(Method):
    """Consistency distillation (Song et al. 2023, Algorithm 2; Luo et al. 2023, LCM) on the teacher's ODE grid
    σ_0 > … > σ_N = 0 (schedule.sigmas(N, spacing)): draw n, x_n = x0 + σ_n·z; one DDIM step of the *guided*
    teacher (scale w, per sample) takes x_n to x_{n+1}; the student f_θ(x_n, σ_n, w) learns the EMA target
    f_θ⁻(x_{n+1}, σ_{n+1}, w), where f(x, 0) = x is the boundary.  The student is the teacher's network with a
    w embedding (models.UNetConfig.guidance_embedding) and f_θ its x̂0 = D_θ(x, σ)."""

    sampler = "consistency"

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.d
        x0, cond, uncond, w, n, noise = d.draw()
        sigma, sigma_next = d.sigmas[n].float(), d.sigmas[n + 1].float()  # (B,) σ_n > σ_{n+1} ≥ 0
        x = x0 + _view(sigma, x0) * noise  # (B, C, H, W) x_n on the forward process
        with torch.no_grad():
            # 1. one DDIM step of the guided teacher, σ_n → σ_{n+1} (the Euler step of the PF-ODE)
            x_next = toward(d.guided_teacher(x, sigma, cond, uncond, w), x, _view(sigma_next / sigma, x))
            # 2. the target network's answer there (exactly x_{n+1} where σ_{n+1} = 0)
            d.ema.copy_to(d.target)
            target = d.consistency_fn(d.target_d, x_next, sigma_next, cond, w)
        return d.consistency_fn(d.student_d, x, sigma, cond, w), target


class TeacherTargets(Method):
    """A method whose targets depend on the teacher alone: with cfg.reuse = R each serves R consecutive steps
    (`teacher_batch`)."""

    FIELDS = ("x", "sigma", "cond", "w", "target", "scale")  # a teacher_batch entry

    def __init__(self, d: Distiller) -> None:
        super().__init__(d)
        self.targets: dict[int, tuple] = {}  # step → its fresh teacher targets (teacher_batch)

    def fresh(self, x0: torch.Tensor, cond: Conditions, uncond: Conditions, w: torch.Tensor, n: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, σ, target) of freshly drawn samples."""
        raise NotImplementedError

    def scale(self, sigma: torch.Tensor, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """The per-sample scale on the x̂0 error."""
        return self.d.weight(sigma, x)

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, sigma, cond, w, target, scale = self.teacher_batch()
        pred = self.d.student_d(x, sigma, {**cond, "guidance": w})
        return scale * pred, scale * target

    def teacher_batch(self) -> tuple[torch.Tensor, torch.Tensor, Conditions, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, σ, cond, w, target, scale) for this step: the fresh teacher targets of steps n − R + 1 … n
        (R = cfg.reuse, batch_size/R samples each).  Kept between steps; after a resume they are recomputed
        from the steps' seeds."""
        d, r = self.d, self.d.cfg.reuse
        first = max(0, d.step - r + 1)
        self.targets = {k: v for k, v in self.targets.items() if k >= first}
        for k in range(first, d.step + 1):
            if k not in self.targets:
                x0, cond, uncond, w, n, noise = d.draw(k, d.cfg.batch_size // r)
                with torch.no_grad():
                    x, sigma, target = self.fresh(x0, cond, uncond, w, n, noise)
                self.targets[k] = (x, sigma, cond, w, target, self.scale(sigma, x, n))
        parts = [self.targets[k] for k in range(first, d.step + 1)]
        x, sigma, w, target, scale = (torch.cat([p[i] for p in parts]) for i in (0, 1, 3, 4, 5))
        return x, sigma, {key: torch.cat([p[2][key] for p in parts]) for key in parts[0][2]}, w, target, scale

    def checkpoint_extra(self) -> dict[str, torch.Tensor] | None:
        """With --student-states the targets depend on the student's weights when they were made, so a resume
        cannot recompute the reuse window: it is saved with the checkpoint (step.field[.key] → tensor)."""
        if not self.d.cfg.student_states or self.d.cfg.reuse == 1:  # without reuse no target outlives its step
            return None
        out = {}
        for k, entry in self.targets.items():
            for name, value in zip(self.FIELDS, entry):
                items = value.items() if name == "cond" else [(None, value)]
                out.update({f"{k}.{name}" + (f".{key}" if key else ""): v.contiguous() for key, v in items})
        return out

    def resumed(self, path: Any, extra: dict[str, torch.Tensor] | None) -> None:
        if not (self.d.cfg.student_states and self.d.cfg.reuse > 1):
            return
        if extra is None:
            raise DistillError(f"--resume: {path} has no saved window of targets, which --student-states needs")
        entries: dict[int, dict[str, Any]] = {}
        for name, v in extra.items():
            k, field, *key = name.split(".", 2)
            entry = entries.setdefault(int(k), {"cond": {}})
            if key:
                entry["cond"][key[0]] = v
            else:
                entry[field] = v
        self.targets = {k: tuple(e[f] for f in self.FIELDS) for k, e in entries.items()}


class Guidance(TeacherTargets):
    """Guidance distillation (Meng et al. 2023, stage 1) keeps the step count and removes the doubled batch: at
    σ drawn log-uniformly over the schedule's range, the student D_θ(x, σ, w) learns the guided teacher's
    clamped x̂0; it is then sampled with an ordinary solver (DPM-Solver++ 2M), one single-batch call per step.
    With sigma_sampling="grid" σ is instead one of the K levels the student's own K-step sampler queries."""

    sampler = "dpmpp_2m"

    def position(self, n: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
        d = self.d
        if d.cfg.sigma_sampling == "grid":  # one of the K σs its sampler queries
            return d.student_sigmas[torch.randint(0, len(d.student_sigmas), (size,), generator=g)]
        lo, hi = math.log(d.schedule.sigma_min), math.log(d.schedule.sigma_max)
        return torch.exp(lo + (hi - lo) * torch.rand(size, generator=g, dtype=torch.float64))

    def fresh(self, x0: torch.Tensor, cond: Conditions, uncond: Conditions, w: torch.Tensor, n: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sigma = n.float()  # (B,) log-uniform over [σ_min, σ_max]
        x = x0 + _view(sigma, x0) * noise
        return x, sigma, self.d.guided_teacher(x, sigma, cond, uncond, w)


class Trajectory(TeacherTargets):
    """Trajectory distillation (one phase, like TRACT, Berthelot et al. 2023, with the DDIM-inverse target of
    Salimans & Ho 2022) fixes the student's K-step grid σ_0 > … > σ_K = 0 (schedule.sigmas(K, spacing)): at
    x = x0 + σ_i·z the guided teacher solves the interval σ_i → σ_{i+1} with ⌈N/K⌉ DPM-Solver++(2M) steps
    (`ode_segment`), and the student learns the x̂0 whose one DDIM step lands there.  Its K-step DDIM sampling
    follows the teacher's fine solve, not the teacher's own K-step one.  A distilled teacher (a ddim student)
    takes its own DDIM steps instead."""

    def __init__(self, d: Distiller) -> None:
        super().__init__(d)
        cfg, spacing = d.cfg, str(d.cfg.spacing)
        if d.student_teacher:  # the teacher's own DDIM steps, order 1
            self.segments = student_teacher_segments(d.schedule, cfg.steps, spacing, d.info.defaults["steps"])
        else:
            self.segments = trajectory_segments(d.schedule, cfg.steps, spacing, cfg.ode_steps, cfg.last_target)

    def grid_steps(self) -> int:
        return self.d.cfg.steps

    def scale(self, sigma: torch.Tensor, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        scale = self.d.weight(sigma, x)
        if self.d.cfg.interval_weights is not None:  # n is the interval
            scale = scale * _view(torch.tensor(self.d.cfg.interval_weights, dtype=torch.float64)[n], x)
        return scale

    def fresh(self, x0: torch.Tensor, cond: Conditions, uncond: Conditions, w: torch.Tensor, n: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.d
        s0 = torch.tensor([seg[0] for seg in self.segments], dtype=torch.float64)[n].float()  # (B,) σ_i
        s1 = torch.tensor([seg[-1] for seg in self.segments], dtype=torch.float64)[n].float()  # σ_{i+1}
        x = x0 + _view(s0, x0) * noise
        if d.cfg.student_states:
            x = self.student_states(x0, noise, x, cond, w, n)
        end = torch.empty_like(x)
        lengths = torch.tensor([len(seg) for seg in self.segments])[n]
        for m in lengths.unique().tolist():  # intervals with as many fine steps are solved together, a grid per sample
            idx = (lengths == m).nonzero().squeeze(1)
            c, u = ({k: v[idx] for k, v in conds.items()} for conds in (cond, uncond))
            teacher = partial(d.guided_teacher, cond=c, uncond=u, w=w[idx])
            grids = torch.tensor([self.segments[i] for i in n[idx].tolist()], dtype=torch.float64)
            end[idx] = ode_segment(teacher, x[idx], grids, order=1 if d.student_teacher else 2)
        # the x̂0 whose DDIM step σ_i → σ_{i+1} lands on the teacher's end point (r = 0: the end point itself)
        r = _view(s1 / s0, x)
        return x, s0, (end - r * x) / (1 - r)

    def student_states(self, x0: torch.Tensor, noise: torch.Tensor, x: torch.Tensor, cond: Conditions,
                       w: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """--student-states p: the first ⌈p·B⌉ samples start interval i where the student's own painting is at σ_i:
        from x0 + σ_0·z (every sample's first state), i of its DDIM steps with its x̂0 clamped as painting clamps it,
        no gradient — the CFG-guided states it meets when it paints, not the data's noised marginals.  The
        teacher's fine solve from there is still the target.  The rest keep x = x0 + σ_i·z."""
        k = math.ceil(self.d.cfg.student_states * x.shape[0])
        coarse = [seg[0] for seg in self.segments]  # σ_0 > … > σ_{K−1}
        y = x0[:k] + coarse[0] * noise[:k]
        for j in range(int(n[:k].max()) if k else 0):  # step j: σ_j → σ_{j+1} for the samples that go past σ_j
            idx = (n[:k] > j).nonzero().squeeze(1)
            sigma = torch.full((len(idx),), coarse[j], dtype=x.dtype)
            d = self.d.student_d(y[idx], sigma, {**{key: v[idx] for key, v in cond.items()}, "guidance": w[idx]})
            y[idx] = toward(d.clamp(-1.0, 1.0), y[idx], coarse[j + 1] / coarse[j])
        return torch.cat([y, x[k:]])


class Progressive(Method):
    """Progressive distillation (Salimans & Ho 2022, Algorithm 2) halves the step count in rounds: the
    student's one DDIM step from σ_i to σ_{i+2} must land where two steps of the round's teacher do
    (round 0: the guided teacher, later: the previous round's student).  It is here for the measurement
    in docs/distill.md; consistency is the default."""

    def __init__(self, d: Distiller) -> None:
        super().__init__(d)
        self.rounds = int(round(math.log2(d.cfg.ode_steps // d.cfg.steps)))
        self.round_teacher: DiscreteDenoiser | None = None  # rounds ≥ 1

    @classmethod
    def paint_spacing(cls, schedule: Schedule, cfg: DistillConfig) -> str:
        """The nested grid it trained on (progressive_spacing)."""
        return progressive_spacing(schedule, str(cfg.spacing), cfg.ode_steps, cfg.steps)

    def round(self, step: int) -> int:
        return min(self.rounds - 1, step * self.rounds // self.d.cfg.max_steps)

    def grid_steps(self) -> int:
        """N/2^(r+1) in round r."""
        return self.d.cfg.ode_steps >> (self.round(self.d.step) + 1)

    def begin_step(self) -> None:
        step = self.d.step
        if step and self.round(step) != self.round(step - 1):
            self.start_round()

    def resumed(self, path: Any, extra: dict[str, torch.Tensor] | None) -> None:
        if self.round(self.d.step) > 0:
            self.load_round_teacher()

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.d
        x0, cond, uncond, w, n, noise = d.draw()
        # The round's teacher grid is every 2^(R−1−r)-th point of the N-step grid; the student's is every
        # other one of that.
        stride = d.cfg.ode_steps // (2 * self.grid_steps())
        s0, s1, s2 = (d.sigmas[(2 * n + k) * stride].float() for k in range(3))  # σ_i > σ_{i+½} > σ_{i+1}
        x = x0 + _view(s0, x0) * noise
        with torch.no_grad():
            x1 = toward(self.round_x0(x, s0, cond, uncond, w), x, _view(s1 / s0, x))
            x2 = toward(self.round_x0(x1, s1, cond, uncond, w), x1, _view(s2 / s1, x))
            # the x̂0 whose single DDIM step σ_i → σ_{i+1} lands on x2: x2 = x̃ + r·(x − x̃), r = σ_{i+1}/σ_i
            r = _view(s2 / s0, x)
            target = (x2 - r * x) / (1 - r)
        pred = d.student_d(x, s0, {**cond, "guidance": w})
        scale = d.weight(s0, x)
        return scale * pred, scale * target

    def round_x0(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditions, uncond: Conditions,
                 w: torch.Tensor) -> torch.Tensor:
        if self.round_teacher is None:
            return self.d.guided_teacher(x, sigma, cond, uncond, w)
        return self.d.consistency_fn(self.round_teacher, x, sigma, cond, w).clamp(-1.0, 1.0)

    def load_round_teacher(self) -> None:
        from safetensors.torch import load_file

        from ..models import UNet

        d = self.d
        net = UNet(d.student.config).requires_grad_(False).eval()
        net.load_state_dict(load_file(str(d.out / ROUND_TEACHER)))
        self.round_teacher = DiscreteDenoiser(net, d.schedule, d.prediction_type)

    def start_round(self) -> None:
        """The EMA student of the last round becomes the frozen teacher of the next."""
        from safetensors.torch import save_file

        d = self.d
        tmp = d.out / f".{ROUND_TEACHER}.tmp"
        save_file({k: v.contiguous() for k, v in d.ema.state_dict().items()}, str(tmp))
        tmp.replace(d.out / ROUND_TEACHER)
        self.load_round_teacher()
        d._log(f"round {self.round(d.step)}: {self.grid_steps()} student steps")


CLASSES: dict[str, type[Method]] = {"consistency": Consistency, "guidance": Guidance, "trajectory": Trajectory,
                                    "progressive": Progressive}
