"""Which inference spacing gives the lowest solver error?  (picks schedules.DEFAULT_SPACING)

For each schedule, toy problem, solver, step count and spacing, two RMS errors of the output x0 for
the start x = z·σ_0 (z ~ N(0, I), the same z for every run):
  * solver error: against the exact probability-flow endpoint from that same start;
  * end-to-end error: against the ideal sample for that noise, T(z), the limit of the probability-flow
    map from σ = ∞ (in 1-D the monotone transport z ↦ F⁻¹(Φ(z)), F the data CDF).  It also charges a
    spacing for starting at a lower σ_0 than the schedule's σ_max ("leading") or ending far above 0.
Problems (exact denoisers, sampling/toys.py):
  * gaussian: x0 ~ N(0.1, 0.5²): endpoint μ + s/sqrt(s² + σ_0²)·(x − μ), T(z) = μ + s·z;
  * mixture:  x0 ~ 0.3·N(−0.6, 0.1²) + 0.7·N(0.5, 0.25²): endpoint from scipy's DOP853 (rtol 1e-11)
    on dx/dλ = D(x, e^−λ) − x, λ = −log σ, down to σ = 1e-6; T(z) by bisection on F.
DEFAULT_SPACING is the spacing with the lowest geometric-mean end-to-end error.
Run: python benchmarks/spacings.py [--points 2048] [--schedules linear cosine]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from unnoise import schedules
from unnoise.sampling import SAMPLERS
from unnoise.sampling.toys import GaussianData, GaussianMixture

SOLVERS = ("euler", "heun", "dpmpp_2m", "unipc")
STEPS = (5, 10, 20, 50)
GAUSSIAN = GaussianData(mean=0.1, std=0.5)
MIXTURE = GaussianMixture()


def mixture_endpoint(x: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """Independent high-accuracy reference for the mixture's probability-flow endpoint."""
    sigma_end = 1e-6

    def rhs(lam, y):
        xt = torch.from_numpy(y).view(1, -1)
        sigma = torch.full((1,), math.exp(-lam), dtype=torch.float64)
        return (MIXTURE.denoiser(xt, sigma) - xt).view(-1).numpy()

    sol = solve_ivp(rhs, (-math.log(sigma_max), -math.log(sigma_end)), x.view(-1).numpy(), method="DOP853",
                    rtol=1e-11, atol=1e-12)
    end = torch.from_numpy(sol.y[:, -1]).view(1, -1)
    return MIXTURE.denoiser(end, torch.full((1,), sigma_end, dtype=torch.float64)).view(x.shape)


def mixture_transport(z: torch.Tensor) -> torch.Tensor:
    """T(z) = F⁻¹(Φ(z)) for the mixture, by bisection (float64, to ~1e-15)."""
    u = torch.special.ndtr(z)
    lo, hi = torch.full_like(z, -5.0), torch.full_like(z, 5.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        cdf = sum(w * torch.special.ndtr((mid - m) / s) for w, m, s in zip(MIXTURE.weights, MIXTURE.means, MIXTURE.stds))
        below = cdf < u
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def measure(schedule, points: int) -> tuple[dict, dict]:
    """(solver errors, end-to-end errors), each keyed by (problem, solver, steps, spacing)."""
    noise = torch.randn(1, points, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ideal = {"gaussian": GAUSSIAN.mean + GAUSSIAN.std * noise, "mixture": mixture_transport(noise)}
    references: dict = {}
    errors, end_to_end = {}, {}
    for problem, data in (("gaussian", GAUSSIAN), ("mixture", MIXTURE)):
        for steps in STEPS:
            for spacing in schedules.SPACINGS:
                sigmas = schedule.sigmas(steps, spacing)
                sigma_max = float(sigmas[0])
                x = noise * sigma_max
                if problem == "gaussian":
                    exact = GAUSSIAN.flow_endpoint(x, sigma_max)
                else:
                    if sigma_max not in references:
                        references[sigma_max] = mixture_endpoint(x, sigma_max)
                    exact = references[sigma_max]
                for solver in SOLVERS:
                    out = SAMPLERS[solver](data.denoiser, x, sigmas)
                    errors[problem, solver, steps, spacing] = float((out - exact).pow(2).mean().sqrt())
                    end_to_end[problem, solver, steps, spacing] = float((out - ideal[problem]).pow(2).mean().sqrt())
    return errors, end_to_end


def report(name: str, what: str, errors: dict) -> dict:
    """Print one table per problem; return the geometric-mean error of each spacing."""
    spacings = schedules.SPACINGS
    overall = {}
    for problem in ("gaussian", "mixture"):
        print(f"\n### {name}, {problem}: {what} (RMS; best per row marked *)\n")
        print("| solver | steps | " + " | ".join(spacings) + " |")
        print("|---|---:|" + "---:|" * len(spacings))
        for solver in SOLVERS:
            for steps in STEPS:
                row = [errors[problem, solver, steps, sp] for sp in spacings]
                best = min(row)
                cells = [f"{e:.2e}" + ("*" if e == best else "") for e in row]
                print(f"| {solver} | {steps} | " + " | ".join(cells) + " |")
    print(f"\n### {name}: {what}, geometric mean over solvers × steps\n")
    print("| problem | " + " | ".join(spacings) + " |")
    print("|---|" + "---:|" * len(spacings))
    for problem in ("gaussian", "mixture", "both"):
        probs = ("gaussian", "mixture") if problem == "both" else (problem,)
        means = []
        for sp in spacings:
            logs = [math.log(errors[p, s, n, sp]) for p in probs for s in SOLVERS for n in STEPS]
            means.append(math.exp(float(np.mean(logs))))
        if problem == "both":
            overall = dict(zip(spacings, means))
        print(f"| {problem} | " + " | ".join(f"{m:.2e}" for m in means) + " |")
    return overall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2048, help="independent starting points per run")
    parser.add_argument("--schedules", nargs="+", default=["linear", "cosine"])
    args = parser.parse_args()
    print(f"default spacing now: {schedules.DEFAULT_SPACING}; solvers {', '.join(SOLVERS)}; steps {STEPS}")
    totals: dict = {}
    for name in args.schedules:
        solver_errors, end_to_end = measure(schedules.get(name), args.points)
        for what, errors in (("solver error", solver_errors), ("end-to-end error", end_to_end)):
            for sp, value in report(name, what, errors).items():
                totals.setdefault(what, {})[sp] = totals.get(what, {}).get(sp, 1.0) * value ** (1 / len(args.schedules))
    print("\n## Summary: geometric mean over schedules, problems, solvers and steps\n")
    for what, by_spacing in totals.items():
        ranked = sorted(by_spacing.items(), key=lambda kv: kv[1])
        print(f"{what}: " + ", ".join(f"{sp} {v:.2e}" for sp, v in ranked))
    print(f"lowest end-to-end error: {min(totals['end-to-end error'], key=totals['end-to-end error'].get)}")


if __name__ == "__main__":
    main()
