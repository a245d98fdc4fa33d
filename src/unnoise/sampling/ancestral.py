"""Ancestral samplers: DDPM, DDIM and Euler-ancestral, one update in the σ view.

DDIM (Song et al. 2021, eq. 12) with stochasticity η steps from x_t to
    x_{t−1} = sqrt(ᾱ_{t−1})·x̂0 + sqrt(1 − ᾱ_{t−1} − σ_t(η)²)·ε̂ + σ_t(η)·z,
    σ_t(η)² = η²·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_{t−1})            (eq. 16).
Dividing by sqrt(ᾱ_{t−1}) and writing ᾱ = 1/(1 + σ²) turns it into
    x_next = x̂0 + σ_down·ε̂ + σ_up·z,   ε̂ = (x − x̂0)/σ,
    σ_up = η·σ_next·sqrt(1 − σ_next²/σ²) (capped at σ_next),   σ_down = sqrt(σ_next² − σ_up²),
which is exactly the Euler-ancestral step (k-diffusion's "get_ancestral_step").  η = 1 is DDPM's
ancestral sampler with the posterior variance β̃_t (Ho et al. 2020, Algorithm 2; Song et al. 2021
§4.1), η = 0 is deterministic DDIM = Euler on the probability-flow ODE.
"""

from __future__ import annotations

import math

import torch

from .core import check_eta, start, toward


def ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(σ_down, σ_up) of one ancestral step; σ_down² + σ_up² = σ_next²."""
    if sigma_next == 0:
        return 0.0, 0.0
    ratio2 = (sigma_next / sigma) ** 2
    # σ_down² = σ_next²·(1 − η² + η²·ratio²): no cancellation for η ≤ 1, clipped at 0 for large η
    keep = (1.0 - eta**2) + eta**2 * ratio2
    if keep <= 0.0:
        return 0.0, sigma_next
    return sigma_next * math.sqrt(keep), sigma_next * min(1.0, eta * math.sqrt(1.0 - ratio2))


def _ancestral(denoiser, x, sigmas, generator, callback, eta: float) -> torch.Tensor:
    eta = check_eta(eta)
    run = start(denoiser, x, sigmas, generator, callback)
    for i in range(run.steps):
        sigma = run.sigmas[i]
        denoised = run.observe(i, x)  # (B, …) x̂0
        sigma_down, sigma_up = ancestral_split(sigma, run.sigmas[i + 1], eta)
        # 1. deterministic part: x̂0 + σ_down·ε̂
        x = toward(denoised, x, sigma_down / sigma)
        # 2. fresh noise; none is drawn when the step is deterministic (η = 0, or the last step)
        if sigma_up > 0:
            x = x + sigma_up * run.noise(x)
    return x


def ddim(denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None, eta: float = 0.0) -> torch.Tensor:
    """DDIM, Song et al. 2021 (eq. 12 with σ_t(η) of eq. 16); η = 0 (default) is deterministic."""
    return _ancestral(denoiser, x, sigmas, generator, callback, eta)


def ddpm(denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None) -> torch.Tensor:
    """DDPM ancestral sampling, Ho et al. 2020 Algorithm 2 with σ_t² = β̃_t (= DDIM with η = 1)."""
    return _ancestral(denoiser, x, sigmas, generator, callback, 1.0)


def euler_ancestral(
    denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None, eta: float = 1.0
) -> torch.Tensor:
    """Euler-ancestral (Euler step to σ_down, then noise to σ_next; Karras et al. 2022 §3 / k-diffusion):
    the same update as DDIM with this η, offered under the name users know."""
    return _ancestral(denoiser, x, sigmas, generator, callback, eta)
