"""Adapters from networks to the samplers' one model-facing type, D(x, σ) → x̂0 in the σ view.

A network trained on the discrete DDPM grid sees x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε at integer t and
predicts ε, v or x0 (diffusion.PREDICTION_TYPES).  In the σ view x = x0 + σ·ε = x_t/sqrt(ᾱ), with
ᾱ = 1/(1 + σ²) (Karras et al. 2022, Table 1, "VP" column; k-diffusion's external.py).
"""

from __future__ import annotations

import torch

from .diffusion import PREDICTION_TYPES, predict_x0
from .errors import UnnoiseError
from .schedules import Schedule


class DenoiserError(UnnoiseError, ValueError):
    """An adapter was built or called with bad arguments."""


class DiscreteDenoiser:
    """Wrap ``model(x_t, t, cond) -> output`` (ε, v or x0) as ``denoiser(x, sigma, cond=None) -> x̂0``.

    σ between grid points: the network gets the fractional timestep t = schedule.sigma_to_t(σ), linear
    in log σ between the two neighbouring grid σ's (k-diffusion's DiscreteSchedule), and the input
    scaling x_t = x/sqrt(1 + σ²) and the conversion to x̂0 use ᾱ = 1/(1 + σ²) of the requested σ itself,
    never a grid neighbour's.  Hence (tested): at a grid σ_t this is exactly the DDPM formulas at step t,
    and a network that reads a fractional t as the noise level σ(t) = schedule.t_to_sigma(t) — e.g. one
    exact for Gaussian data — stays exact off the grid, because t_to_sigma inverts sigma_to_t.
    σ outside [σ_min, σ_max] clamps t to the grid's ends; the conversion still uses σ, so D(x, 0) = x
    for ε and v prediction.

    Zero-terminal-SNR schedules (Lin et al. 2023): the σ view uses the finite σ_max of
    schedule.inference_sigmas (thousands), where t is the last grid step, trained at ᾱ = 0.  ε prediction
    cannot recover x0 there (x̂0 = x − σ·ε̂ multiplies the network's error by σ_max; Lin et al. §3.2),
    so it is refused; v and x0 prediction are well conditioned at any σ.

    The conversion runs in float64 (1 − ᾱ loses digits in float32 at small σ) and returns x's dtype;
    σ and t are computed on the CPU, where the schedule lives.
    """

    def __init__(self, model, schedule: Schedule, prediction_type: str = "epsilon"):
        if not callable(model):
            raise TypeError("model must be callable as model(x_t, t, cond)")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a unnoise.schedules.Schedule, got {type(schedule).__name__}")
        if prediction_type not in PREDICTION_TYPES:
            choices = ", ".join(PREDICTION_TYPES)
            raise DenoiserError(f"unknown prediction type {prediction_type!r}; choose from {choices}")
        if prediction_type == "epsilon" and schedule.zero_terminal_snr:
            raise DenoiserError(
                f"epsilon prediction cannot recover x0 at zero terminal SNR ({schedule.name}); "
                "use v_prediction or sample (Lin et al. 2023, §3.2)"
            )
        self.model = model
        self.schedule = schedule
        self.prediction_type = prediction_type

    def __repr__(self) -> str:
        return f"DiscreteDenoiser({self.schedule.name}, prediction_type={self.prediction_type!r})"

    def __call__(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim < 1:
            raise TypeError("x must be a floating-point tensor of shape (B, …)")
        batch = x.shape[0]
        sigma = torch.as_tensor(sigma).detach().to("cpu", torch.float64)
        if sigma.ndim == 0:
            sigma = sigma.expand(batch)
        if sigma.shape != (batch,):
            raise DenoiserError(f"sigma must have shape ({batch},), got {tuple(sigma.shape)}")
        if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
            raise DenoiserError("sigma must be finite and non-negative")

        t = self.schedule.sigma_to_t(sigma)  # (B,) float64, fractional between grid points
        alphas_cumprod = 1.0 / (1.0 + sigma**2)  # (B,) ᾱ(σ), exact for this σ
        work = torch.float32 if x.device.type == "mps" else torch.float64  # mps has no float64
        view = (-1,) + (1,) * (x.ndim - 1)
        x_t = x.to(work) * alphas_cumprod.sqrt().to(x.device, work).view(view)  # (B, …) DDPM-scaled input
        t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        output = self.model(x_t.to(x.dtype), t.to(x.device, t_dtype), cond)
        if not isinstance(output, torch.Tensor) or output.shape != x.shape:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise DenoiserError(f"model returned {got}, expected shape {tuple(x.shape)}")
        x0 = predict_x0(alphas_cumprod.to(work), x_t, output.to(work), self.prediction_type)
        return x0.to(x.dtype)
