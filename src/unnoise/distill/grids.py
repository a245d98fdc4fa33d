"""The grids and the ODE solve that distillation targets are built on: the teacher's fine grid inside each of
the student's intervals, a distilled teacher's own grid cut at the student's, a progressive student's nested
grid, and `ode_segment`, sampling's DPM-Solver++(2M) on a piece of a grid (which may end at σ > 0, one grid per
sample)."""

from __future__ import annotations

import math

import torch

from .. import schedules
from ..sampling.dpm_solver import dpmpp_2m_pieces
from .config import DistillError


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, 1, 1) in like's dtype."""
    return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def ode_segment(denoiser, x: torch.Tensor, sigmas, order: int = 2) -> torch.Tensor:
    """The teacher's solve of the probability-flow ODE from σ = sigmas[0] to sigmas[-1] (which may be > 0):
    sampling's DPM-Solver++(2M) on a piece of a grid, one grid for all samples or one per sample
    (`sampling.dpm_solver.dpmpp_2m_pieces`); order=1: plain DDIM steps (a distilled student's own sampler)."""
    return dpmpp_2m_pieces(denoiser, x, sigmas, order)


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
            log_min = math.log(schedule.sigma_min)
            seg = torch.linspace(math.log(a), log_min, m, dtype=torch.float64).exp().tolist() + [0.0]
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
            raise DistillError(f"the student's {steps}-step {spacing} grid has σ = {s:.4g}, not a point of the "
                               f"teacher's {teacher_steps}-step grid {[round(f, 4) for f in fine]}: pick a spacing "
                               "whose grids nest")
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
                       f"{ode_steps // steps}-th point of the {ode_steps}-step one, and {spacing}'s is not; use "
                       "log_snr, log_snr@S, log_snr_trailing or trailing")
