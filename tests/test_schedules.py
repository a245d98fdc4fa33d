"""Schedules: laws that must hold for every schedule, and agreement with diffusers' DDPMScheduler."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unnoise import schedules
from unnoise.schedules import ScheduleError

BASE = list(schedules.NAMES)
ALL = schedules.available()
TIMESTEP_SPACINGS = ["leading", "linspace", "trailing"]


@pytest.mark.parametrize("name", BASE)
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(name):
    ab = schedules.get(name).alphas_cumprod
    assert ab.dtype == torch.float64 and ab.shape == (1000,)
    assert bool((ab > 0).all()) and bool((ab <= 1).all())
    assert bool((ab[1:] < ab[:-1]).all())
    assert ab[0] > 0.99 and ab[-1] < 0.01  # ≈ all signal … ≈ all static


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=25, deadline=None)
@given(num_steps=st.integers(2, 4000))
def test_signal_squared_plus_noise_squared_is_one(name, num_steps):
    s = schedules.get(name, num_steps)
    total = s.signal**2 + s.noise**2
    assert torch.allclose(total, torch.ones_like(total), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ALL)
def test_sigma_alpha_round_trip(name):
    s = schedules.get(name)
    sig = s.train_sigmas[:-1] if s.zero_terminal_snr else s.train_sigmas
    ab = s.alphas_cumprod[: len(sig)]
    assert torch.allclose(1.0 / (1.0 + sig**2), ab, rtol=1e-12, atol=0)
    assert torch.allclose(s.log_snr[: len(sig)], -2 * sig.log(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=40, deadline=None)
@given(t=st.floats(0, 999))
def test_t_sigma_round_trip(name, t):
    s = schedules.get(name)
    sigma = s.t_to_sigma(torch.tensor([t], dtype=torch.float64))
    back = s.sigma_to_t(sigma)
    assert abs(back.item() - t) < 1e-6


@pytest.mark.parametrize("name", ALL)
def test_grid_sigmas_map_to_integer_steps(name):
    s = schedules.get(name)
    t = s.sigma_to_t(s.inference_sigmas)
    assert torch.allclose(t, torch.arange(1000, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize(
    "name,diffusers_name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid")]
)
def test_matches_diffusers_ddpm_scheduler(name, diffusers_name):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=diffusers_name)
    ours = schedules.get(name)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod.double(), rtol=0, atol=1e-6)

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 8, 8, generator=g)
    noise = torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    # diffusers works in float32: sqrt(1 − ᾱ) at t ≈ 0 loses ~3 digits to cancellation (1 − 0.9999), and its
    # float32 cumprod drifts ~1e-4 relative by t = 999.  Both shift x_t by up to ~4e-6, so x_t is compared at
    # 1e-5; ᾱ itself (above) and our x_t against the float64 formula (test_diffusion.py) hold to 1e-6.
    assert torch.allclose(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=0, atol=1e-5)


def test_zero_terminal_snr_matches_diffusers_rescale():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_schedule="linear", rescale_betas_zero_snr=True)
    ours = schedules.get("linear+ztsnr")
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", BASE)
def test_zero_terminal_snr(name):
    plain, zt = schedules.get(name), schedules.get(name, zero_terminal_snr=True)
    assert zt.alphas_cumprod[-1].item() == 0.0
    assert zt.alphas_cumprod[0].item() == plain.alphas_cumprod[0].item()
    assert bool((zt.alphas_cumprod[1:] < zt.alphas_cumprod[:-1]).all())
    assert zt.snr[-1].item() == 0.0
    assert math.isfinite(zt.sigma_max) and zt.sigma_max > 1000  # inference caps the infinite σ
    assert schedules.get(name + "+ztsnr").name == zt.name


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("spacing", schedules.SPACINGS)
@settings(max_examples=15, deadline=None)
@given(steps=st.integers(1, 1000))
def test_every_spacing_descends_and_ends_at_exact_zero(name, spacing, steps):
    s = schedules.get(name)
    sig = s.sigmas(steps, spacing)  # every spacing places any 1 ≤ steps ≤ T distinct steps
    assert sig.shape == (steps + 1,) and sig.dtype == torch.float64
    assert sig[-1].item() == 0.0
    assert bool((sig[:-1] > sig[1:]).all())
    assert bool(torch.isfinite(sig).all())
    assert sig[0] <= s.sigma_max * (1 + 1e-12) and sig[-2] >= s.sigma_min * (1 - 1e-12)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=15, deadline=None)
@given(steps=st.integers(1, 200), where=st.floats(0.0, 0.999))
def test_last_sigma_spacing_ends_its_calls_at_s_uniformly_in_log_sigma(name, steps, where):
    s = schedules.get(name)
    last = math.exp(math.log(s.sigma_min) + where * (math.log(s.sigma_max) - math.log(s.sigma_min)))
    sig = s.sigmas(steps, f"log_snr@{last!r}")
    assert sig.shape == (steps + 1,) and sig[-1].item() == 0.0 and bool((sig[:-1] > sig[1:]).all())
    assert sig[0].item() == pytest.approx(s.sigma_max, rel=1e-12)
    if steps > 1:
        assert sig[-2].item() == pytest.approx(last, rel=1e-12)
        gaps = sig[:-1].log().diff()
        assert torch.allclose(gaps, gaps[:1].expand_as(gaps), rtol=1e-9, atol=1e-12)
    assert schedules.check_spacing(f"log_snr@{last!r}") == f"log_snr@{last!r}"


def test_last_sigma_spacing_refuses_bad_numbers_and_sigmas_outside_the_schedule():
    s = schedules.get("linear")
    for bad in ("log_snr@", "log_snr@x", "log_snr@-1", "log_snr@0", "log_snr@nan", "log_snr@inf", "log_snr@ 1"):
        with pytest.raises(ScheduleError, match="after 'log_snr@' comes the last σ"):
            schedules.check_spacing(bad)
    with pytest.raises(ScheduleError, match="unknown spacing 'log_snr_to'.*log_snr@S"):
        schedules.check_spacing("log_snr_to")
    assert [schedules.check_spacing(n) for n in schedules.SPACINGS] == list(schedules.SPACINGS)
    for outside in (s.sigma_max, s.sigma_max * 2, s.sigma_min / 2):
        with pytest.raises(ScheduleError, match="the last σ must lie in"):
            s.sigmas(4, f"log_snr@{outside}")
    assert s.sigmas(4, "log_snr@0.5")[:-1].tolist() == pytest.approx(
        torch.linspace(math.log(s.sigma_max), math.log(0.5), 4, dtype=torch.float64).exp().tolist(), rel=1e-12)


@pytest.mark.parametrize("steps", [1, 10, 50, 1000])
def test_timestep_spacings_match_diffusers(steps):
    diffusers = pytest.importorskip("diffusers")
    s = schedules.get("linear")
    for spacing in TIMESTEP_SPACINGS:
        ref = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=0)
        ref.set_timesteps(steps)
        assert s.timesteps(steps, spacing).tolist() == ref.timesteps.tolist(), spacing


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
def test_timestep_spacings_place_every_count_up_to_T(spacing):
    s = schedules.get("linear")
    for steps in range(1, 1001):  # e.g. trailing at 233 once produced 234 steps (floating-point arange)
        ts = s.timesteps(steps, spacing)
        assert len(ts) == steps and bool((ts[:-1] > ts[1:]).all()) and 0 <= int(ts[-1]) and int(ts[0]) <= 999


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=10, deadline=None)
@given(steps=st.integers(1, 1000))
def test_log_snr_trailing_is_log_snr_one_step_longer_without_sigma_min(name, steps):
    s = schedules.get(name)
    sig, longer = s.sigmas(steps, "log_snr_trailing"), s.sigmas(steps + 1, "log_snr")
    assert torch.equal(sig[:-1], longer[:-2]) and sig[-1] == 0  # the same points; the call at σ_min is gone
    log_sig = sig[:-1].log()
    if steps > 1:  # every step spans the same log-SNR, and so does the dropped one below the last call
        gaps = log_sig[:-1] - log_sig[1:]
        assert torch.allclose(gaps, gaps[0].expand_as(gaps), rtol=1e-9, atol=0)
        assert math.isclose(gaps[0].item(), log_sig[-1].item() - math.log(s.sigma_min), rel_tol=1e-9)
    else:
        assert math.isclose(sig[0].item(), s.sigma_max, rel_tol=1e-12)


def test_default_sigmas_contract():
    s = schedules.get("linear", num_steps=1000)
    sig = s.sigmas(20)
    assert sig.shape == (21,) and sig[-1] == 0 and bool((sig[:-1] > sig[1:]).all())
    assert torch.equal(sig, s.sigmas(20, schedules.DEFAULT_SPACING))


def test_crossing_step_is_where_signal_equals_noise():
    s = schedules.get("cosine")
    tc = s.crossing_step()
    t = int(math.floor(tc))
    assert s.signal[t] >= s.noise[t] and s.signal[t + 1] <= s.noise[t + 1]


@pytest.mark.parametrize(
    "call",
    [
        lambda: schedules.get("nope"),
        lambda: schedules.get("linear", -5),
        lambda: schedules.get("linear", 10**9),
        lambda: schedules.get("linear", 1.5),
        lambda: schedules.get("linear", beta_start=0.5, beta_end=0.1),
        lambda: schedules.get("linear").sigmas(0),
        lambda: schedules.get("linear").sigmas(-1),
        lambda: schedules.get("linear").sigmas(10**9),
        lambda: schedules.get("linear").sigmas(10, "bogus"),
        lambda: schedules.get("linear").sigmas(1001, "leading"),
    ],
)
def test_bad_arguments_raise_schedule_error(call):
    with pytest.raises(ScheduleError):
        call()
