"""The numeric defects of issue 29 item 8, measured against exact ground truth (float64, no network).

Sections (all by default, or name some: python benchmarks/numerics.py unipc sde3):
  unipc  RMS error of unipc against the exact probability-flow endpoint on Gaussian data
         N(0.1, 0.5²), linear schedule, spacing log_snr, for variant None (every order condition
         solved exactly) and the reference's "bh1"/"bh2" (½ for UniP-2 and UniC-1).
  sde3   dpmpp_3m_sde (η = 1) at 10 steps on Gaussian data N(0.1, 0.5²): the output's std over the
         exact ground truth's (the data std, 0.5), spacings log_snr and karras, with and without the
         order-3 step where h = λ_{i+1} − λ_i > ORDER_3_MAX_H (order 2 there).  Median over seeds.
  rescale  classifier-free guidance on two exact Gaussian "conditions" per coordinate (cond N(0.3, 0.5²);
         uncond N(0, 0.3²), where guidance inflates the spread, or N(0, 0.8²), where it shrinks it),
         w = 5, rescale φ = 0.7 in each rescale_space, dpmpp_2m, 20 steps: the samples' std and mean.
Every section prints a table and "ratio:" lines against its peer measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from unnoise import schedules
from unnoise.sampling import SAMPLERS
from unnoise.sampling.toys import GaussianData

DATA = GaussianData(mean=0.1, std=0.5)
LINEAR = schedules.get("linear")


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def unipc_section(points: int) -> None:
    steps_list = (5, 10, 20, 50)
    x = torch.randn(1, points, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    print("## unipc: RMS error vs the exact flow endpoint (linear, log_snr, Gaussian N(0.1, 0.5²))\n")
    print("| variant | " + " | ".join(f"{n} steps" for n in steps_list) + " |")
    print("|---|" + "---:|" * len(steps_list))
    errors = {}
    for variant in (None, "bh1", "bh2"):
        row = []
        for n in steps_list:
            sig = LINEAR.sigmas(n, "log_snr")
            start = x * float(sig[0])
            out = SAMPLERS["unipc"](DATA.denoiser, start, sig, variant=variant)
            row.append(rms(out, DATA.flow_endpoint(start, float(sig[0]))))
        errors[variant] = row
        print(f"| {variant} | " + " | ".join(f"{e:.2e}" for e in row) + " |")
    print()
    for variant in ("bh1", "bh2"):
        for n, e, ref in zip(steps_list, errors[variant], errors[None]):
            print(f"ratio: unipc variant={variant} / variant=None error at {n} steps: {e / ref:.3f}")


def sde3_section(points: int, steps: int = 10, seeds: int = 7) -> None:
    from unnoise.sampling.dpm_solver import ORDER_3_MAX_H

    print(f"## dpmpp_3m_sde (η = 1), {steps} steps: output std / data std (exact: 1), median of {seeds} seeds, "
          f"{points} coordinates\n")
    print(f"| spacing | order 3 everywhere (before) | order 2 where h > {ORDER_3_MAX_H} (now) | dpmpp_2m_sde (peer) |")
    print("|---|---:|---:|---:|")
    results = {}
    for spacing in ("log_snr", "karras"):
        sig = LINEAR.sigmas(steps, spacing)
        cells = []
        for name, options in (("dpmpp_3m_sde", {"order3_max_h": math.inf}), ("dpmpp_3m_sde", {}), ("dpmpp_2m_sde", {})):
            ratios = []
            for seed in range(seeds):
                g = torch.Generator().manual_seed(seed)
                x = torch.randn(1, points, generator=g, dtype=torch.float64) * float(sig[0])
                out = SAMPLERS[name](DATA.denoiser, x, sig, generator=g, **options)
                ratios.append(float(out.std()) / DATA.std)
            cells.append(statistics.median(ratios))
        results[spacing] = cells
        print(f"| {spacing} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print()
    for spacing, (before, after, peer) in results.items():
        print(f"ratio: dpmpp_3m_sde std/exact at {steps} steps, {spacing}: before {before:.3f}, after {after:.3f}, "
              f"dpmpp_2m_sde {peer:.3f}; after/before {after / before:.3f}")


def rescale_section(points: int, steps: int = 20, w: float = 5.0, phi: float = 0.7) -> None:
    from unnoise.conditioning.guidance import RESCALE_SPACES, CFGDenoiser

    cond_data = GaussianData(mean=0.3, std=0.5)
    sig = LINEAR.sigmas(steps, "log_snr")
    x = torch.randn(4, points, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * float(sig[0])
    for uncond_data in (GaussianData(mean=0.0, std=0.3), GaussianData(mean=0.0, std=0.8)):

        def net(x, sigma, cond, uncond_data=uncond_data):  # the exact x̂0 of either "prompt"; cond: (N,) flags
            flag = cond.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
            return flag * cond_data.denoiser(x, sigma) + (1 - flag) * uncond_data.denoiser(x, sigma)

        print(f"## guidance rescale: w = {w}, φ = {phi}, dpmpp_2m {steps} steps, cond N(0.3, 0.5²), "
              f"uncond N(0, {uncond_data.std}²)\n")
        print("| rescale_space | std / cond std | mean (cond 0.3) |")
        print("|---|---:|---:|")
        stds = {}
        for space in ("none",) + RESCALE_SPACES:
            guided = CFGDenoiser(net, torch.ones(4), torch.zeros(4), w, rescale=0.0 if space == "none" else phi,
                                 rescale_space="x0" if space == "none" else space)
            out = SAMPLERS["dpmpp_2m"](guided, x, sig)
            stds[space] = statistics.median(float(r.std()) for r in out) / cond_data.std
            print(f"| {space} | {stds[space]:.3f} | {float(out.mean()):.3f} |")
        print()
        for space in RESCALE_SPACES:
            print(f"ratio: uncond std {uncond_data.std}: std/cond std with rescale in {space} / without: "
                  f"{stds[space] / stds['none']:.3f}")
        print()


SECTIONS = {"unipc": unipc_section, "sde3": sde3_section, "rescale": rescale_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", choices=[[]] + list(SECTIONS), default=[])
    parser.add_argument("--points", type=int, default=4096)
    args = parser.parse_args()
    for name in args.sections or list(SECTIONS):
        SECTIONS[name](args.points)
        print()


if __name__ == "__main__":
    main()
