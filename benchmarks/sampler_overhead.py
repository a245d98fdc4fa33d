"""Per-step sampler overhead (everything but the network) vs one forward pass of the UNet, 32×32.

Overhead: a 50-step run with a free denoiser (returns a fixed tensor) divided by the steps, so it counts
the loop, the σ bookkeeping, the update arithmetic on (B, 3, 32, 32), noise draws and UniPC's solves.
Adapter and guidance overhead: DiscreteDenoiser around a free model (returns its input) and CFGDenoiser
(one batch of 2B, text-shaped condition) around a free denoiser, per call.
Network: unnoise.models.UNet with its default config (or, if that module is missing, a stand-in conv
net of similar cost), eval mode, text condition of 8 tokens, batch B.  All times are medians of
repeats taken in the same run; the machine's other load moves both sides alike.
Run: python benchmarks/sampler_overhead.py [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from unnoise import schedules
from unnoise.conditioning.guidance import CFGDenoiser
from unnoise.denoisers import DiscreteDenoiser
from unnoise.sampling import SAMPLERS

BATCHES = (1, 4, 8)
STEPS = 50


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def network() -> tuple[str, nn.Module]:
    try:
        from unnoise.models import UNet, UNetConfig

        return "unnoise.models.UNet(UNetConfig())", UNet(UNetConfig()).eval()
    except ImportError:
        width = 128  # stand-in: conv stack of UNet-like cost at 32×32 and 16×16
        body = [nn.Conv2d(3, width, 3, padding=1)] + [nn.Sequential(nn.GroupNorm(32, width), nn.SiLU(),
                                                                    nn.Conv2d(width, width, 3, padding=1))
                                                      for _ in range(8)] + [nn.Conv2d(width, 3, 3, padding=1)]
        stand_in = nn.Sequential(*body).eval()
        return "stand-in conv net (10 convs, 128 channels)", lambda x, t, cond: stand_in(x)


def text_condition(batch: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"tokens": torch.randn(batch, 8, 384, generator=g), "mask": torch.ones(batch, 8, dtype=torch.bool),
            "pooled": torch.randn(batch, 384, generator=g)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared machine more threads make timings erratic)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    schedule = schedules.get("linear")
    sigmas = schedule.sigmas(STEPS)
    name, net = network()
    print(f"network: {name}; torch threads: {torch.get_num_threads()}; {STEPS} steps, median of {args.repeats}\n")

    forward, overhead, extra = {}, {}, {}
    for batch in BATCHES:
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        t = torch.full((batch,), 500.0)
        cond = text_condition(batch)
        forward[batch] = median_seconds(lambda: net(x, t, cond), args.repeats)
        fixed = x * 0.5

        def free(x_, sigma_):
            return fixed

        for sampler, entry in SAMPLERS.items():
            gen = torch.Generator().manual_seed(0)
            total = median_seconds(lambda: entry(free, x * 80, sigmas, generator=gen), args.repeats)
            overhead[sampler, batch] = total / STEPS
        adapter = DiscreteDenoiser(lambda x_t, t_, c: x_t, schedule, "epsilon")
        sigma = torch.full((batch,), 3.0)
        extra["DiscreteDenoiser (per call)", batch] = median_seconds(lambda: adapter(x, sigma, cond), args.repeats * 20)
        guided = CFGDenoiser(lambda x_, s_, c: x_, cond, text_condition(1), 5.0, rescale=0.7)
        extra["CFGDenoiser w=5, rescale 0.7 (per call)", batch] = median_seconds(lambda: guided(x, sigma), args.repeats * 20)

    print("| per step | " + " | ".join(f"B={b}: µs (% of forward)" for b in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    print("| network forward | " + " | ".join(f"{forward[b] * 1e6:,.0f} (100%)" for b in BATCHES) + " |")
    for label, table in (*((s, overhead) for s in SAMPLERS), *((k, extra) for k in dict.fromkeys(k for k, _ in extra))):
        cells = [f"{table[label, b] * 1e6:,.0f} ({100 * table[label, b] / forward[b]:.2f}%)" for b in BATCHES]
        print(f"| {label} | " + " | ".join(cells) + " |")
    worst = max(overhead[s, b] / forward[b] for s in SAMPLERS for b in BATCHES)
    print(f"\nlargest sampler overhead: {100 * worst:.2f}% of one forward pass")


if __name__ == "__main__":
    main()
