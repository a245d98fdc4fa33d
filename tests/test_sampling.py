"""Every sampler in the registry against ground truth: exact Gaussian and single-point data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unnoise import schedules
from unnoise.sampling import (
    SAMPLERS,
    SamplingCancelled,
    SamplingError,
    UnknownSamplerError,
    get_sampler,
    sample,
    seeded_generators,
)
from unnoise.sampling.toys import GaussianData

NAMES = list(SAMPLERS)
DATA = GaussianData(mean=0.3, std=0.6)
LINEAR = schedules.get("linear")


def edm_sigmas(steps: int, sigma_max=80.0, sigma_min=1e-4, rho=7.0) -> torch.Tensor:
    """Karras et al. 2022 eq. 5, with a σ_min small enough that the final jump to 0 costs nothing
    next to the solver's own error (the last step's error is O(σ_min²) for every sampler)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sig = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


def start_noise(shape, seed=0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- the registry ---------------------------------------------------------------------------------
def test_registry_names_and_metadata():
    required = {"ddpm", "ddim", "euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "unipc"}
    assert required <= set(SAMPLERS)
    for name, entry in SAMPLERS.items():
        assert entry.name == name and entry.order >= 1 and entry.calls_per_step >= 1 and entry.paper
        assert entry.stochastic or entry.ode_options == {}
        assert entry.model in ("denoiser", "consistency")
    assert SAMPLERS["heun"].nfe(10) == 19 and SAMPLERS["dpmpp_2m"].nfe(10) == 10


def test_unknown_sampler_name_lists_the_choices():
    with pytest.raises(UnknownSamplerError, match="dpmpp_2m") as err:
        get_sampler("dpm++")
    assert isinstance(err.value, ValueError)
    with pytest.raises(UnknownSamplerError):
        sample(DATA.denoiser, (1, 4), schedule=LINEAR, steps=5, sampler="nope")


# --- the contract, for every sampler --------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_no_mutation(name, dtype):
    x = start_noise((3, 2, 4, 4), dtype=dtype) * 80
    before = x.clone()
    out = SAMPLERS[name](DATA.denoiser, x, edm_sigmas(6), generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype and bool(torch.isfinite(out).all())
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_fixed_generator(name):
    x = start_noise((2, 8)) * 80
    runs = [SAMPLERS[name](DATA.denoiser, x, edm_sigmas(7), generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    other = SAMPLERS[name](DATA.denoiser, x, edm_sigmas(7), generator=torch.Generator().manual_seed(6))
    assert torch.equal(other, runs[0]) != SAMPLERS[name].stochastic


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_seeds_do_not_depend_on_the_batch(name):
    big = sample(DATA.denoiser, (3, 2, 5), schedule=LINEAR, steps=6, sampler=name, generator=seeded_generators([7, 8, 9]))
    alone = sample(DATA.denoiser, (1, 2, 5), schedule=LINEAR, steps=6, sampler=name, generator=seeded_generators([8]))
    assert torch.equal(big[1:2], alone)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_every_step_is_reported_and_the_last_lands_on_sigma_zero(name, steps):
    seen = []
    sigmas = edm_sigmas(steps)
    out = SAMPLERS[name](DATA.denoiser, start_noise((2, 3)) * 80, sigmas, callback=seen.append,
                         generator=torch.Generator().manual_seed(0))
    assert [info.i for info in seen] == list(range(steps))
    assert [info["sigma_next"] for info in seen] == sigmas[1:].tolist()
    assert seen[-1].sigma_next == 0.0 and all(info.steps == steps for info in seen)
    # the step to σ = 0 returns the last x̂0 bit for bit: nothing of the noise is left
    assert torch.equal(out, seen[-1].denoised)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("point", [0.0, -0.7, 1.0])
def test_single_point_data_is_hit_exactly(name, point):
    data = GaussianData(mean=point, std=0.0)
    out = SAMPLERS[name](data.denoiser, start_noise((4, 16)) * 80, edm_sigmas(5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.full_like(out, point))


@pytest.mark.parametrize("name", [n for n in NAMES if SAMPLERS[n].ode_options is not None])
def test_probability_flow_converges_at_the_theoretical_order(name):
    entry = SAMPLERS[name]  # with its ode_options (η = 0) if it is stochastic by default
    x = start_noise((1, 32)) * 80
    exact = DATA.flow_endpoint(x, 80.0)
    steps = np.array([32, 64, 128])
    errors = np.array([float((entry(DATA.denoiser, x, edm_sigmas(int(n)), **entry.ode_options) - exact).abs().max())
                       for n in steps])
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - entry.order) < 0.3, f"{name}: measured order {slope:.2f}, errors {errors}"


@pytest.mark.parametrize("name", NAMES)
def test_samples_reproduce_the_data_mean_and_std(name):
    # 20 000 independent coordinates: standard errors ≈ 0.004 (mean) and 0.003 (std).  Ancestral
    # sampling loses s²·(σ − σ_down)²/(s² + σ²) of variance per step, an O(1/steps) bias: ≈ 0.015 here.
    # each sampler gets the exact model of the kind it expects: E[x0 | x], or the ODE endpoint (consistency)
    exact = {"denoiser": DATA.denoiser, "consistency": DATA.consistency_function}[SAMPLERS[name].model]
    g = torch.Generator().manual_seed(3)
    out = sample(exact, (1, 20_000), schedule=LINEAR, steps=250, sampler=name, generator=g, dtype=torch.float64)
    assert abs(float(out.mean()) - DATA.mean) < 0.02
    assert abs(float(out.std()) - DATA.std) < 0.025


@pytest.mark.parametrize("name", [n for n in NAMES if SAMPLERS[n].ode_options])
def test_stochastic_samplers_with_ode_options_are_deterministic(name):
    entry = SAMPLERS[name]
    x = start_noise((2, 6)) * 80
    outs = [entry(DATA.denoiser, x, edm_sigmas(5), generator=torch.Generator().manual_seed(s), **entry.ode_options)
            for s in (0, 1)]
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("variant", [None, "bh1", "bh2"])
def test_unipc_variants_each_converge_at_order_three(variant):
    # None solves every order condition (B(h) cancels); bh1/bh2 take the reference's ½ for UniP-2 and
    # UniC-1, which is the solved weight's h → 0 limit: a different method of the same order
    x = start_noise((1, 32)) * 80
    exact = DATA.flow_endpoint(x, 80.0)
    steps = np.array([32, 64, 128])
    outs = {n: SAMPLERS["unipc"](DATA.denoiser, x, edm_sigmas(int(n)), variant=variant) for n in steps}
    errors = np.array([float((outs[n] - exact).abs().max()) for n in steps])
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - 3) < 0.3, f"unipc variant={variant}: measured order {slope:.2f}, errors {errors}"
    if variant is not None:  # and the variant changes the numbers (it did nothing before: 3e-15)
        solved = SAMPLERS["unipc"](DATA.denoiser, x, edm_sigmas(32))
        assert float((outs[32] - solved).abs().max()) > 1e-3


@pytest.mark.parametrize("spacing", ["log_snr", "karras"])
def test_dpmpp_3m_sde_keeps_the_spread_at_ten_steps(spacing):
    # the exact answer's std is the data's; order 3 on h ≈ 1–2 steps gave 1.64× (log_snr) and 2.30× (karras)
    sig = LINEAR.sigmas(10, spacing)
    ratios = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 4096, generator=g, dtype=torch.float64) * float(sig[0])
        ratios.append(float(SAMPLERS["dpmpp_3m_sde"](DATA.denoiser, x, sig, generator=g).std()) / DATA.std)
    assert abs(np.median(ratios) - 1) < 0.1, ratios


def test_dpmpp_3m_sde_falls_back_only_on_long_steps():
    x = start_noise((2, 16)) * 80
    sig = edm_sigmas(64)  # every h ≤ 0.64: the fallback never triggers
    fn, g = SAMPLERS["dpmpp_3m_sde"], lambda: torch.Generator().manual_seed(2)
    assert torch.equal(fn(DATA.denoiser, x, sig, generator=g()),
                       fn(DATA.denoiser, x, sig, generator=g(), order3_max_h=math.inf))
    # and where it does (h ≥ 1 everywhere), order 3 falls back to exactly dpmpp_2m_sde's step
    sig = LINEAR.sigmas(8, "log_snr")
    torch.testing.assert_close(fn(DATA.denoiser, x, sig, generator=g()),
                               SAMPLERS["dpmpp_2m_sde"](DATA.denoiser, x, sig, generator=g()), rtol=1e-12, atol=1e-12)
    with pytest.raises(SamplingError, match="order3_max_h"):
        fn(DATA.denoiser, x, sig, order3_max_h=0)


# --- identities between samplers (facts from the papers) ----------------------------------------
def test_ddpm_is_ddim_with_eta_one_and_euler_ancestral():
    x = start_noise((2, 10)) * 80
    outs = [fn(DATA.denoiser, x, edm_sigmas(9), generator=torch.Generator().manual_seed(4), **opts)
            for fn, opts in ((SAMPLERS["ddpm"], {}), (SAMPLERS["ddim"], {"eta": 1.0}), (SAMPLERS["euler_ancestral"], {}))]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_deterministic_ddim_is_euler_and_2m_sde_without_noise_is_2m():
    x = start_noise((2, 10)) * 80
    sig = edm_sigmas(9)
    torch.testing.assert_close(SAMPLERS["ddim"](DATA.denoiser, x, sig), SAMPLERS["euler"](DATA.denoiser, x, sig))
    torch.testing.assert_close(SAMPLERS["dpmpp_2m_sde"](DATA.denoiser, x, sig, eta=0.0),
                               SAMPLERS["dpmpp_2m"](DATA.denoiser, x, sig), rtol=1e-12, atol=1e-12)


def test_heun_with_churn_still_reproduces_the_moments():
    g = torch.Generator().manual_seed(0)
    out = sample(DATA.denoiser, (1, 20_000), schedule=LINEAR, steps=60, sampler="heun", generator=g,
                 dtype=torch.float64, s_churn=40.0, s_tmin=0.05, s_tmax=50.0)
    assert abs(float(out.mean()) - DATA.mean) < 0.015 and abs(float(out.std()) - DATA.std) < 0.02


# --- cancellation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_callback_returning_false_cancels(name):
    calls = []

    def stop_at_two(info):
        calls.append(info.i)
        return info.i < 2

    with pytest.raises(SamplingCancelled) as err:
        SAMPLERS[name](DATA.denoiser, start_noise((1, 4)) * 80, edm_sigmas(6), callback=stop_at_two,
                       generator=torch.Generator().manual_seed(0))
    assert calls == [0, 1, 2] and err.value.step == 2 and err.value.denoised.shape == (1, 4)


def test_callback_raising_cancelled_gets_the_step_filled_in():
    def stop(info):
        if info.i == 1:
            raise SamplingCancelled()

    with pytest.raises(SamplingCancelled) as err:
        sample(DATA.denoiser, (2, 3), schedule=LINEAR, steps=4, sampler="euler", callback=stop)
    assert err.value.step == 1 and err.value.denoised.shape == (2, 3)


# --- sample() -------------------------------------------------------------------------------------
def test_sample_uses_the_schedule_sigmas_and_per_sample_start_noise():
    seen = []
    out = sample(lambda x, s: x, (2, 3), schedule=LINEAR, steps=5, sampler="euler", spacing="log_snr",
                 generator=seeded_generators([11, 12]), callback=seen.append)
    sigmas = LINEAR.sigmas(5, "log_snr")
    assert [info.sigma for info in seen] == sigmas[:-1].tolist()
    noise = torch.stack([torch.randn(3, generator=torch.Generator().manual_seed(s)) for s in (11, 12)])
    torch.testing.assert_close(seen[0].x, noise * float(sigmas[0]))
    assert out.dtype == torch.float32


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sigmas, message",
    [
        ([[1.0, 0.0]], "1-D"),
        ([0.0], "at least 2"),
        ([1.0, 2.0, 0.0], "descending"),
        ([2.0, 1.0, 1.0, 0.0], "descending"),
        ([2.0, 1.0], "exactly 0"),
        ([math.nan, 1.0, 0.0], "finite"),
        ([math.inf, 1.0, 0.0], "finite"),
        ([1.0, 0.0, -1.0], "non-negative"),
    ],
)
@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "unipc"])
def test_bad_sigmas_are_refused(name, sigmas, message):
    with pytest.raises(SamplingError, match=message):
        SAMPLERS[name](DATA.denoiser, torch.zeros(1, 2), sigmas)


def test_bad_arguments_are_refused():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="steps"):
        sample(DATA.denoiser, (1, 3), schedule=LINEAR, steps=0)
    with pytest.raises(SamplingError, match="3 generators for a batch of 2"):
        SAMPLERS["ddpm"](DATA.denoiser, x, [1.0, 0.0], generator=seeded_generators([1, 2, 3]))
    with pytest.raises(SamplingError, match="eta"):
        SAMPLERS["ddim"](DATA.denoiser, x, [1.0, 0.0], eta=-0.5)
    with pytest.raises(SamplingError, match="order"):
        SAMPLERS["unipc"](DATA.denoiser, x, [1.0, 0.0], order=4)
    with pytest.raises(SamplingError, match="variant 'bh3'"):
        SAMPLERS["unipc"](DATA.denoiser, x, [1.0, 0.0], variant="bh3")
    with pytest.raises(TypeError):
        SAMPLERS["euler"](DATA.denoiser, x, [1.0, 0.0], not_an_option=1)
    with pytest.raises(TypeError, match="floating"):
        SAMPLERS["euler"](DATA.denoiser, torch.zeros(2, 3, dtype=torch.long), [1.0, 0.0])
    with pytest.raises(SamplingError, match="denoiser returned"):
        SAMPLERS["euler"](lambda x, s: x[:1], x, [1.0, 0.0])
    with pytest.raises(SamplingError, match="shape"):
        sample(DATA.denoiser, (0, 3), schedule=LINEAR, steps=3)
