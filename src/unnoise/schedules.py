"""Noise schedules: how fast the forward process destroys an image.

A schedule is a list of per-step variances β_t (DDPM, Ho et al. 2020) and everything that follows
from them.  Two views of the same numbers are used across unnoise:

* the discrete DDPM view (training, diffusers):  x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε,  t = 0 … T−1;
* the σ view (samplers, k-diffusion/EDM):        x = x0 + σ·ε,  σ = sqrt((1−ᾱ)/ᾱ),
  which is the DDPM x_t divided by sqrt(ᾱ_t).

All schedule arithmetic is float64 (improved-diffusion: "use float64 for accuracy"); callers cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UnnoiseError
from .limits import DEFAULT_SPACING

NAMES = ("linear", "cosine", "sigmoid")
SPACINGS = ("leading", "linspace", "trailing", "karras", "log_snr", "log_snr_trailing")
# "log_snr@S": uniform in log-SNR from σ_max down to a last call at σ = S (instead of σ_min), then 0: where
# a sampler stops denoising is a knob of its own (k-diffusion's sigma_min; measured in docs/distill.md)
LAST_SIGMA_SPACING = "log_snr@"
ZTSNR_SUFFIX = "+ztsnr"
MAX_TRAIN_STEPS = 100_000
MAX_INFERENCE_STEPS = 10_000

# A zero-terminal-SNR schedule has ᾱ_T = 0, i.e. σ_T = ∞, which the σ view cannot start from.
# diffusers substitutes ᾱ_T = 2⁻²⁴ (σ ≈ 4096), but for the linear schedule ᾱ_{T−2} is already below
# that, so σ would stop increasing.  We extend log σ by its last increment instead: σ_T = σ_{T−1}²/σ_{T−2},
# which keeps σ strictly increasing in t (and x_T ≈ pure noise: its signal share is ≈ 1/σ_T).


class ScheduleError(UnnoiseError, ValueError):
    """A schedule or spacing was asked for with bad arguments."""


def _linear_betas(num_steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def _sigmoid_betas(num_steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    # Jabri et al. 2022 (RIN); same form as diffusers' "sigmoid".
    return torch.sigmoid(torch.linspace(-6, 6, num_steps, dtype=torch.float64)) * (beta_end - beta_start) + beta_start


def _cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    # Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s)),
    # β_t = 1 − ᾱ(t+1)/ᾱ(t) capped at 0.999 "to prevent singularities at the end of the diffusion process".
    def f(u: np.ndarray) -> np.ndarray:
        return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    betas = 1.0 - f(u[1:]) / f(u[:-1])
    return torch.from_numpy(np.minimum(betas, max_beta))


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(ᾱ) so that ᾱ_T = 0 exactly and ᾱ_0 is kept."""
    sqrt_ab = alphas_cumprod.sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    out = sqrt_ab**2
    out[0] = alphas_cumprod[0]  # exact, not merely to rounding
    out[-1] = 0.0
    return out


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete DDPM noise schedule with both the ᾱ and the σ view of it."""

    name: str  # e.g. "linear", "cosine+ztsnr"
    betas: torch.Tensor  # (T,) float64, β_t
    alphas_cumprod: torch.Tensor  # (T,) float64, ᾱ_t = Π_{s≤t} (1 − β_s), t = 0 … T−1

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    @property
    def zero_terminal_snr(self) -> bool:
        return bool(self.alphas_cumprod[-1] == 0)

    # --- per-step quantities, all (T,) float64 -------------------------------------------
    @property
    def signal(self) -> torch.Tensor:
        """sqrt(ᾱ_t): the share of the image left in x_t."""
        return self.alphas_cumprod.sqrt()

    @property
    def noise(self) -> torch.Tensor:
        """sqrt(1 − ᾱ_t): the share of static in x_t (signal² + noise² = 1)."""
        return (1.0 - self.alphas_cumprod).sqrt()

    @property
    def snr(self) -> torch.Tensor:
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    @property
    def log_snr(self) -> torch.Tensor:
        return torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)

    @property
    def train_sigmas(self) -> torch.Tensor:
        """σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) for every training step (∞ at a zero-terminal-SNR end)."""
        return ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    @property
    def inference_sigmas(self) -> torch.Tensor:
        """train_sigmas with a zero-terminal-SNR end made finite (log-linear extrapolation), for the σ view."""
        sig = self.train_sigmas.clone()
        if not torch.isfinite(sig[-1]):
            sig[-1] = sig[-2] ** 2 / sig[-3]
        return sig

    @property
    def sigma_min(self) -> float:
        return float(self.inference_sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.inference_sigmas[-1])

    def crossing_step(self) -> float:
        """The (fractional) t where signal = noise, i.e. ᾱ_t = 1/2 and σ = 1."""
        return float(self.sigma_to_t(torch.tensor([1.0], dtype=torch.float64))[0])

    # --- the forward process ----------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·noise, with t an int64 tensor of shape (B,)."""
        if x0.shape != noise.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
        t = torch.as_tensor(t, device=x0.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError("t must be an integer tensor of step indices")
        if t.ndim == 0:
            t = t.expand(x0.shape[0])
        if t.shape != (x0.shape[0],):
            raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
        if (t < 0).any() or (t >= self.num_steps).any():
            raise ValueError(f"t must lie in [0, {self.num_steps - 1}]")
        ab = self.alphas_cumprod.to(x0.device)[t]
        view = (-1,) + (1,) * (x0.ndim - 1)
        signal = ab.sqrt().to(x0.dtype).view(view)
        noise_share = (1.0 - ab).sqrt().to(x0.dtype).view(view)
        return signal * x0 + noise_share * noise

    # --- t ↔ σ ---------------------------------------------------------------------------------
    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep for σ by linear interpolation in log σ between grid points
        (k-diffusion's DiscreteSchedule).  σ beyond the grid is clamped to its ends."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        log_sigmas = self.inference_sigmas.log()
        log_sigma = sigma.clamp(min=self.sigma_min, max=self.sigma_max).log()
        idx = torch.searchsorted(log_sigmas, log_sigma.reshape(-1)).clamp(1, self.num_steps - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        w = ((log_sigma.reshape(-1) - lo) / (hi - lo)).clamp(0, 1)
        return ((idx - 1).to(torch.float64) + w).reshape(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ at a (fractional) timestep, interpolating log σ linearly; inverse of sigma_to_t."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_steps - 1)
        log_sigmas = self.inference_sigmas.log()
        lo = t.floor().long().clamp(max=self.num_steps - 2)
        w = t - lo
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[lo + 1]).exp()

    # --- inference noise levels -----------------------------------------------------------------
    def timesteps(self, steps: int, spacing: str = "trailing") -> torch.Tensor:
        """DDPM timestep spacings (Lin et al. 2023, Table 2), descending int64 of shape (steps,)."""
        _check_steps(steps, self.num_steps)
        T = self.num_steps
        if spacing == "linspace":
            ts = np.linspace(0, T - 1, steps).round()
        elif spacing == "leading":
            ts = np.arange(steps) * (T // steps)
        elif spacing == "trailing":
            # diffusers writes np.arange(T, 0, −T/steps), whose length floating point can make steps + 1
            # (e.g. 233 steps in 1000); counting the steps instead gives the same values, always `steps` of them
            ts = np.round(T - np.arange(steps) * (T / steps))[::-1] - 1
        else:
            raise ScheduleError(f"unknown timestep spacing {spacing!r}; choose from leading, linspace, trailing")
        out = torch.from_numpy(ts[::-1].copy()).long()
        if len(out) != steps or not bool((out[:-1] > out[1:]).all()):
            raise ScheduleError(f"{spacing!r} spacing cannot place {steps} distinct steps in {T}")
        return out

    def sigmas(self, steps: int, spacing: str | None = None, *, rho: float = 7.0) -> torch.Tensor:
        """Inference noise levels, float64 of shape (steps + 1,), strictly descending, last entry exactly 0."""
        spacing = DEFAULT_SPACING if spacing is None else spacing
        last = last_sigma(spacing)
        if last is not None:
            _check_steps(steps)
            if not self.sigma_min <= last < self.sigma_max:
                raise ScheduleError(f"spacing {spacing!r}: the last σ must lie in [{self.sigma_min:.4g}, "
                                    f"{self.sigma_max:.4g}) for this schedule")
            sig = torch.linspace(math.log(self.sigma_max), math.log(last), steps, dtype=torch.float64).exp()
            return torch.cat([sig, sig.new_zeros(1)])
        if spacing in ("leading", "linspace", "trailing"):
            sig = self.inference_sigmas[self.timesteps(steps, spacing)]
        elif spacing == "karras":
            _check_steps(steps)
            # Karras et al. 2022, eq. 5
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            lo, hi = self.sigma_min ** (1 / rho), self.sigma_max ** (1 / rho)
            sig = (hi + ramp * (lo - hi)) ** rho
        elif spacing in ("log_snr", "log_snr_trailing"):
            _check_steps(steps)
            # uniform in log-SNR = −2 log σ.  log_snr_trailing: over steps + 1 points without the last (σ_min),
            # so the last step goes to 0 from σ_max·(σ_min/σ_max)^((steps − 1)/steps) — never a call at σ_min
            # (for few-step distilled samplers; like "trailing", it leaves out the steps at t ≈ 0)
            points = steps + (spacing == "log_snr_trailing")
            sig = torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), points, dtype=torch.float64)
            sig = sig[:steps].exp()
        else:
            raise ScheduleError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
        return torch.cat([sig, sig.new_zeros(1)])


def last_sigma(spacing: str) -> float | None:
    """S of a "log_snr@S" spacing, None for a named one; ScheduleError for anything else."""
    if isinstance(spacing, str) and spacing.startswith(LAST_SIGMA_SPACING):
        text = spacing[len(LAST_SIGMA_SPACING):]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0) or text.strip() != text:
            raise ScheduleError(f"spacing {spacing!r}: after {LAST_SIGMA_SPACING!r} comes the last σ, a positive "
                                "number (e.g. log_snr@0.5)")
        return value
    if spacing not in SPACINGS:
        from .suggest import did_you_mean

        raise ScheduleError(f"unknown spacing {spacing!r}{did_you_mean(spacing, SPACINGS)} (choose from "
                            f"{', '.join(SPACINGS)} or log_snr@S, S: the σ of the last call)")
    return None


def check_spacing(spacing: str) -> str:
    """The spacing itself if `sigmas` knows it (a name of SPACINGS or "log_snr@S"), else ScheduleError.
    Whether S lies inside a schedule's σ range is checked by `sigmas`."""
    last_sigma(spacing)
    return spacing


def _check_steps(steps: int, limit: int = MAX_INFERENCE_STEPS) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ScheduleError(f"steps must be an integer, got {steps!r}")
    if not 1 <= steps <= limit:
        raise ScheduleError(f"steps must be between 1 and {limit}, got {steps}")


def get(
    name: str,
    num_steps: int = 1000,
    *,
    zero_terminal_snr: bool = False,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Schedule:
    """A schedule by name: "linear" (Ho et al. 2020, β from 1e-4 to 0.02), "cosine" (Nichol & Dhariwal
    2021, s = 0.008, β ≤ 0.999) or "sigmoid".  A "+ztsnr" suffix or ``zero_terminal_snr=True`` applies
    the zero-terminal-SNR rescaling of Lin et al. 2023."""
    if not isinstance(name, str):
        raise ScheduleError(f"schedule name must be a string, got {name!r}")
    base = name
    if base.endswith(ZTSNR_SUFFIX):
        base, zero_terminal_snr = base[: -len(ZTSNR_SUFFIX)], True
    if base not in NAMES:
        choices = ", ".join(NAMES)
        raise ScheduleError(f"unknown schedule {name!r}; choose from {choices} (optionally with '{ZTSNR_SUFFIX}')")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ScheduleError(f"num_steps must be an integer, got {num_steps!r}")
    if not 2 <= num_steps <= MAX_TRAIN_STEPS:
        raise ScheduleError(f"num_steps must be between 2 and {MAX_TRAIN_STEPS}, got {num_steps}")
    if not 0 < beta_start < beta_end < 1:
        raise ScheduleError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")

    if base == "linear":
        betas = _linear_betas(num_steps, beta_start, beta_end)
    elif base == "sigmoid":
        betas = _sigmoid_betas(num_steps, beta_start, beta_end)
    else:
        betas = _cosine_betas(num_steps)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if zero_terminal_snr:
        alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        betas = 1.0 - alphas_cumprod / prev
    full_name = base + (ZTSNR_SUFFIX if zero_terminal_snr else "")
    return Schedule(name=full_name, betas=betas, alphas_cumprod=alphas_cumprod)


def available() -> list[str]:
    """Every name `get` accepts."""
    return [n for base in NAMES for n in (base, base + ZTSNR_SUFFIX)]
