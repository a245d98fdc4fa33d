"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++"), ODE and SDE.

In the σ view with λ = −log σ, the data-prediction SDE family (η = 0: probability-flow ODE) has the
exact step from λ_i to λ_{i+1} = λ_i + h
    x_{i+1} = e^{−H}·x_i + ∫_0^h (1+η)·e^{−(1+η)(h−τ)}·x̂0(λ_i + τ) dτ + σ_{i+1}·sqrt(1 − e^{−2ηh})·z,
with H = (1+η)·h (Lu et al. 2022, eq. 9 / §5 SDE-DPM-Solver++).  Expanding x̂0 in a Taylor series
at λ_i gives weights that are φ-functions:  Σ_k h^k·H·φ_{k+1}(−H)·x̂0^{(k)}(λ_i).  The derivatives
come from the denoised values of earlier steps (backward divided differences): that is "multistep",
one network call per step.
"""

from __future__ import annotations

import math

import torch

from .core import SamplingError, check_eta, lambdas, phi_functions, start, toward

# dpmpp_3m_sde takes its order-3 step only where h = λ_{i+1} − λ_i ≤ this, dpmpp_2m's midpoint step
# elsewhere: on a long step the 3-step extrapolation of x̂0 leaves its history and inflates the output's
# spread (measured in docs/samplers.md, benchmarks/numerics.py sde3).
ORDER_3_MAX_H = 1.0


def _dpm_solver_pp(denoiser, x, sigmas, generator, callback, *, order: int, eta: float,
                   order3_max_h: float = math.inf) -> torch.Tensor:
    """The shared loop of DPM-Solver++(2M), (2M) SDE and (3M) SDE; order 3 only where h ≤ order3_max_h."""
    eta = check_eta(eta)
    if isinstance(order3_max_h, bool) or not isinstance(order3_max_h, (int, float)) or not order3_max_h > 0:
        raise SamplingError(f"order3_max_h must be a number > 0 (inf: never fall back), got {order3_max_h!r}")
    run = start(denoiser, x, sigmas, generator, callback)
    lam = lambdas(run.sigmas)
    history: list[tuple[float, torch.Tensor]] = []  # (λ_j, x̂0_j) of the last order−1 steps, newest last
    for i in range(run.steps):
        # Notation: m0 = x̂0 at λ_i, (λ1, m1), (λ2, m2) = earlier steps; h = λ_{i+1} − λ_i;
        # r0 = (λ_i − λ1)/h, r1 = (λ1 − λ2)/h (Lu et al. 2022, Algorithm 2 and Appendix B).
        sigma_next = run.sigmas[i + 1]
        m0 = run.observe(i, x)  # (B, …) x̂0
        if sigma_next == 0:
            # h = ∞: e^{−H} = 0 and every higher-order weight multiplies a zero-length difference
            # quotient; the first-order step lands on x̂0 exactly (lower order final, §3.3).
            x = m0
            continue
        h = lam[i + 1] - lam[i]
        big_h = (1.0 + eta) * h
        phi_1, phi_2, phi_3 = phi_functions(-big_h, 3)
        # 1. first order (DPM-Solver++(1) = DDIM): x̂0 + e^{−H}·(x − x̂0)
        x_next = toward(m0, x, math.exp(-big_h))
        # 2. multistep corrections, limited by the history and lowered at the end (p ≤ steps − i)
        p = min(order, len(history) + 1, run.steps - i)
        if p == 3 and h > order3_max_h:
            p = 2  # a long step: dpmpp_2m's midpoint step, not a far extrapolation of x̂0
        if p >= 2:
            lam1, m1 = history[-1]
            r0 = (lam[i] - lam1) / h
            d1_0 = (m0 - m1) / r0  # ≈ h·x̂0'(λ_i) to first order
            if p == 2 and (order == 2 or h > order3_max_h):
                # "midpoint" weight ½·(1 − e^{−H}) (Lu et al. 2022, Algorithm 2: D = (1 + 1/(2r))·m0 − 1/(2r)·m1);
                # also 3M's long-step fallback: the φ₂ weight H·φ₂(−H) → 1 for large H (midpoint → ½) passes on
                # twice the noise the SDE's fresh draws put into d1_0 (docs/samplers.md)
                x_next = x_next + 0.5 * big_h * phi_1 * d1_0
            elif p == 2:
                x_next = x_next + big_h * phi_2 * d1_0
            else:
                lam2, m2 = history[-2]
                r1 = (lam1 - lam2) / h
                d1_1 = (m1 - m2) / r1
                d2 = (d1_0 - d1_1) / (r0 + r1)  # ≈ h²·x̂0''/2
                d1 = d1_0 + r0 * d2  # ≈ h·x̂0'(λ_i) to second order
                # the x̂0'' weight is h²·H·φ_3(−H) = 2·H·φ_3(−H) per unit of d2; DPM-Solver's published
                # 3M (and k-diffusion's 3M SDE) use half of it, which measures as order 2, not 3
                x_next = x_next + big_h * phi_2 * d1 + 2.0 * big_h * phi_3 * d2
        # 3. the SDE's fresh noise: σ_{i+1}·sqrt(1 − e^{−2ηh})·z
        if eta > 0:
            x_next = x_next + sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h)) * run.noise(x)
        history = (history + [(lam[i], m0)])[-(order - 1) :]
        x = x_next
    return x


def dpmpp_2m(denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2 (midpoint form): 2nd-order multistep ODE solver
    (`dpmpp_2m_pieces` on one whole grid to σ = 0, each step reported to the callback)."""
    run = start(denoiser, x, sigmas, generator, callback)
    return dpmpp_2m_pieces(denoiser, x, run.sigmas, observe=run.observe)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, 1, 1) in like's dtype."""
    return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def dpmpp_2m_pieces(denoiser, x: torch.Tensor, sigmas, order: int = 2, *, observe=None) -> torch.Tensor:
    """DPM-Solver++(2M)'s steps on grids that may end above σ = 0 and may differ per sample: first order at the
    start, the midpoint correction D = (1 + 1/(2r))·m0 − 1/(2r)·m1 after, x̂0 itself on a step to 0.  `sigmas`
    is one grid for every sample (a list) or a grid per sample, (B, m + 1): each step is then one network
    call for all of them (trajectory distillation solves the pieces σ_i → σ_{i+1} of its students' intervals
    this way; `dpmpp_2m` is it on one whole grid).  order=1: plain DDIM steps.  denoiser(x, σ (B,)) → x̂0;
    `observe(j, x)`, if given, makes the call instead (the registered sampler's callback path)."""
    grid = torch.as_tensor(sigmas, dtype=torch.float64)
    grid = grid.expand(x.shape[0], -1) if grid.ndim == 1 else grid
    lam = -grid.clamp(min=1e-300).log()  # λ = −log σ; the +∞ at σ = 0 is never used
    history: tuple[torch.Tensor, torch.Tensor] | None = None  # (λ, x̂0) of the previous step
    for j in range(grid.shape[1] - 1):
        m0 = observe(j, x) if observe is not None else denoiser(x, grid[:, j].to(x.dtype))
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


def dpmpp_2m_sde(
    denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None, eta: float = 1.0
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M), Lu et al. 2022 §5 (midpoint form), with k-diffusion's η: η = 0 is dpmpp_2m."""
    return _dpm_solver_pp(denoiser, x, sigmas, generator, callback, order=2, eta=eta)


def dpmpp_3m_sde(
    denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None, eta: float = 1.0,
    order3_max_h: float = ORDER_3_MAX_H,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: 3rd-order multistep exponential integrator (Lu et al. 2022, App. B), order 2
    on steps with h > order3_max_h (math.inf: order 3 wherever the history allows)."""
    return _dpm_solver_pp(denoiser, x, sigmas, generator, callback, order=3, eta=eta, order3_max_h=order3_max_h)
