"""DiscreteDenoiser: ε/v/x0 networks on the DDPM grid → the σ-view denoiser, on and off the grid."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unnoise import schedules
from unnoise.denoisers import DenoiserError, DiscreteDenoiser
from unnoise.diffusion import PREDICTION_TYPES
from unnoise.sampling import sample, seeded_generators
from unnoise.sampling.toys import GaussianData

DATA = GaussianData(mean=-0.1, std=0.7)
LINEAR = schedules.get("linear")
COSINE = schedules.get("cosine")


def grid_network(schedule, prediction_type, seen=None):
    """The exact network for DATA, defined only at integer t (asserted)."""

    def model(x_t, t, cond):
        if seen is not None:
            seen.append((x_t, t, cond))
        assert torch.equal(t, t.round()), f"off-grid t {t}"
        return DATA.ddpm_output(x_t, schedule.alphas_cumprod[t.long().cpu()], prediction_type)

    return model


def continuous_network(schedule, prediction_type):
    """The exact network for DATA reading a fractional t as the noise level σ(t) = t_to_sigma(t)."""

    def model(x_t, t, cond):
        sigma = schedule.t_to_sigma(t.double().cpu())
        return DATA.ddpm_output(x_t, 1.0 / (1.0 + sigma**2), prediction_type)

    return model


def x_batch(batch=3, seed=0, dtype=torch.float64):
    return torch.randn(batch, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_on_the_grid_it_is_the_discrete_ddpm_formula(prediction_type, schedule):
    ts = torch.tensor([0, 1, 517, schedule.num_steps - 1])
    seen = []
    denoiser = DiscreteDenoiser(grid_network(schedule, prediction_type, seen), schedule, prediction_type)
    x = x_batch(4)
    got = denoiser(x, schedule.inference_sigmas[ts])
    x_t, t, _ = seen[0]
    ab = schedule.alphas_cumprod[ts].view(-1, 1, 1)
    # the network saw exactly x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε = sqrt(ᾱ_t)·x at exactly t
    torch.testing.assert_close(x_t, ab.sqrt() * x, rtol=1e-13, atol=1e-13)
    assert torch.equal(t, ts.double())
    out = DATA.ddpm_output(x_t, ab.view(-1), prediction_type)
    if prediction_type == "epsilon":  # Ho et al. 2020, eq. 15
        expected = (x_t - (1 - ab).sqrt() * out) / ab.sqrt()
    elif prediction_type == "v_prediction":  # Salimans & Ho 2022, §4
        expected = ab.sqrt() * x_t - (1 - ab).sqrt() * out
    else:
        expected = out
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, DATA.denoiser(x, schedule.inference_sigmas[ts]), rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(log_sigma=st.floats(math.log(LINEAR.sigma_min), math.log(LINEAR.sigma_max)),
       prediction_type=st.sampled_from(PREDICTION_TYPES))
def test_off_the_grid_an_exact_network_stays_exact(log_sigma, prediction_type):
    denoiser = DiscreteDenoiser(continuous_network(LINEAR, prediction_type), LINEAR, prediction_type)
    sigma = torch.full((3,), math.exp(log_sigma), dtype=torch.float64)
    x = x_batch()
    torch.testing.assert_close(denoiser(x, sigma), DATA.denoiser(x, sigma), rtol=1e-9, atol=1e-9)


def test_off_the_grid_t_is_the_log_sigma_interpolant():
    seen = []
    denoiser = DiscreteDenoiser(lambda x_t, t, c: seen.append(t) or x_t, LINEAR, "sample")
    lo, hi = LINEAR.inference_sigmas[300], LINEAR.inference_sigmas[301]
    mid = (lo.log() * 0.75 + hi.log() * 0.25).exp()
    denoiser(x_batch(1), mid.view(1))
    assert seen[0].dtype == torch.float64
    torch.testing.assert_close(seen[0], torch.tensor([300.25], dtype=torch.float64))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_sigma_zero_returns_x_and_sigma_beyond_the_grid_clamps_t(prediction_type):
    seen = []
    model = grid_network(LINEAR, prediction_type, seen)
    denoiser = DiscreteDenoiser(model, LINEAR, prediction_type)
    x = x_batch(2)
    torch.testing.assert_close(denoiser(x, torch.zeros(2, dtype=torch.float64)), x, rtol=0, atol=1e-15)
    denoiser(x, torch.tensor([1e6, 0.0], dtype=torch.float64))
    assert seen[-1][1].tolist() == [LINEAR.num_steps - 1, 0]


def test_float32_in_float32_out_and_condition_passed_through():
    seen = []
    denoiser = DiscreteDenoiser(grid_network(LINEAR, "epsilon", None), LINEAR)
    spy = DiscreteDenoiser(lambda x_t, t, c: seen.append((t, c)) or torch.zeros_like(x_t), LINEAR)
    x = x_batch(2, dtype=torch.float32)
    cond = {"tokens": torch.ones(2, 5, 4)}
    spy(x, torch.tensor([1.0, 2.0]), cond)
    assert seen[0][1] is cond and seen[0][0].dtype == torch.float32
    sigma = LINEAR.inference_sigmas[[10, 900]].float()
    out = DiscreteDenoiser(continuous_network(LINEAR, "epsilon"), LINEAR)(x, sigma)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, DATA.denoiser(x.double(), sigma.double()).float(), rtol=1e-5, atol=1e-5)
    assert denoiser.prediction_type == "epsilon"


def test_zero_terminal_snr_refuses_epsilon_and_samples_well_with_v():
    ztsnr = schedules.get("linear+ztsnr")
    with pytest.raises(DenoiserError, match="v_prediction"):
        DiscreteDenoiser(grid_network(ztsnr, "epsilon"), ztsnr, "epsilon")

    def v_network(x_t, t, cond):  # exact, and at t = T − 1 fed ᾱ = 0 exactly, as in training
        sigma = ztsnr.t_to_sigma(t.double())
        ab = torch.where(t >= ztsnr.num_steps - 1, torch.zeros_like(sigma), 1.0 / (1.0 + sigma**2))
        return DATA.ddpm_output(x_t, ab, "v_prediction")

    denoiser = DiscreteDenoiser(v_network, ztsnr, "v_prediction")
    top = torch.full((3,), ztsnr.sigma_max, dtype=torch.float64)
    x = x_batch() * ztsnr.sigma_max
    # at σ_max (thousands) the image is gone; x̂0 must fall back to (nearly) the data mean, not blow up
    assert float((denoiser(x, top) - DATA.mean).abs().max()) < 1e-3
    out = sample(denoiser, (1, 20_000), schedule=ztsnr, steps=30, sampler="dpmpp_2m", spacing="trailing",
                 generator=seeded_generators([0]), dtype=torch.float64)
    assert abs(float(out.mean()) - DATA.mean) < 0.02 and abs(float(out.std()) - DATA.std) < 0.02


def test_bad_arguments_are_refused():
    model = grid_network(LINEAR, "epsilon")
    with pytest.raises(DenoiserError, match="prediction type"):
        DiscreteDenoiser(model, LINEAR, "score")
    with pytest.raises(TypeError, match="callable"):
        DiscreteDenoiser("unet", LINEAR)
    with pytest.raises(TypeError, match="Schedule"):
        DiscreteDenoiser(model, "linear")
    denoiser = DiscreteDenoiser(model, LINEAR)
    with pytest.raises(DenoiserError, match=r"shape \(3,\)"):
        denoiser(x_batch(), torch.ones(2))
    with pytest.raises(DenoiserError, match="non-negative"):
        denoiser(x_batch(), -torch.ones(3))
    with pytest.raises(DenoiserError, match="model returned"):
        DiscreteDenoiser(lambda x_t, t, c: x_t[:1], LINEAR)(x_batch(), torch.ones(3))
