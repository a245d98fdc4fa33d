"""The forward process: marginal statistics, trajectories, the replay, training targets, loss weights."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unnoise import diffusion, schedules


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid+ztsnr"])
@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_forward_marginal_mean_and_variance(name, t):
    s = schedules.get(name)
    g = torch.Generator().manual_seed(t)
    n = 200_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    noise = torch.randn(n, 1, generator=g, dtype=torch.float64)
    xt = s.add_noise(x0, noise, torch.full((n,), t))
    ab = s.alphas_cumprod[t].item()
    # mean sqrt(ᾱ)·x0, variance 1 − ᾱ; 5 standard errors
    se = ((1 - ab) / n) ** 0.5
    assert abs(xt.mean().item() - ab**0.5 * 0.7) < 5 * se + 1e-12
    assert abs(xt.var().item() - (1 - ab)) < 5 * (1 - ab) * (2 / n) ** 0.5 + 1e-12


def test_add_noise_broadcasts_per_sample_and_keeps_dtype():
    s = schedules.get("linear")
    x0 = torch.randn(3, 2, 4, 4)
    noise = torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 10, 999])
    out = s.add_noise(x0, noise, t)
    assert out.dtype == torch.float32
    for i in range(3):
        ab = s.alphas_cumprod[t[i]]
        expect = ab.sqrt() * x0[i].double() + (1 - ab).sqrt() * noise[i].double()
        assert torch.allclose(out[i].double(), expect, atol=1e-6)


@pytest.mark.parametrize(
    "t", [torch.tensor([1000]), torch.tensor([-1]), torch.tensor([0.5]), torch.tensor([1, 2, 3])]
)
def test_add_noise_rejects_bad_t(t):
    s = schedules.get("linear")
    with pytest.raises((ValueError, TypeError)):
        s.add_noise(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), t)


def test_trajectory_is_one_noise_draw_over_many_steps():
    s = schedules.get("cosine")
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(3, 8, 8) * 2 - 1, torch.randn(3, 8, 8, generator=g)
    ts = torch.tensor([0, 300, 600, 999])
    frames = diffusion.trajectory(s, x0, noise, ts)
    assert frames.shape == (4, 3, 8, 8)
    for k, t in enumerate(ts):
        assert torch.allclose(frames[k], s.add_noise(x0[None], noise[None], t[None])[0])


def test_replay_retraces_the_forward_trajectory_and_recovers_x0():
    s = schedules.get("linear")
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 8, 8, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)
    ts = torch.tensor([999, 700, 400, 100, 0])
    x_T = s.add_noise(x0[None], noise[None], ts[:1])[0]
    frames = diffusion.replay(s, x_T, noise, ts)
    assert frames.shape == (6, 3, 8, 8)
    assert torch.allclose(frames[:-1], diffusion.trajectory(s, x0, noise, ts), atol=1e-9)
    assert torch.allclose(frames[-1], x0, atol=1e-9)
    with pytest.raises(ValueError):
        diffusion.replay(s, x_T, noise, torch.tensor([0, 10]))


@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
def test_target_inverts_to_x0(prediction_type):
    """predict_x0 applied to the exact training target recovers x0: targets and adapters agree."""
    s = schedules.get("cosine")
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 400, 800, 990])
    xt = s.add_noise(x0, noise, t)
    target = diffusion.training_target(s, x0, noise, t, prediction_type)
    back = diffusion.predict_x0(s.alphas_cumprod[t], xt, target, prediction_type)
    assert torch.allclose(back, x0, atol=1e-8)


def test_v_target_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_schedule="linear", prediction_type="v_prediction")
    s = schedules.get("linear")
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    t = torch.tensor([0, 5, 500, 999])
    # 1e-5: diffusers' float32 sqrt(1 − ᾱ) near t = 0 loses digits to cancellation (see test_schedules.py)
    ours = diffusion.training_target(s, x0, noise, t, "v_prediction")
    assert torch.allclose(ours, ref.get_velocity(x0, noise, t), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["linear", "cosine+ztsnr"])
@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
@settings(max_examples=20, deadline=None)
@given(gamma=st.floats(0.1, 20), t=st.integers(0, 999))
def test_min_snr_weights_are_bounded_and_equivalent(name, prediction_type, gamma, t):
    s = schedules.get(name)
    tt = torch.tensor([t])
    w = diffusion.loss_weight(s, tt, prediction_type, "min_snr", gamma).item()
    bound = gamma if prediction_type == "sample" else 1.0
    assert 0 <= w <= bound + 1e-6
    # all three express the same x0-space weight min(SNR, γ): ‖ε‖-error = SNR·‖x0‖-error, ‖v‖-error = (SNR+1)·‖x0‖-error
    snr = s.snr[t].item()
    factor = {"epsilon": snr, "v_prediction": snr + 1, "sample": 1.0}[prediction_type]
    if snr > 0:
        assert w * factor == pytest.approx(min(snr, gamma), rel=1e-5)
    assert diffusion.loss_weight(s, tt, prediction_type, "uniform").item() == 1.0


def test_unknown_names_raise():
    s = schedules.get("linear")
    t = torch.tensor([1])
    with pytest.raises(ValueError):
        diffusion.training_target(s, torch.zeros(1, 1), torch.zeros(1, 1), t, "score")
    with pytest.raises(ValueError):
        diffusion.loss_weight(s, t, "epsilon", "p2")
