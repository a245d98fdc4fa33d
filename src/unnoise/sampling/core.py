"""What every sampler shares: argument checks, per-sample noise, the step callback, and the one
first-order step that Euler, DDIM and DPM-Solver-1 all are.

Notation (σ view, Karras et al. 2022): x = x0 + σ·ε, D(x, σ) ≈ E[x0 | x] is the denoiser, and
λ = −log σ is half the log-SNR (DPM-Solver's λ_t = log(α_t/σ_t) with α = 1 in this view).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UnnoiseError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[["StepInfo"], Any]


class SamplingError(UnnoiseError, ValueError):
    """A sampler was called with bad arguments."""


class SamplingCancelled(Exception):
    """Sampling was stopped by the step callback (it returned False or raised this).

    ``step`` is the index of the step whose callback stopped it and ``denoised`` the x̂0 estimate
    seen there (B, …), so a caller can show the last preview instead of nothing.
    """

    def __init__(self, message: str = "sampling cancelled", *, step: int | None = None, denoised=None):
        super().__init__(message)
        self.step = step
        self.denoised = denoised


@dataclass(frozen=True)
class StepInfo:
    """What the callback sees once per step (attribute or ``info["x"]`` access)."""

    i: int  # step index, 0 … steps − 1
    steps: int  # number of steps in this run
    sigma: float  # σ_i, the noise level of x
    sigma_next: float  # σ_{i+1}, where this step lands (0 on the last step)
    x: torch.Tensor  # (B, …) the sample at σ_i; never modified in place afterwards
    denoised: torch.Tensor  # (B, …) x̂0 = D(x, σ_i)

    def __getitem__(self, key: str):
        return getattr(self, key)


def check_sigmas(sigmas) -> list[float]:
    """σ_0 > σ_1 > … > σ_N = 0, finite, as Python floats (the step arithmetic is scalar float64)."""
    sig = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if sig.ndim != 1 or sig.shape[0] < 2:
        raise SamplingError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sig.shape)}")
    if not bool(torch.isfinite(sig).all()):
        raise SamplingError("sigmas must be finite")
    if bool((sig < 0).any()):
        raise SamplingError("sigmas must be non-negative")
    if not bool((sig[:-1] > sig[1:]).all()):
        raise SamplingError("sigmas must be strictly descending")
    if sig[-1] != 0:
        raise SamplingError(f"sigmas must end in exactly 0 (got {float(sig[-1])!r})")
    return sig.tolist()


def check_generators(generator: Generators, batch: int) -> torch.Generator | list[torch.Generator]:
    """One generator for the whole batch, or one per sample (seed k → the same image in any batch)."""
    if generator is None:
        # never the global RNG: a fresh, OS-seeded generator for this run
        fresh = torch.Generator()
        fresh.seed()
        return fresh
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch:
            raise SamplingError(f"got {len(generator)} generators for a batch of {batch}")
        return list(generator)
    raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")


def randn_like(x: torch.Tensor, generator: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like x (B, …); sample b comes from generator b when given a list."""
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device) for g in generator]
    )


@dataclass
class Run:
    """One sampler invocation's validated inputs; holds no history (that stays in the sampler's locals)."""

    denoiser: Denoiser
    sigmas: list[float]  # σ_0 … σ_N, σ_N = 0
    generator: torch.Generator | list[torch.Generator]
    callback: Callback | None

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(x, σ) with σ broadcast to shape (B,) in x's dtype (so it never up-casts x)."""
        sigma_b = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        denoised = self.denoiser(x, sigma_b)
        if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
            got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
            raise SamplingError(f"denoiser returned {got}, expected a tensor of shape {tuple(x.shape)}")
        return denoised

    def observe(self, i: int, x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """x̂0 = D(x, σ) at σ = σ_i (or the given σ, e.g. Karras' churned σ̂_i), reported to the callback."""
        sigma = self.sigmas[i] if sigma is None else sigma
        denoised = self.denoise(x, sigma)
        self.report(i, x, denoised, sigma)
        return denoised

    def report(self, i: int, x: torch.Tensor, denoised: torch.Tensor, sigma: float | None = None) -> None:
        """Hand step i to the callback; raises SamplingCancelled if the callback says stop."""
        if self.callback is None:
            return
        sigma = self.sigmas[i] if sigma is None else sigma
        info = StepInfo(i, self.steps, sigma, self.sigmas[i + 1], x, denoised)
        try:
            keep_going = self.callback(info)
        except SamplingCancelled as stop:
            if stop.step is None:
                stop.step, stop.denoised = i, denoised
            raise
        if keep_going is False:
            raise SamplingCancelled(f"cancelled by the callback at step {i}", step=i, denoised=denoised)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        return randn_like(x, self.generator)


def start(denoiser: Denoiser, x: torch.Tensor, sigmas, generator: Generators, callback: Callback | None) -> Run:
    """Validate a sampler's arguments (shared contract of every entry in SAMPLERS)."""
    if not callable(denoiser):
        raise TypeError("denoiser must be callable as denoiser(x, sigma)")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError("x must be a floating-point tensor")
    if x.ndim < 1 or x.shape[0] < 1:
        raise SamplingError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    return Run(denoiser, check_sigmas(sigmas), check_generators(generator, x.shape[0]), callback)


def check_eta(eta: float) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise SamplingError(f"eta must be a finite number ≥ 0, got {eta!r}")
    return float(eta)


def phi_functions(z: float, n: int) -> list[float]:
    """[φ_1(z), …, φ_n(z)], φ_k(z) = Σ_j z^j/(j + k)! (exponential-integrator weights; Hochbruck &
    Ostermann 2010), so that ∫_0^h e^{−(h−τ)} τ^{k−1}/(k−1)! dτ = h^k·φ_k(−h).  A series near 0, where
    the recursion φ_{k+1}(z) = (φ_k(z) − 1/k!)/z would cancel, the recursion elsewhere."""
    if abs(z) < 1.0:
        return [sum(z**j / math.factorial(j + k) for j in range(20)) for k in range(1, n + 1)]
    out = [math.expm1(z) / z]
    for k in range(1, n):
        out.append((out[-1] - 1.0 / math.factorial(k)) / z)
    return out


def lambdas(sigmas: list[float]) -> list[float]:
    """λ_i = −log σ_i (half log-SNR in the σ view), +inf at σ = 0."""
    return [-math.log(s) if s > 0 else math.inf for s in sigmas]


def toward(denoised: torch.Tensor, x: torch.Tensor, keep: float | torch.Tensor) -> torch.Tensor:
    """x_next = x̂0 + keep·(x − x̂0): the exponential-integrator step (DDIM, Song et al. 2021, eq. 12;
    DPM-Solver-1 / DPM-Solver++(1), Lu et al. 2022) that keeps the fraction ``keep`` of the distance
    to x̂0.  With keep = σ_next/σ it is also exactly Euler's step on the probability-flow ODE
    dx/dσ = (x − x̂0)/σ; written this way, keep = 0 lands on x̂0 bit for bit."""
    return denoised + keep * (x - denoised)
