"""The numeric defects of issue 29 item 8, measured: exact Gaussian ground truth in float64 (no network),
and for the progressive grid a real teacher.

Sections (unipc, sde3, rescale by default, or name some: python benchmarks/numerics.py unipc sde3):
  unipc  RMS error of unipc against the exact probability-flow endpoint on Gaussian data
         N(0.1, 0.5²), linear schedule, spacing log_snr, for variant None (every order condition
         solved exactly) and the reference's "bh1"/"bh2" (½ for UniP-2 and UniC-1).
  sde3   dpmpp_3m_sde (η = 1) at 10 steps on Gaussian data N(0.1, 0.5²): the output's std over the
         exact ground truth's (the data std, 0.5), spacings log_snr and karras, with and without the
         order-3 step where h = λ_{i+1} − λ_i > ORDER_3_MAX_H (order 2 there).  Median over seeds.
  rescale  classifier-free guidance on two exact Gaussian "conditions" per coordinate (cond N(0.3, 0.5²);
         uncond N(0, 0.3²), where guidance inflates the spread, or N(0, 0.8²), where it shrinks it),
         w = 5, rescale φ = 0.7 in each rescale_space, dpmpp_2m, 20 steps: the samples' std and mean.
  progressive  (only when named; --teacher DIR|NAME, default digits: about 5 minutes) a progressive
         student distilled 32 → 4 steps on log_snr, painted with ddim at 4 steps on the nested grid it
         trained on (now exported) and on log_snr's own 4-step grid (exported before), against the
         teacher's 50-step dpmpp_2m images: path and stats errors as in unnoise.distill.measure.
Every section prints a table and "ratio:" lines against its peer measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

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
    print(f"\nODE form (η = 0), {steps} steps: RMS error vs the exact flow endpoint, before → after")
    for spacing in ("log_snr", "karras"):
        sig = LINEAR.sigmas(steps, spacing)
        x = torch.randn(1, points, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * float(sig[0])
        exact = DATA.flow_endpoint(x, float(sig[0]))
        before, after = (rms(SAMPLERS["dpmpp_3m_sde"](DATA.denoiser, x, sig, eta=0.0, **o), exact)
                         for o in ({"order3_max_h": math.inf}, {}))
        print(f"ratio: dpmpp_3m_sde ODE error at {steps} steps, {spacing}: {before:.2e} → {after:.2e}, after/before "
              f"{after / before:.3f}")


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


def save_rows(rows: list[torch.Tensor], path: str) -> None:
    """Rows of (N, C, H, W) images in [−1, 1] → one PNG, a row each."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)  # (C, rows·H, N·W)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).squeeze(-1).numpy()
    Image.fromarray(arr).save(path)


def progressive_section(points: int, teacher: str = "digits", max_steps: int = 120, w: float = 3.0,
                        images: str | None = None) -> None:
    import tempfile

    from unnoise.distill import DistillConfig, Distiller
    from unnoise.distill.measure import errors
    from unnoise.generation import generate
    from unnoise.sampling import seeded_generators

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        cfg = DistillConfig(teacher=teacher, out=out + "/run", method="progressive", steps=4, ode_steps=32,
                            spacing="log_snr", max_steps=max_steps, batch_size=16, lr=5e-4, threads=1,
                            checkpoint_every=max_steps, log_every=max_steps, warmup_steps=max_steps // 10)
        d = Distiller(cfg, quiet=True)
        shape = (d.info.channels, d.info.image_size, d.info.image_size)
        prompts = list(dict.fromkeys(d.info.example_prompts or d.dataset.captions))[:2]
        seeds = [s for _ in prompts for s in range(16)]
        cond = d.encoder.encode([p for p in prompts for _ in range(16)])
        ref = generate(d.teacher, d.schedule, d.prediction_type, cond, d.encoder.encode([""] * len(seeds)),
                       shape=shape, seeds=seeds, steps=50, guidance=w, sampler="dpmpp_2m", spacing="log_snr")
        start = time.perf_counter()
        model_dir = d.run()
        wall = time.perf_counter() - start
        stored = json.loads((model_dir / "unnoise.json").read_text())["defaults"]["spacing"]
        student = d.ema_student()
        grids = {f"nested, stored as {stored} (now)": d.sigmas[::8], "log_snr 4 steps (before)": d.schedule.sigmas(4, "log_snr")}
        print(f"## progressive student, {teacher}, 32 → 4 steps in {d.rounds} rounds, {max_steps} steps ({wall:.0f} s), "
              f"ddim 4 steps, w = {w}, {len(prompts)} prompts × 16 seeds\n")
        print("| grid | σ | path | stats |")
        print("|---|---|---:|---:|")
        result = {}
        for name, sig in grids.items():
            x = torch.stack([torch.randn(shape, generator=g) for g in seeded_generators(seeds)]) * float(sig[0])
            imgs = generate(student, d.schedule, d.prediction_type, cond, None, shape=shape, seeds=seeds, guidance=w,
                            sampler="ddim", x_init=x, sigmas=sig)
            result[name] = errors(imgs, ref, len(prompts))
            print(f"| {name} | {', '.join(f'{v:.3g}' for v in sig.tolist())} | {result[name]['path']:.3f} | "
                  f"{result[name]['stats']:.3f} |")
            result[name]["imgs"] = imgs
        if images:  # rows: teacher 50 steps, student on the nested grid, student on log_snr's; 8 seeds of prompt 1
            save_rows([ref[:8]] + [r["imgs"][:8] for r in result.values()], images)
            print(f"\nimages: {images} (rows: teacher 50 steps, nested grid, log_snr grid)")
        now, before = result.values()
        print(f"\nratio: path error on the trained (nested) grid / on log_snr's 4-step grid: {now['path'] / before['path']:.3f}")
        print(f"ratio: stats error on the trained (nested) grid / on log_snr's 4-step grid: {now['stats'] / before['stats']:.3f}")


SECTIONS = {"unipc": unipc_section, "sde3": sde3_section, "rescale": rescale_section}
SLOW = {"progressive": progressive_section}  # run only when named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", choices=[[]] + list(SECTIONS) + list(SLOW), default=[])
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--teacher", default="digits", help="progressive: the teacher model (bundled name or DIR)")
    parser.add_argument("--max-steps", type=int, default=120, help="progressive: distillation steps")
    parser.add_argument("--images", default=None, help="progressive: save the painted rows to this PNG")
    args = parser.parse_args()
    for name in args.sections or list(SECTIONS):
        if name in SLOW:
            SLOW[name](args.points, teacher=args.teacher, max_steps=args.max_steps, images=args.images)
        else:
            SECTIONS[name](args.points)
        print()


if __name__ == "__main__":
    main()
