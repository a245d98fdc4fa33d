"""Global error vs NFE for every sampler, with diffusers' DPMSolverMultistepScheduler as the peer.

Problem: Gaussian data x0 ~ N(0.1, 0.5²) per coordinate, exact denoiser, linear schedule (β 1e-4 → 0.02,
T = 1000), start x = z·σ_0 for a fixed z.  NFE = denoiser calls (Heun: 2 per step, 1 on the last, so
it gets the most steps with 2·steps − 1 ≤ NFE; the NFE actually used is shown when it differs).
  * deterministic samplers: RMS error against the exact probability-flow endpoint from the same start,
    μ + s/sqrt(s² + σ_0²)·(x − μ);
  * every sampler, second table: W2 distance of the output to N(μ, s²), sqrt((mean − μ)² + (std − s)²)
    (the only fair measure for stochastic samplers, which do not follow the ODE).
Peer: DPMSolverMultistepScheduler() with its defaults (DPM-Solver++ 2M, linspace timesteps, final σ 0),
driven by the exact ε-network of the same data on its own ᾱ table, from x_T = z (DDPM view).
Run: python benchmarks/samplers.py [--points 4096] [--spacing NAME]
"""

from __future__ import annotations

import argparse
import math
import warnings

import torch

from unnoise import schedules
from unnoise.sampling import SAMPLERS
from unnoise.sampling.toys import GaussianData

NFES = (5, 10, 20, 50)
DATA = GaussianData(mean=0.1, std=0.5)


def steps_for(name: str, nfe: int) -> int:
    entry = SAMPLERS[name]
    return max(n for n in range(1, nfe + 1) if entry.nfe(n) <= nfe)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def w2_to_data(x: torch.Tensor) -> float:
    return math.hypot(float(x.mean()) - DATA.mean, float(x.std()) - DATA.std)


def peer_error(steps: int, z: torch.Tensor) -> float:
    """diffusers' DPM-Solver++(2M) with default settings on the same problem."""
    from diffusers import DPMSolverMultistepScheduler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = DPMSolverMultistepScheduler()
        scheduler.set_timesteps(steps)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    sample = z.clone()
    for t in scheduler.timesteps:
        eps = DATA.ddpm_output(sample, alphas_cumprod[t].view(1), "epsilon")
        sample = scheduler.step(eps, t, sample).prev_sample
    ab0 = alphas_cumprod[scheduler.timesteps[0]]
    sigma_0 = float(((1 - ab0) / ab0).sqrt())
    return rms(sample, DATA.flow_endpoint(z / ab0.sqrt(), sigma_0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=4096, help="independent coordinates for the ODE error")
    parser.add_argument("--w2-points", type=int, default=65536, help="coordinates for the W2 table")
    parser.add_argument("--spacing", default=None, help=f"default: schedules.DEFAULT_SPACING ({schedules.DEFAULT_SPACING})")
    args = parser.parse_args()
    spacing = args.spacing or schedules.DEFAULT_SPACING
    schedule = schedules.get("linear")
    z = torch.randn(1, args.points, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z_w2 = torch.randn(1, args.w2_points, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    ode, w2 = {}, {}
    for name, entry in SAMPLERS.items():
        for nfe in NFES:
            steps = steps_for(name, nfe)
            sigmas = schedule.sigmas(steps, spacing)
            sigma_0 = float(sigmas[0])
            if not entry.stochastic:
                out = entry(DATA.denoiser, z * sigma_0, sigmas)
                ode[name, nfe] = (rms(out, DATA.flow_endpoint(z * sigma_0, sigma_0)), entry.nfe(steps))
            out = entry(DATA.denoiser, z_w2 * sigma_0, sigmas, generator=torch.Generator().manual_seed(2))
            w2[name, nfe] = (w2_to_data(out), entry.nfe(steps))
    peer = {nfe: (peer_error(nfe, z), nfe) for nfe in NFES}

    def row(label: str, cells: dict) -> str:
        parts = [f"{err:.2e}" + ("" if used == nfe else f" ({used})") for nfe in NFES for err, used in [cells[nfe]]]
        return f"| {label} | " + " | ".join(parts) + " |"

    header = "| sampler | " + " | ".join(f"NFE {n}" for n in NFES) + " |\n|---|" + "---:|" * len(NFES)
    print(f"## RMS error vs the exact probability-flow endpoint (linear schedule, spacing {spacing!r})\n")
    print(header)
    for name, entry in SAMPLERS.items():
        if not entry.stochastic:
            print(row(name, {nfe: ode[name, nfe] for nfe in NFES}))
    print(row("diffusers DPMSolverMultistep (peer)", peer))
    print(f"\n## W2 distance of the samples to N({DATA.mean}, {DATA.std}²), {args.w2_points} coordinates "
          f"(Monte Carlo floor ≈ {DATA.std / math.sqrt(2 * args.w2_points):.0e})\n")
    print(header)
    for name in SAMPLERS:
        print(row(name, {nfe: w2[name, nfe] for nfe in NFES}))
    ratio = ode["dpmpp_2m", 10][0] / peer[10][0]
    print(f"\nratio at 10 NFE, our dpmpp_2m ({spacing}) / diffusers DPMSolverMultistep: {ratio:.3f} (goal ≤ 0.5)")


if __name__ == "__main__":
    main()
