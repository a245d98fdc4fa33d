"""Training speed of other UNet shapes at about the default preset's FLOPs per image.

    python benchmarks/unet_shapes.py                 # all shapes, 1-channel 32×32, batch 64, fp32 channels_last
    python benchmarks/unet_shapes.py p4-160 p2-nox0  # some of them (the default is always measured)

The question behind it (docs/model.md, "Training throughput against diffusers"): at equal FLOPs, does a
shape with fewer, wider convolutions at lower resolution train faster per FLOP than the default — enough
to move `benchmarks/train_throughput.py`'s ratio?  Each shape trains (forward + MSE + backward + AdamW) on
the same random data and text condition as that benchmark; timed steps alternate between the shapes, so a
busy machine slows all alike; each figure is the median over the timed steps.  The last column is each
shape's FLOP rate over the default's (the factor it would bring to the ratio line).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch

from train_throughput import flops_per_image, make_trainee, params
from unnoise.models import UNetConfig


def shapes() -> dict[str, UNetConfig]:
    """The default and variants of about its FLOPs (1.45–1.79 GFLOP/image fwd + bwd)."""
    d = UNetConfig.default().replace(in_channels=1, out_channels=1)
    return {
        "default": d,  # patch 2, widths 64/128/128 at 16², 8², 4²
        "p2-nox0": d.replace(cross_attention_levels=(1, 2)),  # no text cross-attention at 16×16
        "p4-128-256": d.replace(patch_size=4, base_channels=128, channel_mults=(1, 2), attention_levels=(0, 1),
                                cross_attention_levels=(0, 1), norm_groups=32),  # 128/256 at 8², 4²
        "p4-128x3": d.replace(patch_size=4, base_channels=128, channel_mults=(1, 2, 2), norm_groups=32),  # 8², 4², 2²
        "p4-160": d.replace(patch_size=4, base_channels=160, channel_mults=(1, 1), attention_levels=(0, 1),
                            cross_attention_levels=(0, 1), norm_groups=32),  # 160/160 at 8², 4²
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help=f"shapes to measure besides the default: {', '.join(shapes())}")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    table = shapes()
    unknown = sorted(set(args.names) - set(table))
    if unknown:
        ap.error(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    names = ["default"] + [n for n in (args.names or table) if n != "default"]
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, fp32 channels_last, "
          f"load average {os.getloadavg()[0]:.2f} at start")

    trainees, flops = {}, {}
    for name in names:
        probe = make_trainee("ours", table[name], "fp32", 2, 1)
        flops[name] = flops_per_image(probe.step, 2)
        trainees[name] = make_trainee("ours", table[name], "fp32-cl", args.batch, 1)
        print(f"{name:>11}: {params(probe.model) / 1e6:5.2f}M params, {flops[name] / 1e9:.3f} GFLOP/image (fwd+bwd)")
    times = {name: [] for name in names}
    for it in range(args.warmup + args.iters):
        for name in names:  # alternate, so all see the same machine
            t0 = time.perf_counter()
            trainees[name].step()
            if it >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    rate = {n: args.batch / statistics.median(times[n]) * flops[n] / 1e9 for n in names}
    print(f"\n{'shape':>11} {'img/s':>7} {'GFLOP/s':>8} {'× default':>10}")
    for n in names:
        img_s = args.batch / statistics.median(times[n])
        print(f"{n:>11} {img_s:>7.1f} {rate[n]:>8.1f} {rate[n] / rate['default']:>10.2f}")


if __name__ == "__main__":
    main()
