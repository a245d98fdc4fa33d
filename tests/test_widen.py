"""Net2Net widening: a UNet twice as wide computes the same function, and its duplicated channels learn apart."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unnoise.models import UNet, UNetConfig, UNetConfigError
from unnoise.models.widen import widen, widened_config

CONFIGS = [
    UNetConfig.tiny(),
    UNetConfig.tiny().replace(guidance_embedding=True, prediction_type="v_prediction"),
    UNetConfig.tiny().replace(patch_size=2, channel_mults=(1, 2, 3), num_res_blocks=2, attention_levels=(2,),
                              cross_attention_levels=(0, 2), mid_attention=True),
    UNetConfig.small().replace(in_channels=1, out_channels=1),
]


def _random_net(config: UNetConfig, seed: int) -> UNet:
    """Every weight random, the zero-initialised output layers included, so no branch hides behind a zero."""
    torch.manual_seed(seed)
    net = UNet(config)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return net.eval()


def _inputs(config: UNetConfig, seed: int, b: int = 3):
    g = torch.Generator().manual_seed(seed)
    side = 2 * config.size_multiple
    x = torch.randn(b, config.in_channels, side, side, generator=g)
    t = torch.rand(b, generator=g) * 999
    tokens = torch.randn(b, 5, config.cond_dim, generator=g)
    mask = torch.ones(b, 5, dtype=torch.bool)
    mask[0, 3:] = False
    cond = {"tokens": tokens, "mask": mask, "pooled": torch.randn(b, config.cond_dim, generator=g)}
    if config.guidance_embedding:
        cond["guidance"] = 1 + 5 * torch.rand(b, generator=g)
    return x, t, cond


@pytest.mark.parametrize("config", CONFIGS, ids=["tiny", "tiny-guidance-v", "tiny-patch2-3levels", "small-1ch"])
def test_widened_net_computes_the_same_function(config):
    net = _random_net(config, 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wide = widen(net, generator=torch.Generator().manual_seed(1)).eval()
    assert wide.config == widened_config(config) == config.replace(
        base_channels=2 * config.base_channels, attention_head_dim=2 * config.attention_head_dim)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the narrow net is untouched
    x, t, cond = _inputs(config, 2)
    with torch.no_grad():
        for c in (cond, None):
            a, b = net(x, t, c), wide(x, t, c)
            assert (a - b).abs().max() <= 1e-4 * (1 + a.abs().max()), (a - b).abs().max()
    params = sum(p.numel() for p in net.parameters()), sum(p.numel() for p in wide.parameters())
    assert params[1] > 2.5 * params[0]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0, 999), guidance=st.floats(0, 10))
def test_widening_preserves_the_function_for_any_weights_and_inputs(seed, t, guidance):
    config = CONFIGS[1]
    net = _random_net(config, seed)
    wide = widen(net, generator=torch.Generator().manual_seed(seed + 1)).eval()
    x, _, cond = _inputs(config, seed, b=2)
    cond["guidance"] = torch.full((2,), guidance)
    with torch.no_grad():
        a, b = net(x, torch.full((2,), t), cond), wide(x, torch.full((2,), t), cond)
    assert (a - b).abs().max() <= 1e-4 * (1 + a.abs().max())


def test_the_copies_learn_apart_and_a_seed_repeats_the_widening():
    """Split fractions differ per weight, so the two copies of a channel get different gradients (halving
    both would keep them twins); the same generator seed gives the same wide weights."""
    config = CONFIGS[0]
    net = _random_net(config, 0)
    wide = widen(net, generator=torch.Generator().manual_seed(5))
    again = widen(net, generator=torch.Generator().manual_seed(5))
    other = widen(net, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(a, b) for a, b in zip(wide.state_dict().values(), again.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(wide.state_dict().values(), other.state_dict().values()))
    x, t, cond = _inputs(config, 3)
    wide.train()
    wide(x, t, cond).square().mean().backward()
    grad = wide.down[0].res.conv1.weight.grad  # rows 2c and 2c+1 are the two copies of channel c
    assert not torch.allclose(grad[0::2], grad[1::2])


def test_widening_refuses_what_it_cannot_double():
    with pytest.raises(UNetConfigError, match="even base_channels"):
        widened_config(UNetConfig.tiny().replace(base_channels=5, norm_groups=5, attention_head_dim=5))
    with pytest.raises(UNetConfigError, match="needs a UNet"):
        widen(torch.nn.Linear(2, 2))


def test_a_half_precision_net_widens_in_float32():
    net = _random_net(CONFIGS[0], 0).half()
    wide = widen(net, generator=torch.Generator().manual_seed(0))
    assert next(wide.parameters()).dtype == torch.float32 and next(net.parameters()).dtype == torch.float16
    x, t, cond = _inputs(CONFIGS[0], 1)
    with torch.no_grad():
        a, b = net.float()(x, t, cond), wide.eval()(x, t, cond)
    assert (a - b).abs().max() <= 1e-4 * (1 + a.abs().max())
