"""Toy data with exact denoisers: the ground truth samplers are tested and benchmarked against.

Every toy is elementwise (each coordinate of x is an independent draw), so one tensor of any shape
holds many independent problems at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, …, 1) in like's dtype and device."""
    return torch.as_tensor(values).to(like.device, like.dtype).view((-1,) + (1,) * (like.ndim - 1))


@dataclass(frozen=True)
class GaussianData:
    """x0 ~ N(mean, std²) per coordinate; std = 0 is single-point data."""

    mean: float = 0.0  # μ
    std: float = 1.0  # s ≥ 0

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x0 + σ·ε = x] = μ + s²/(s² + σ²)·(x − μ)."""
        var = self.std**2
        sigma = _per_sample(sigma, x)
        return self.mean + var / (var + sigma**2) * (x - self.mean)

    def flow_endpoint(self, x: torch.Tensor, sigma_max: float) -> torch.Tensor:
        """Exact probability-flow ODE solution at σ = 0 from x at σ_max: x − μ scales with sqrt(s² + σ²)."""
        return self.mean + self.std / math.sqrt(self.std**2 + sigma_max**2) * (x - self.mean)

    def consistency_function(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The exact consistency function (Song et al. 2023): flow_endpoint with σ per sample (B,)."""
        sigma = _per_sample(sigma, x)
        return self.mean + self.std / (self.std**2 + sigma**2).sqrt() * (x - self.mean)

    def ddpm_output(self, x_t: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
        """The exact network in the DDPM view: ε, v or x0 predicted from x_t with per-sample ᾱ (B,)."""
        ab = _per_sample(alphas_cumprod, x_t)
        var = self.std**2
        signal, noise = ab.sqrt(), (1 - ab).sqrt()
        # x_t = sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε is Gaussian: E[x0 | x_t] = μ + sqrt(ᾱ)·s²/(ᾱ·s² + 1 − ᾱ)·(x_t − sqrt(ᾱ)·μ)
        x0 = self.mean + signal * var / (ab * var + 1 - ab) * (x_t - signal * self.mean)
        if prediction_type == "sample":
            return x0
        eps = noise / (ab * var + 1 - ab) * (x_t - signal * self.mean)
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "v_prediction":
            return signal * eps - noise * x0
        raise ValueError(f"unknown prediction type {prediction_type!r}")


@dataclass(frozen=True)
class GaussianMixture:
    """x0 ~ Σ_k w_k·N(μ_k, s_k²) per coordinate: multimodal, so the denoiser is nonlinear."""

    weights: tuple[float, ...] = (0.3, 0.7)
    means: tuple[float, ...] = (-0.6, 0.5)
    stds: tuple[float, ...] = (0.1, 0.25)

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Σ_k p(k | x)·(μ_k + s_k²/(s_k² + σ²)·(x − μ_k)), p(k | x) ∝ w_k·N(x; μ_k, s_k² + σ²)."""
        sigma2 = _per_sample(sigma, x) ** 2
        log_post, means = [], []
        for w, mu, s in zip(self.weights, self.means, self.stds):
            var = s**2 + sigma2
            log_post.append(math.log(w) - 0.5 * torch.log(var) - 0.5 * (x - mu) ** 2 / var)
            means.append(mu + s**2 / var * (x - mu))
        post = torch.softmax(torch.stack(log_post), dim=0)
        return (post * torch.stack(means)).sum(dim=0)
