"""Why distillation keeps its own DPM-Solver++(2M) step (distill/grids.py:ode_segment), measured against the
registered sampler (sampling/dpm_solver.py:dpmpp_2m) on the same float32 denoiser and start noise.

    PYTHONPATH=src python benchmarks/ode_segment_vs_dpmpp_2m.py

For each spacing, the 16-step grid to σ = 0: the largest difference of the two end points, and its ratio to
float32's spacing at 1 (2⁻²³); then what dpmpp_2m says to a piece of a grid that ends at σ > 0 (the pieces
trajectory distillation solves).  docs/architecture.md quotes the output.
"""

from __future__ import annotations

import torch

from unnoise import schedules
from unnoise.distill.grids import ode_segment
from unnoise.sampling import SamplingError
from unnoise.sampling.dpm_solver import dpmpp_2m

ULP = 2.0**-23


def main() -> None:
    torch.manual_seed(0)
    weights = torch.randn(3, 3) * 0.3

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # a smooth, non-linear x̂0 in float32
        s = sigma.view(-1, 1)
        return torch.tanh((x @ weights) / (1 + s) + 0.1 * x / (1 + s * s))

    schedule = schedules.get("linear", 1000)
    for spacing in ("log_snr", "log_snr_trailing", "karras", "trailing"):
        grid = schedule.sigmas(16, spacing).tolist()
        x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * grid[0]
        a, b = ode_segment(denoiser, x, grid), dpmpp_2m(denoiser, x, grid)
        diff = float((a - b).abs().max())
        print(f"{spacing:18s} max|ode_segment − dpmpp_2m| = {diff:.3g}  bit-identical: {torch.equal(a, b)}")
        print(f"ratio: {diff / ULP:.2f} float32 ulps at 1 ({spacing})")
    piece = schedule.sigmas(16, "log_snr").tolist()[:6]
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * piece[0]
    try:
        dpmpp_2m(denoiser, x, piece)
    except SamplingError as e:
        print(f"dpmpp_2m on a piece ending at σ = {piece[-1]:.3g}: {e}")


if __name__ == "__main__":
    main()
