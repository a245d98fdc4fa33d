"""Classifier-free guidance wrapper: properties (hypothesis), one batch, dict conditions, rescale."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unnoise.conditioning.guidance import CFGDenoiser, GuidanceError, batch_conditions, guided
from unnoise.sampling import SAMPLERS

B = 3


class TextDenoiser:
    """A nonlinear stand-in for a text-conditioned network that records every call.  Its x̂0 depends on
    x, σ and every field of the condition (tokens under the mask, pooled), per sample."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, cond):
        self.calls.append((x.shape[0], cond))
        s = sigma.view(-1, 1, 1, 1)
        if cond is None:
            shift = torch.zeros(x.shape[0], 1, 1, 1, dtype=x.dtype)
        elif isinstance(cond, dict):
            mask = cond["mask"].to(x.dtype).unsqueeze(-1)  # (N, L, 1)
            tokens = (cond["tokens"] * mask).sum(1) / mask.sum(1).clamp(min=1)  # (N, D)
            shift = (tokens.sum(1) + cond["pooled"].prod(1)).view(-1, 1, 1, 1)
        else:
            shift = cond.reshape(cond.shape[0], -1).sum(1).view(-1, 1, 1, 1)
        return torch.tanh(x / (1 + s)) * (1 + 0.3 * shift) + shift / (1 + s**2)


def text_cond(batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(length).expand(batch, length) < torch.randint(1, length + 1, (batch, 1), generator=g)
    tokens = torch.randn(batch, length, 4, generator=g, dtype=torch.float64) * mask.unsqueeze(-1)
    return {"tokens": tokens, "mask": mask, "pooled": torch.randn(batch, 4, generator=g, dtype=torch.float64)}


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 2, 3, 3, generator=g, dtype=torch.float64) * 3, torch.rand(B, generator=g, dtype=torch.float64) * 5


CONDS = {
    "tensor": (torch.randn(B, 4, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64)),
    "dict": (text_cond(B, 6, 1), text_cond(1, 2, 2)),  # negative prompt: shorter, batch of 1
    "none": (None, None),
}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(CONDS)), seed=st.integers(0, 2**16))
def test_scale_one_is_exactly_the_conditional_pass_and_zero_the_unconditional(kind, seed):
    cond, uncond = CONDS[kind]
    x, sigma = inputs(seed)
    net = TextDenoiser()
    assert torch.equal(CFGDenoiser(net, cond, uncond, 1.0, rescale=0.7)(x, sigma), net(x, sigma, cond))
    assert torch.equal(CFGDenoiser(net, cond, uncond, 0.0)(x, sigma), net(x, sigma, uncond))
    assert [n for n, _ in net.calls] == [B, B, B, B]  # one pass of B each, no wasted batch


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(CONDS)), seed=st.integers(0, 2**16),
       w=st.floats(-3, 15), v=st.floats(-3, 15))
def test_guidance_is_affine_in_the_scale_and_runs_one_batch(kind, seed, w, v):
    cond, uncond = CONDS[kind]
    x, sigma = inputs(seed)
    net = TextDenoiser()
    c, u = net(x, sigma, cond), net(x, sigma, uncond)
    net.calls.clear()
    out_w = CFGDenoiser(net, cond, uncond, w)(x, sigma)
    out_v = CFGDenoiser(net, cond, uncond, v)(x, sigma)
    if w not in (0.0, 1.0) and v not in (0.0, 1.0):
        assert [n for n, _ in net.calls] == [2 * B, 2 * B]
    torch.testing.assert_close(out_w, u + w * (c - u), rtol=1e-9, atol=1e-9)
    # linear in w: out(w) − out(v) = (w − v)·(cond − uncond)
    torch.testing.assert_close(out_w - out_v, (w - v) * (c - u), rtol=1e-9, atol=1e-9)


def test_one_batch_pairs_conditions_in_order_and_pads_sequences():
    cond, uncond = CONDS["dict"]
    batched = batch_conditions(cond, uncond, B)
    assert batched["tokens"].shape == (2 * B, 6, 4) and batched["mask"].shape == (2 * B, 6)
    assert torch.equal(batched["tokens"][:B], cond["tokens"])
    assert torch.equal(batched["tokens"][B:, :2], uncond["tokens"].expand(B, 2, 4))
    assert not batched["mask"][B:, 2:].any() and not batched["tokens"][B:, 2:].any()  # zero/False padding
    # padding changes nothing for a network that respects the mask: per-sample == batched result
    x, sigma = inputs(5)
    net = TextDenoiser()
    guided = CFGDenoiser(net, cond, uncond, 4.0)(x, sigma)
    for b in range(B):
        one = {k: v[b : b + 1] for k, v in cond.items()}
        c, u = net(x[b : b + 1], sigma[b : b + 1], one), net(x[b : b + 1], sigma[b : b + 1], uncond)
        torch.testing.assert_close(guided[b : b + 1], u + 4.0 * (c - u), rtol=1e-12, atol=1e-12)


def test_a_negative_prompt_is_the_uncond_argument():
    cond, negative = CONDS["dict"][0], text_cond(B, 6, 9)
    x, sigma = inputs(1)
    net = TextDenoiser()
    c, neg = net(x, sigma, cond), net(x, sigma, negative)
    steered = CFGDenoiser(net, cond, negative, 5.0)(x, sigma)
    # pushed past the conditional prediction, straight away from the negative one: (w − 1)·(c − neg)
    torch.testing.assert_close(steered - c, 4.0 * (c - neg), rtol=1e-9, atol=1e-9)
    assert float(((steered - c) * (c - neg)).sum()) > 0


def test_mixed_none_conditions_run_as_two_passes():
    x, sigma = inputs(2)
    net = TextDenoiser()
    cond = CONDS["tensor"][0]
    out = CFGDenoiser(net, cond, None, 3.0)(x, sigma)
    c, u = net(x, sigma, cond), net(x, sigma, None)
    torch.testing.assert_close(out, u + 3.0 * (c - u))
    assert [n for n, _ in net.calls[:2]] == [B, B]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), w=st.floats(1.5, 15), phi=st.floats(0, 1))
def test_rescale_matches_the_conditional_std_per_sample(seed, w, phi):
    cond, uncond = CONDS["tensor"]
    x, sigma = inputs(seed)
    net = TextDenoiser()
    c = net(x, sigma, cond)
    plain = CFGDenoiser(net, cond, uncond, w)(x, sigma)
    full = CFGDenoiser(net, cond, uncond, w, rescale=1.0)(x, sigma)
    mixed = CFGDenoiser(net, cond, uncond, w, rescale=phi)(x, sigma)

    def std(t):
        return t.reshape(B, -1).std(dim=1, correction=0)

    # Lin et al. 2023, Alg. 2: rescale = 1 gives each sample the conditional prediction's std …
    torch.testing.assert_close(std(full), std(c), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(full, plain * (std(c) / std(plain)).view(B, 1, 1, 1))
    # … and φ interpolates linearly between that and plain CFG
    torch.testing.assert_close(mixed, phi * full + (1 - phi) * plain, rtol=1e-10, atol=1e-10)


def test_rescale_leaves_a_constant_prediction_alone():
    net = lambda x, sigma, cond: torch.full_like(x, 0.5) + (0 if cond is None else cond.view(-1, 1))  # noqa: E731
    x = torch.zeros(2, 5, dtype=torch.float64)
    out = CFGDenoiser(net, torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), 3.0, rescale=1.0)(
        x, torch.ones(2, dtype=torch.float64))
    assert torch.equal(out, torch.full_like(x, 3.5))


# --- rescale in ε or v space (Lin et al. 2023 apply it to the network's output) --------------------
def to_space(space, x0, x, sigma):
    """The papers' forms, written out: x̂0, ε̂ = (x − x̂0)/σ, or v̂ = α·ε̂ − sqrt(1 − ᾱ)·x̂0 (DDPM view)."""
    s = sigma.view(-1, 1, 1, 1)
    alpha, noise = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()  # sqrt(ᾱ), sqrt(1 − ᾱ)
    eps = (x - x0) / s
    return {"x0": x0, "eps": eps, "v": alpha * eps - noise * x0}[space]


def from_space(space, out, x, sigma):
    s = sigma.view(-1, 1, 1, 1)
    alpha, noise = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    x_t = alpha * x
    return {"x0": out, "eps": x - s * out, "v": alpha * x_t - noise * out}[space]  # x̂0 = sqrt(ᾱ)·x_t − sqrt(1−ᾱ)·v̂


@pytest.mark.parametrize("space", ["x0", "eps", "v"])
@pytest.mark.parametrize("phi", [0.3, 1.0])
def test_rescale_in_each_space_matches_diffusers_rescale_noise_cfg(space, phi):
    pytest.importorskip("diffusers")
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    cond, uncond = CONDS["dict"]
    x, sigma = inputs(5)
    net, w = TextDenoiser(), 7.0
    c, u = (to_space(space, net(x, sigma, k), x, sigma) for k in (cond, uncond))
    expected = from_space(space, rescale_noise_cfg(u + w * (c - u), c, guidance_rescale=phi), x, sigma)
    ours = CFGDenoiser(net, cond, uncond, w, rescale=phi, rescale_space=space)(x, sigma)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


def test_rescale_spaces_agree_where_x_is_constant_and_differ_elsewhere():
    # closed form: x̂0_c = x + u, x̂0_u = x (u has mean 0, std 1), w = 3, φ = 1.  Guided: x + 3u.
    u = torch.randn(B, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = (u - u.mean(dim=(1, 2, 3), keepdim=True)) / u.std(dim=(1, 2, 3), keepdim=True, correction=0)
    net = lambda x, sigma, cond: x + (u if cond is not None else 0)  # noqa: E731
    sigma = torch.full((B,), 2.0, dtype=torch.float64)

    def run(space, x):
        return CFGDenoiser(net, torch.ones(B, 1), None, 3.0, rescale=1.0, rescale_space=space)(x, sigma)

    # eps: ε̂ ∝ x − x̂0 = −(w·u): std ratio 1/3 → x̂0 = x + u exactly, whatever x is
    x = torch.randn(B, 2, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(run("eps", x), x + u, rtol=1e-12, atol=1e-12)
    # x = 0: every centre (0, x, ᾱ·x) is 0, so the three spaces are one: x̂0 = u
    zero = torch.zeros_like(u)
    for space in ("x0", "eps", "v"):
        torch.testing.assert_close(run(space, zero), u, rtol=1e-12, atol=1e-12)
    # x = 0.7 everywhere: the same pattern u, shifted by (1 − k)·(centre − centre') with k = 1/3
    flat = torch.full_like(u, 0.7)
    torch.testing.assert_close(run("x0", flat), flat + u - (1 - 1 / 3) * 0.7, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(run("v", flat), flat + u - (1 - 1 / 3) * 0.7 * (1 - 1 / 5), rtol=1e-12, atol=1e-12)
    # a structured x: x0 and v see x's pattern in x̂0 and rescale it too, eps does not
    assert (run("x0", x) - run("eps", x)).abs().max() > 0.1
    assert (run("v", x) - run("eps", x)).abs().max() > 0.1


def test_v_rescale_tends_to_x0_at_high_noise_and_to_eps_at_low_noise():
    cond, uncond = CONDS["tensor"]
    x, _ = inputs(3)
    net = TextDenoiser()

    def run(space, level):
        return CFGDenoiser(net, cond, uncond, 5.0, rescale=0.7, rescale_space=space)(x, torch.full((B,), level,
                                                                                                dtype=torch.float64))

    assert (run("v", 1e4) - run("x0", 1e4)).abs().max() < 1e-6 < (run("v", 1.0) - run("x0", 1.0)).abs().max()
    assert (run("v", 1e-4) - run("eps", 1e-4)).abs().max() < 1e-6 < (run("v", 1.0) - run("eps", 1.0)).abs().max()
    with pytest.raises(GuidanceError, match="rescale space"):
        CFGDenoiser(net, cond, uncond, 5.0, rescale_space="epsilon")


def test_samplers_run_guided_denoisers_unchanged():
    cond, uncond = CONDS["dict"]
    guided = CFGDenoiser(TextDenoiser(), cond, uncond, 6.0, rescale=0.5)
    x = torch.randn(B, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10
    out = SAMPLERS["dpmpp_2m"](guided, x, torch.tensor([10.0, 3.0, 1.0, 0.2, 0.0], dtype=torch.float64))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf])
def test_non_finite_scale_is_a_clear_error(scale):
    with pytest.raises(GuidanceError, match="guidance scale must be finite"):
        CFGDenoiser(TextDenoiser(), None, None, scale)


def test_bad_arguments_are_refused():
    net = TextDenoiser()
    with pytest.raises(GuidanceError, match="rescale"):
        CFGDenoiser(net, None, None, 2.0, rescale=1.5)
    with pytest.raises(TypeError, match="real number"):
        CFGDenoiser(net, None, None, "7.5")
    with pytest.raises(TypeError, match="callable"):
        CFGDenoiser("net", None, None, 2.0)
    x, sigma = inputs()
    with pytest.raises(GuidanceError, match="keys differ"):
        CFGDenoiser(net, {"a": torch.ones(B, 2)}, {"b": torch.ones(B, 2)}, 2.0)(x, sigma)
    with pytest.raises(GuidanceError, match="batch of 1 or 3"):
        CFGDenoiser(net, torch.ones(2, 4), torch.ones(B, 4), 2.0)(x, sigma)
    with pytest.raises(GuidanceError, match="shapes differ"):
        CFGDenoiser(net, torch.ones(B, 4), torch.ones(B, 5), 2.0)(x, sigma)


def test_padded_batch_equals_the_text_encoders_own_batch():
    text = pytest.importorskip("unnoise.conditioning.text")
    try:
        encoder = text.TextEncoder.load()
    except Exception as err:  # weights package missing: nothing to compare against
        pytest.skip(f"text encoder unavailable: {err}")
    prompts = ["a smiling cat", "a red apple on a wooden table"]
    batched = batch_conditions(encoder.encode(prompts), encoder.encode([""]), 2)
    together = encoder.encode(prompts + ["", ""])
    for key in together:
        torch.testing.assert_close(batched[key], together[key], rtol=1e-5, atol=1e-5)


def test_guided_picks_cfg_or_w_as_input_by_the_declared_capability():
    """One entry point: CFG for an ordinary model (2B rows, per-image scales allowed), w as an input for a
    guidance-distilled student (B rows, cond["guidance"] = each image's scale); bad scales are one error."""
    from unnoise.conditioning.guidance import GuidanceInput

    calls = []

    def denoiser(x, sigma, cond):
        calls.append((x.shape[0], cond))
        return x * 0.5 + (cond["guidance"].view(-1, 1, 1, 1) if "guidance" in cond else cond["pooled"][:, :1, None, None])

    x = torch.randn(3, 1, 2, 2)
    cond, uncond = {"pooled": torch.ones(3, 4)}, {"pooled": torch.zeros(3, 4)}
    cfg = guided(denoiser, cond, uncond, [0.0, 1.0, 2.0], takes_guidance=False)
    assert isinstance(cfg, CFGDenoiser)
    out = cfg(x, torch.tensor(1.0))
    assert calls[-1][0] == 6  # both halves in one call
    torch.testing.assert_close(out, x * 0.5 + torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1, 1))
    student = guided(denoiser, cond, None, 4.0, takes_guidance=True)
    assert isinstance(student, GuidanceInput)
    torch.testing.assert_close(student(x, torch.tensor(1.0)), x * 0.5 + 4.0)
    assert calls[-1][0] == 3 and calls[-1][1]["guidance"].tolist() == [4.0] * 3
    with pytest.raises(GuidanceError, match="rescale needs classifier-free"):
        guided(denoiser, cond, None, 4.0, takes_guidance=True, rescale=0.5)
    with pytest.raises(GuidanceError, match="finite"):
        guided(denoiser, cond, uncond, [1.0, float("nan")], takes_guidance=False)
    with pytest.raises(GuidanceError, match="needs 3 guidance scales"):
        guided(denoiser, cond, uncond, [1.0, 2.0], takes_guidance=False)(x, torch.tensor(1.0))


@pytest.mark.parametrize("takes_guidance", [False, True])
def test_guided_owns_the_x0_clip(takes_guidance):
    """clip= projects the guided x̂0 onto [−clip, clip] (the Painter's and the distill teacher's 1.0), for CFG
    and for the w input alike; without it the guided x̂0 is left as it is; a clip that is not a positive
    finite number is refused."""
    def denoiser(x, sigma, cond):
        return 4.0 * x + (cond["guidance"].view(-1, 1, 1, 1) if "guidance" in cond else cond["pooled"][:, :1, None, None])

    x = torch.linspace(-1.0, 1.0, 24).view(3, 2, 2, 2)
    cond, uncond = {"pooled": torch.ones(3, 4)}, {"pooled": torch.zeros(3, 4)}
    free = guided(denoiser, cond, uncond, 3.0, takes_guidance=takes_guidance)(x, torch.tensor(1.0))
    assert free.abs().max() > 2.0  # the test means something: the unclipped x̂0 leaves the box
    for clip in (1.0, 0.5):
        clipped = guided(denoiser, cond, uncond, 3.0, takes_guidance=takes_guidance, clip=clip)(x, torch.tensor(1.0))
        torch.testing.assert_close(clipped, free.clamp(-clip, clip), rtol=0, atol=0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(GuidanceError, match="clip"):
            guided(denoiser, cond, uncond, 3.0, takes_guidance=takes_guidance, clip=bad)
