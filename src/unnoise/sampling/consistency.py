"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1), as LCM uses it.

Here the model is a *consistency function* f(x, σ): it maps a sample at noise level σ straight to the
end of its probability-flow ODE trajectory (σ = 0), not to the posterior mean E[x0 | x] that a
diffusion denoiser returns.  One call paints an image; more steps re-noise that image to a lower σ
with fresh noise and map it back, trading a few calls for fewer one-jump errors.  Distilled students
(unnoise.distill) are such functions; given an ordinary denoiser the same loop is simply "denoise,
re-noise" and works, if blurrily.
"""

from __future__ import annotations

import torch

from .core import start


def consistency(denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None) -> torch.Tensor:
    """Song et al. 2023, Algorithm 1 (multistep consistency sampling), boundary at σ = 0."""
    run = start(denoiser, x, sigmas, generator, callback)
    for i in range(run.steps):
        # Notation: τ_i = σ_i, f_θ(x, τ) = denoiser(x, σ); Algorithm 1 re-noises with sqrt(τ² − ε²),
        # which is τ itself here because the boundary f(x, 0) = x sits at ε = 0.
        denoised = run.observe(i, x)  # 1. x̂0 = f(x, σ_i): a whole image in one call
        sigma_next = run.sigmas[i + 1]
        if sigma_next == 0:
            x = denoised  # 2. last step: the image itself, bit for bit
        else:
            x = denoised + sigma_next * run.noise(x)  # 2. x = x̂0 + σ_{i+1}·z, z fresh from generator b
    return x
