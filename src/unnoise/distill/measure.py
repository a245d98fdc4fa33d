"""The measurement behind docs/distill.md: consistency vs progressive distillation on equal budgets.

    python -m unnoise.distill.measure --teacher DIR [--data FOLDER] --max-steps 300 --out /tmp/measure

For each method: distil the teacher for the same number of optimiser steps and batch size, then
compare the student's K-step samples (K = 1, 2, 4) with the teacher's 50-step dpmpp_2m samples at the
same guidance scale, prompts and seeds — before (the student at initialisation, i.e. the teacher's
conditional network sampled the student's way) and after.  Two errors, both RMS over pixels in [−1, 1]:
  path  — against the teacher's image from the same start noise (how well the ODE map is learnt);
  stats — of the per-prompt mean image and per-pixel std over seeds (whether the distribution is right,
          which is what multistep consistency sampling, re-noising with fresh noise, aims at for K > 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..sampling import seeded_generators
from .config import DistillConfig
from .loop import Distiller

KS = (1, 2, 4)


def errors(student: torch.Tensor, teacher: torch.Tensor, prompts: int) -> dict[str, float]:
    """path and stats errors of (P·S, C, H, W) samples, prompt-major."""
    path = float((student - teacher).pow(2).mean().sqrt())
    s, t = student.unflatten(0, (prompts, -1)), teacher.unflatten(0, (prompts, -1))  # (P, S, C, H, W)
    mean_err = (s.mean(1) - t.mean(1)).pow(2).mean()
    std_err = (s.std(1) - t.std(1)).pow(2).mean()
    return {"path": path, "stats": float((mean_err + std_err).sqrt())}


def student_samples(d: Distiller, model, sampler: str, k: int, cond, seeds: list[int], w: float) -> torch.Tensor:
    """K-step samples of a student network (w as an input) on the grid its method trains for."""
    from ..generation import generate

    if d.cfg.method == "progressive":  # its own nested grid: every (N/K)-th point of the N-step grid
        sigmas = d.sigmas[:: d.cfg.ode_steps // k]
    else:
        sigmas = d.schedule.sigmas(k, d.cfg.spacing)
    x = torch.stack([torch.randn(d.shape, generator=g) for g in seeded_generators(seeds)]) * float(sigmas[0])
    return generate(model, d.schedule, d.prediction_type, cond, None, shape=d.shape, seeds=seeds, guidance=w,
                    sampler=sampler, x_init=x, sigmas=sigmas)


def measure(teacher: str, out: Path, data: str | None, max_steps: int, batch_size: int, lr: float,
            seeds_per_prompt: int = 16, w: float = 3.0, ode_steps: int = 32) -> dict:
    from ..generation import generate

    results: dict = {}
    for method in ("consistency", "progressive"):
        steps = 1 if method == "progressive" else 4
        cfg = DistillConfig(teacher=teacher, out=str(out / method), data=data, method=method, steps=steps,
                            max_steps=max_steps, batch_size=batch_size, lr=lr, ode_steps=ode_steps, threads=1,
                            checkpoint_every=max_steps, log_every=max(1, max_steps // 10), warmup_steps=max_steps // 10)
        d = Distiller(cfg, quiet=True)
        prompts = list(dict.fromkeys(d.info.example_prompts or d.dataset.captions))[:4]
        rows = [p for p in prompts for _ in range(seeds_per_prompt)]
        seeds = [s for _ in prompts for s in range(seeds_per_prompt)]
        cond = d.encoder.encode(rows)
        if "reference" not in results:
            ref = generate(d.teacher, d.schedule, d.prediction_type, cond, d.encoder.encode([""] * len(rows)),
                           shape=d.shape, seeds=seeds, steps=50, guidance=w, sampler="dpmpp_2m", spacing=cfg.spacing)
            results["reference"] = "teacher, dpmpp_2m, 50 steps"
        sampler = "consistency" if method == "consistency" else "ddim"
        before = {k: errors(student_samples(d, d.student, sampler, k, cond, seeds, w), ref, len(prompts)) for k in KS}
        start = time.perf_counter()
        d.run()
        wall = time.perf_counter() - start
        student = d.ema_student()
        # progressive has distilled down to 1 step; its K-step students are the earlier rounds' (not kept),
        # so evaluate the final student at every K on its nested grid
        after = {k: errors(student_samples(d, student, sampler, k, cond, seeds, w), ref, len(prompts)) for k in KS}
        results[method] = {"wall_s": round(wall, 1), "before": before, "after": after}
    return results


def table(results: dict) -> str:
    lines = ["| method | wall s | K | path before | path after | stats before | stats after |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for method in ("consistency", "progressive"):
        r = results[method]
        for k in KS:
            b, a = r["before"][k], r["after"][k]
            lines.append(f"| {method} | {r['wall_s']} | {k} | {b['path']:.3f} | {a['path']:.3f} | "
                         f"{b['stats']:.3f} | {a['stats']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = measure(args.teacher, args.out, args.data, args.max_steps, args.batch_size, args.lr)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
