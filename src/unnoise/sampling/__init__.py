"""Samplers: run the destruction backwards.

Every entry of ``SAMPLERS`` is a pure function
    SAMPLERS[name](denoiser, x, sigmas, *, generator=None, callback=None, **options) -> x0
in the σ view (x = x0 + σ·ε): ``denoiser(x, sigma) -> x̂0`` with sigma of shape (B,), ``x`` the start
noise·sigmas[0], ``sigmas`` strictly descending and ending in exactly 0.  ``generator`` is one
torch.Generator or a list of B (sample b draws its noise from generator b, so seed k gives the same
image whatever the batch).  ``callback(info)`` sees a StepInfo once per step; returning False or
raising SamplingCancelled stops the run with SamplingCancelled.  All history is local to a call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..schedules import Schedule
from .ancestral import ddim, ddpm, euler_ancestral
from .consistency import consistency
from .core import (
    Callback,
    Denoiser,
    Generators,
    SamplingCancelled,
    SamplingError,
    StepInfo,
    check_generators,
    randn_like,
)
from .dpm_solver import dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde
from .euler import euler, heun
from .unipc import unipc

__all__ = [
    "SAMPLERS",
    "Sampler",
    "SamplingCancelled",
    "SamplingError",
    "StepInfo",
    "UnknownSamplerError",
    "available",
    "get_sampler",
    "sample",
    "seeded_generators",
]


class UnknownSamplerError(SamplingError):
    """A sampler name that is not in SAMPLERS."""


@dataclass(frozen=True)
class Sampler:
    """A registry entry: the sampler function plus what the tests and docs need to know about it."""

    name: str  # registry key
    fn: Callable[..., torch.Tensor]  # fn(denoiser, x, sigmas, *, generator, callback, **options) -> x0
    order: int  # convergence order of the ODE solver (with ode_options if stochastic)
    stochastic: bool  # draws fresh noise under its default options
    calls_per_step: int  # denoiser calls per step (the last step, to σ = 0, always takes one)
    paper: str  # one-line citation
    # options that make it a deterministic ODE solver of this order ({} if it already is; None if none do)
    ode_options: Mapping[str, Any] | None = field(default_factory=dict)
    # what denoiser(x, σ) must return: "denoiser" (x̂0 = E[x0 | x], every diffusion model) or "consistency"
    # (the probability-flow ODE's endpoint from (x, σ), Song et al. 2023: distilled students)
    model: str = "denoiser"

    def __call__(self, denoiser: Denoiser, x: torch.Tensor, sigmas, *, generator: Generators = None,
                 callback: Callback | None = None, **options) -> torch.Tensor:
        return self.fn(denoiser, x, sigmas, generator=generator, callback=callback, **options)

    def nfe(self, steps: int) -> int:
        """Denoiser calls for a run of this many steps."""
        return self.calls_per_step * (steps - 1) + 1


_KARRAS = "Karras et al. 2022, Elucidating the Design Space (EDM), Algorithm 2"
_DPMPP = "Lu et al. 2022, DPM-Solver++"
SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("ddpm", ddpm, 1, True, 1, "Ho et al. 2020, DDPM, Algorithm 2 (σ_t² = β̃_t)", ode_options=None),
        Sampler("ddim", ddim, 1, False, 1, "Song et al. 2021, DDIM, eq. 12 (η = 0)"),
        Sampler("euler", euler, 1, False, 1, _KARRAS + " without correction"),
        Sampler("euler_ancestral", euler_ancestral, 1, True, 1, "Karras et al. 2022 / k-diffusion, Euler ancestral",
                {"eta": 0.0}),
        Sampler("heun", heun, 2, False, 2, _KARRAS),
        Sampler("dpmpp_2m", dpmpp_2m, 2, False, 1, _DPMPP + ", Algorithm 2 (2M)"),
        Sampler("dpmpp_2m_sde", dpmpp_2m_sde, 2, True, 1, _DPMPP + ", §5 (SDE-DPM-Solver++ 2M)", {"eta": 0.0}),
        Sampler("dpmpp_3m_sde", dpmpp_3m_sde, 3, True, 1, _DPMPP + ", App. B (3M), SDE form", {"eta": 0.0}),
        Sampler("unipc", unipc, 3, False, 1, "Zhao et al. 2023, UniPC (UniP-2 + UniC)"),
        # no ODE form (each step re-noises), so no order to measure; 1 is the registry's floor
        Sampler("consistency", consistency, 1, True, 1, "Song et al. 2023, Consistency Models, Algorithm 1 (multistep)",
                ode_options=None, model="consistency"),
    )
}


def available() -> list[str]:
    return list(SAMPLERS)


def get_sampler(name: str) -> Sampler:
    """SAMPLERS[name], or UnknownSamplerError naming the choices (and the nearest name).  Other names
    ("Euler a", "DPM++ 2M Karras") are resolved at the edge by names.resolve_sampler, not here."""
    if not isinstance(name, str) or name not in SAMPLERS:
        from .names import resolve_sampler

        canonical, spacing = resolve_sampler(name)  # raises for a name that is nothing known
        also = f" on the {spacing} spacing" if spacing else ""
        raise UnknownSamplerError(f"sampler {name!r} goes by {canonical!r}{also} in the registry")
    return SAMPLERS[name]


def seeded_generators(seeds, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per seed, e.g. seeded_generators(range(seed, seed + k)) for k images."""
    out = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seeds must be integers, got {seed!r}")
        out.append(torch.Generator(device=device).manual_seed(seed))
    return out


def sample(
    denoiser: Denoiser,
    shape,
    *,
    schedule: Schedule,
    steps: int,
    sampler: str = "dpmpp_2m",
    spacing: str | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> torch.Tensor:
    """Paint x0 of the given shape (B, …) from noise: sigmas = schedule.sigmas(steps, spacing),
    x = noise·σ_0 with sample b's noise from generator b, then SAMPLERS[sampler]."""
    entry = get_sampler(sampler)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a unnoise.schedules.Schedule, got {type(schedule).__name__}")
    shape = tuple(shape)
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise SamplingError(f"shape must be a tuple of positive integers (B, …), got {shape}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    sigmas = schedule.sigmas(steps, spacing)  # (steps + 1,) float64, last 0
    gen = check_generators(generator, shape[0])
    x = randn_like(torch.empty(shape, dtype=dtype, device=device), gen) * float(sigmas[0])
    return entry(denoiser, x, sigmas, generator=gen, callback=callback, **options)
