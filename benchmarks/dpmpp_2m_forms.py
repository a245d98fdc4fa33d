"""DPM-Solver++(2M) has one implementation, `sampling.dpm_solver.dpmpp_2m_pieces`: the registered `dpmpp_2m`
runs it on a whole grid, distillation (`distill.grids.ode_segment`) on pieces of grids.  Before, the sampler
was the shared multistep loop of the SDE and 3M variants (`dpmpp_2m_sde` with η = 0 still is); this measures
what the change moved, on the same float32 denoiser and start noise.

    PYTHONPATH=src python benchmarks/dpmpp_2m_forms.py

For each spacing, the 16-step grid to σ = 0: the largest difference of the two end points, and its ratio to
float32's spacing at 1 (2⁻²³); then the wall time of both forms (median of 50 runs of a cheap denoiser, so the
solver's own arithmetic is what is timed).  docs/architecture.md quotes the output.
"""

from __future__ import annotations

import statistics
import time

import torch

from unnoise import schedules
from unnoise.sampling.dpm_solver import dpmpp_2m, dpmpp_2m_sde

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
        a, b = dpmpp_2m(denoiser, x, grid), dpmpp_2m_sde(denoiser, x, grid, eta=0.0)
        diff = float((a - b).abs().max())
        same = torch.equal(a, b)
        print(f"{spacing:18s} max|dpmpp_2m − the shared loop at η = 0| = {diff:.3g}  bit-identical: {same}")
        print(f"ratio: {diff / ULP:.2f} float32 ulps at 1 ({spacing})")
    grid = schedule.sigmas(20, "leading").tolist()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * grid[0]
    cheap = lambda x, sigma: x * 0.5  # noqa: E731
    times: dict[str, list[float]] = {"pieces": [], "shared loop": []}
    for _ in range(50):
        for name, fn in (("pieces", dpmpp_2m), ("shared loop", lambda d, x, g: dpmpp_2m_sde(d, x, g, eta=0.0))):
            t = time.perf_counter()
            fn(cheap, x, grid)
            times[name].append(time.perf_counter() - t)
    pieces, shared = (statistics.median(times[k]) * 1e3 for k in ("pieces", "shared loop"))
    print(f"20 steps, batch 2 × 3 × 32 × 32, solver arithmetic only: pieces {pieces:.2f} ms, "
          f"shared loop {shared:.2f} ms")
    print(f"ratio: {shared / pieces:.2f} (shared loop / pieces)")


if __name__ == "__main__":
    main()
