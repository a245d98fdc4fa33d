"""Karras et al. 2022 ("EDM"), Algorithm 2: Euler and Heun steps on the probability-flow ODE
dx/dσ = (x − D(x, σ))/σ, with the algorithm's optional "churn" (fresh noise raising σ_i to σ̂_i
before each step).  With s_churn = 0 (the default) both are deterministic ODE solvers."""

from __future__ import annotations

import math

import torch

from .core import Run, SamplingError, start, toward


def _check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    for name, value in (("s_churn", s_churn), ("s_noise", s_noise), ("s_tmin", s_tmin)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise SamplingError(f"{name} must be a finite number ≥ 0, got {value!r}")
    if not s_tmin <= s_tmax:
        raise SamplingError(f"need s_tmin ≤ s_tmax, got {s_tmin} and {s_tmax}")


def _churn(run: Run, x: torch.Tensor, i: int, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
    """Algorithm 2, lines 4–6: γ_i = min(S_churn/N, √2 − 1) inside [S_tmin, S_tmax], σ̂ = σ_i(1 + γ_i),
    x̂ = x + sqrt(σ̂² − σ_i²)·S_noise·z.  Returns (x̂, σ̂); no noise is drawn when γ_i = 0."""
    sigma = run.sigmas[i]
    gamma = min(s_churn / run.steps, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma == 0.0:
        return x, sigma
    sigma_hat = sigma * (1.0 + gamma)
    return x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * run.noise(x), sigma_hat


def _karras(denoiser, x, sigmas, generator, callback, churn: tuple, correct: bool) -> torch.Tensor:
    """Algorithm 2's loop; ``correct`` adds Heun's second-order correction (lines 8–11)."""
    _check_churn(*churn)
    run = start(denoiser, x, sigmas, generator, callback)
    for i in range(run.steps):
        # Notation (Alg. 2): σ̂ = t̂_i, x̂ = x̂_i, d = d_i, x_euler = x_{i+1} before correction, d_next = d'_i
        x, sigma = _churn(run, x, i, *churn)
        sigma_next = run.sigmas[i + 1]
        denoised = run.observe(i, x, sigma)  # (B, …) x̂0
        # 1. Euler step (line 7): x̂ + (σ_{i+1} − σ̂)·d with d = (x̂ − x̂0)/σ̂, written as a move toward x̂0
        x_euler = toward(denoised, x, sigma_next / sigma)
        if not correct or sigma_next == 0:
            # line 8: no correction on the last step; d' would need D at σ = 0
            x = x_euler
            continue
        # 2. trapezoidal correction (lines 9–11): x_{i+1} = x̂ + (σ_{i+1} − σ̂)·(d + d')/2
        denoised_next = run.denoise(x_euler, sigma_next)
        d = (x - denoised) / sigma
        d_next = (x_euler - denoised_next) / sigma_next
        x = x + (sigma_next - sigma) * 0.5 * (d + d_next)
    return x


def euler(denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None, s_churn: float = 0.0,
          s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> torch.Tensor:
    """Euler's method, Karras et al. 2022 Algorithm 2 without the second-order correction (order 1)."""
    return _karras(denoiser, x, sigmas, generator, callback, (s_churn, s_tmin, s_tmax, s_noise), correct=False)


def heun(denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None, s_churn: float = 0.0,
         s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> torch.Tensor:
    """Heun's 2nd-order method, Karras et al. 2022 Algorithm 2 (2 calls per step, 1 on the last)."""
    return _karras(denoiser, x, sigmas, generator, callback, (s_churn, s_tmin, s_tmax, s_noise), correct=True)
