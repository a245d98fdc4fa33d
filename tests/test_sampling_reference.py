"""ddpm, ddim, dpmpp_2m and unipc (variant bh1/bh2) against diffusers' schedulers on identical inputs (diffusers: test-only oracle).

Both sides run the same network, the exact ε-predictor for Gaussian data as a function of (x_t, t) on
diffusers' own float32 ᾱ table; ours sees it through DiscreteDenoiser.  Conventions matched:
* start: diffusers starts from x_T ~ N(0, I) in the DDPM view, ours in the σ view, x = x_T/sqrt(ᾱ_{t_0});
* σ list: ours is σ(t) of diffusers' timesteps, then 0 — diffusers' last step goes to ᾱ = 1
  (DDIM set_alpha_to_one=True, DDPM's "prev_t < 0 → 1", DPM-Solver final_sigmas_type="zero");
* DDIM/DDPM step from t to t − T//N, so their σ list is only consistent when that is the next
  timestep: "leading" spacing always, "trailing" when N divides T ("linspace" never: diffusers' DDIM
  then evaluates the net at one t and steps from another);
* clip_sample=False (diffusers' DDPM/DDIM default is True: x̂0 clipped to [−1, 1]; ours never clips);
* DDPM's variance "fixed_small" is β̃_t = DDIM's σ_t(η = 1)²; noise: the same torch.Generator seed
  drawing the same (B, …) float64 tensors in the same order (no draw on the last step);
* DPM-Solver++(2M): default settings, "midpoint" form, lower_order_final (1st order into σ = 0);
* UniPC: diffusers' UniPCMultistepScheduler (order 2, data prediction) is the reference's update, ours
  with ``variant="bh1"|"bh2"``; with bh1 its last step into σ = 0 computes B(h)·0 = −∞·0 = NaN, so the
  comparison there is of the corrected sample at σ_{N−1}, whose x̂0 is the output.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)

from unnoise.denoisers import DiscreteDenoiser  # noqa: E402
from unnoise.sampling import SAMPLERS  # noqa: E402
from unnoise.sampling.toys import GaussianData  # noqa: E402
from unnoise.schedules import Schedule  # noqa: E402

DATA = GaussianData(mean=0.2, std=0.5)
# diffusers' own numpy-2 deprecation notice, not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SHAPE = (2, 3, 4, 4)


def our_schedule(scheduler) -> Schedule:
    """diffusers' own ᾱ table (float32 → float64), so both sides see the same noise levels."""
    return Schedule("diffusers", scheduler.betas.double(), scheduler.alphas_cumprod.double())


def exact_eps_network(alphas_cumprod: torch.Tensor):
    """model(x_t, t, cond) → ε̂ for integer t on the grid (asserted: the adapter must hit it exactly)."""

    def model(x_t, t, cond=None):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x_t.shape[0])
        assert torch.allclose(t, t.round(), atol=1e-6), f"off-grid timestep {t}"
        return DATA.ddpm_output(x_t, alphas_cumprod.double()[t.round().long()], "epsilon")

    return model


def run_diffusers(scheduler, steps: int, x_t: torch.Tensor, seed: int | None, **step_kwargs) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    model = exact_eps_network(scheduler.alphas_cumprod)
    if seed is not None:  # only the stochastic schedulers take one (UniPC's step() refuses it)
        step_kwargs["generator"] = torch.Generator().manual_seed(seed)
    sample = x_t * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(sample, t), t)
        sample = scheduler.step(eps, t, sample, **step_kwargs).prev_sample
    return sample


def run_ours(scheduler, name: str, x_t: torch.Tensor, seed: int | None, **options) -> torch.Tensor:
    schedule = our_schedule(scheduler)
    ts = scheduler.timesteps
    sigmas = torch.cat([schedule.inference_sigmas[ts], torch.zeros(1, dtype=torch.float64)])
    denoiser = DiscreteDenoiser(exact_eps_network(scheduler.alphas_cumprod), schedule, "epsilon")
    x = x_t / schedule.alphas_cumprod[ts[0]].sqrt()  # DDPM view → σ view
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return SAMPLERS[name](denoiser, x, sigmas, generator=generator, **options)


def start(seed=0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("spacing, steps", [("leading", 10), ("leading", 50), ("trailing", 20)])
def test_ddpm_matches_diffusers_ddpm_scheduler(spacing, steps):
    scheduler = DDPMScheduler(clip_sample=False, timestep_spacing=spacing)
    theirs = run_diffusers(scheduler, steps, start(), seed=7)
    ours = run_ours(scheduler, "ddpm", start(), seed=7)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # and the noise mattered: another seed gives another image
    assert not torch.allclose(ours, run_ours(scheduler, "ddpm", start(), seed=8), atol=1e-3)


@pytest.mark.parametrize("spacing, steps", [("leading", 10), ("leading", 50), ("trailing", 20)])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers_ddim_scheduler(spacing, steps, eta):
    scheduler = DDIMScheduler(clip_sample=False, timestep_spacing=spacing)
    theirs = run_diffusers(scheduler, steps, start(1), seed=3, eta=eta)
    ours = run_ours(scheduler, "ddim", start(1), seed=3, eta=eta)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [5, 10, 25])
def test_dpmpp_2m_matches_diffusers_dpm_solver_multistep(steps):
    scheduler = DPMSolverMultistepScheduler()  # defaults: dpmsolver++, order 2, midpoint, linspace, zero
    theirs = run_diffusers(scheduler, steps, start(2), seed=None)
    ours = run_ours(scheduler, "dpmpp_2m", start(2), seed=None)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # the comparison has teeth: first-order DDIM on the same σ list is far off at these step counts
    assert not torch.allclose(run_ours(scheduler, "ddim", start(2), seed=None), theirs, atol=1e-3)


@pytest.mark.parametrize("steps", [5, 10, 25])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [2, 3])
def test_unipc_variants_match_diffusers_unipc_multistep(steps, variant, order):
    scheduler = UniPCMultistepScheduler(solver_type=variant, solver_order=order)  # linspace, zero, lower_order_final
    theirs = run_diffusers(scheduler, steps, start(4), seed=None)
    last = {}
    ours = run_ours(scheduler, "unipc", start(4), seed=None, variant=variant, order=order,
                    callback=lambda info: last.update(x=info.x / (1 + info.sigma**2) ** 0.5))  # → DDPM view
    # the corrected sample at σ_{N−1} (diffusers keeps it as last_sample), then the output where finite
    torch.testing.assert_close(last["x"], scheduler.last_sample.double(), rtol=1e-5, atol=1e-5)
    if variant == "bh2":
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # teeth: the exact solve (variant=None) and the other variant are measurably elsewhere
    exact = {}
    run_ours(scheduler, "unipc", start(4), seed=None, order=order,
             callback=lambda info: exact.update(x=info.x / (1 + info.sigma**2) ** 0.5))
    assert (exact["x"] - last["x"]).abs().max() > 1e-3
