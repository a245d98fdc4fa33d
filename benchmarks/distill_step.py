"""Seconds per trajectory-distillation step against `--reuse R`, and the step rate as a ratio to R = 1.

A real `Distiller` on a bundled teacher (the run directory is a temporary one; nothing is written
but the config), the student's K = 4 grid, N = 20 teacher steps per run, batch 32 — the settings of
the runs in docs/distill.md.  Each R: a few warm-up steps (R + 2, so the window is full), then the
median of timed `train_step()` calls, taken one R after another in the same run.
Run: python benchmarks/distill_step.py [--teacher digits] [--reuse 1 2 4] [--steps 24] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from unnoise.distill.config import DistillConfig
from unnoise.distill.loop import Distiller


def seconds_per_step(teacher: str, reuse: int, steps: int, threads: int, out: str) -> float:
    cfg = DistillConfig(teacher=teacher, out=out, method="trajectory", steps=4, ode_steps=20, weighting="uniform",
                        reuse=reuse, threads=threads, max_steps=10_000)
    d = Distiller(cfg, quiet=True)
    for _ in range(reuse + 2):
        d.train_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        d.train_step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="digits")
    parser.add_argument("--reuse", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=24, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in args.reuse:
            results[r] = seconds_per_step(args.teacher, r, args.steps, args.threads, f"{tmp}/r{r}")
            print(f"reuse {r}: {results[r]:.3f} s/step (median of {args.steps})", flush=True)
    base = results.get(1)
    if base is not None:
        for r, t in results.items():
            print(f"reuse {r}: ratio {base / t:.2f} steps per hour against reuse 1")


if __name__ == "__main__":
    main()
