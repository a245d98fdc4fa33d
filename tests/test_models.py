"""The denoiser network: shapes, conditioning semantics, gradients, weights on disk, config validation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unnoise.models import UNet, UNetConfig, UNetConfigError, UNetInputError
from unnoise.models.layers import timestep_embedding


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared, busy 2-core machine OpenMP's
    barriers make a 2-thread forward 10–25× slower than a 1-thread one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _make(seed: int = 0, **changes) -> UNet:
    """A tiny UNet whose zero-initialised layers are given random values, so every branch is live."""
    torch.manual_seed(seed)  # module init draws from the global RNG; tests pin it for reproducibility
    model = UNet(UNetConfig.tiny().replace(**changes))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _cond(b: int, lengths: list[int], g: torch.Generator, d: int = 384) -> dict[str, torch.Tensor]:
    """Text condition with per-row real lengths; padded positions hold random garbage on purpose."""
    L = max(lengths)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    return {"tokens": torch.randn(b, L, d, generator=g), "mask": mask, "pooled": torch.randn(b, d, generator=g)}


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("patch_size", [1, 2])
def test_output_shape(prediction_type, channels, size, patch_size):
    model = UNet(UNetConfig.tiny().replace(
        in_channels=channels, out_channels=channels, image_size=size, prediction_type=prediction_type,
        patch_size=patch_size,
    ))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, size, size, generator=g)
    y = model(x, torch.tensor([0.0, 999.0]), _cond(2, [3, 5], g))
    assert y.shape == (2, channels, size, size) and y.dtype == torch.float32
    assert model.prediction_type == prediction_type


def test_out_channels_may_differ_and_presets_build():
    model = UNet(UNetConfig.tiny().replace(in_channels=1, out_channels=2))
    assert model(torch.zeros(1, 1, 32, 32), torch.tensor([5.0])).shape == (1, 2, 32, 32)
    for preset in (UNetConfig.small(), UNetConfig.default()):
        assert UNet(preset).config == preset


def test_time_embedding_is_smooth_in_fractional_t():
    t = torch.tensor([10.0, 10.5, 11.0])
    e = timestep_embedding(t, 32)
    assert e.shape == (3, 32) and torch.isfinite(e).all()
    # the half step lies strictly between its neighbours' embeddings, not on either of them
    assert (e[1] - e[0]).abs().max() > 0 and (e[2] - e[1]).abs().max() > 0
    assert timestep_embedding(t, 33).shape == (3, 33)


def test_fractional_t_changes_output_continuously():
    model = _make()
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(1, 3, 32, 32, generator=g), _cond(1, [4], g)
    y = [model(x, torch.tensor([t]), cond) for t in (500.0, 500.25, 500.5, 501.0)]
    d1, d2 = (y[1] - y[0]).abs().max(), (y[3] - y[0]).abs().max()
    assert 0 < d1 < d2
    assert torch.equal(model(x, 500.25, cond), y[1])  # a Python scalar t broadcasts over the batch


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_padded_tokens_do_not_change_the_output(lengths, seed):
    model = _make()
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    x, t = torch.randn(b, 3, 32, 32, generator=g), 1000 * torch.rand(b, generator=g)
    cond = _cond(b, lengths + [7], g)  # an extra row forces padding in every real row
    cond = {k: v[:b] for k, v in cond.items()}
    other = dict(cond, tokens=torch.where(cond["mask"][..., None], cond["tokens"], 100 * torch.randn_like(cond["tokens"])))
    assert torch.equal(model(x, t, cond), model(x, t, other))
    # ...while changing a *real* token does change it
    real = dict(cond, tokens=cond["tokens"] + cond["mask"][..., None])
    assert not torch.allclose(model(x, t, cond), model(x, t, real))


def test_row_without_real_tokens_equals_no_tokens():
    model = _make()
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([3.0, 700.0])
    cond = _cond(2, [3, 3], g)
    empty = dict(cond, mask=torch.zeros_like(cond["mask"]))
    out = model(x, t, empty)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, model(x, t, {"pooled": cond["pooled"]}), rtol=0, atol=1e-6)


def test_cond_none_is_zero_pooled_without_cross_attention():
    model = _make()
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([1.0, 2.0])
    y = model(x, t)
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(y, model(x, t, {"pooled": torch.zeros(2, 384)}), rtol=0, atol=1e-6)
    assert not torch.allclose(y, model(x, t, _cond(2, [2, 4], g)))


def test_deterministic_forward():
    model = _make()
    g = torch.Generator().manual_seed(4)
    x, t, cond = torch.randn(3, 3, 32, 32, generator=g), torch.tensor([1.0, 2.5, 900.0]), _cond(3, [1, 2, 3], g)
    assert torch.equal(model(x, t, cond), model(x, t, cond))
    # a row's output does not depend on what it is batched with
    torch.testing.assert_close(model(x[:1], t[:1], {k: v[:1, ...] for k, v in cond.items()}), model(x, t, cond)[:1],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("patch_size", [1, 2])
def test_gradients_reach_every_parameter(patch_size):
    model = _make(patch_size=patch_size)
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10.0, 600.0])
    model(x, t, _cond(2, [2, 5], g)).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


@pytest.mark.parametrize("patch_size", [1, 2])
def test_fresh_model_starts_as_zero_and_trains(patch_size):
    """Zero-initialised output conv (ADM): the first prediction is 0; a few AdamW steps lower the loss."""
    torch.manual_seed(0)
    model = UNet(UNetConfig.tiny().replace(patch_size=patch_size))
    g = torch.Generator().manual_seed(6)
    x, t, cond = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([1.0, 2.0, 3.0, 4.0]), _cond(4, [2] * 4, g)
    assert torch.equal(model(x, t, cond), torch.zeros_like(x))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    target = torch.randn(x.shape, generator=g)
    losses = []
    for _ in range(5):
        loss = (model(x, t, cond) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_channels_last_and_bf16_autocast_agree_with_fp32():
    model = _make()
    g = torch.Generator().manual_seed(7)
    x, t, cond = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([5.0, 500.0]), _cond(2, [3, 6], g)
    ref = model(x, t, cond)
    cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t, cond)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t, cond)
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_save_load_round_trip(tmp_path, dtype):
    model = _make(in_channels=1, out_channels=1, prediction_type="v_prediction")
    path = model.save_pretrained(tmp_path / "m", dtype=dtype)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = UNet.from_pretrained(path)
    assert loaded.config == model.config and loaded.prediction_type == "v_prediction"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert b.dtype == torch.float32, name
        expect = a if dtype is None else a.to(dtype).float()  # exact up to the storage cast
        assert torch.equal(b, expect), name
    g = torch.Generator().manual_seed(8)
    x, t, cond = torch.randn(2, 1, 32, 32, generator=g), torch.tensor([1.0, 2.0]), _cond(2, [2, 3], g)
    if dtype is None:
        assert torch.equal(loaded(x, t, cond), model(x, t, cond))
    assert UNet.from_pretrained(path, dtype=torch.float16).conv_in.weight.dtype == torch.float16


def test_save_into_existing_directory_keeps_other_files_and_leaves_no_temporaries(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    model = _make()
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, dtype=torch.float16)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "meta.json", "model.safetensors"]
    assert UNet.from_pretrained(tmp_path).config == model.config


def test_channels_last_model_saves(tmp_path):
    model = _make().to(memory_format=torch.channels_last)
    UNet.from_pretrained(model.save_pretrained(tmp_path / "m"))


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        UNet.from_pretrained(tmp_path)
    path = _make().save_pretrained(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(cfg, base_channels=16)))
    with pytest.raises(UNetConfigError, match="does not match its config"):
        UNet.from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(UNetConfigError, match="not valid JSON"):
        UNet.from_pretrained(path)


def test_config_dict_round_trip():
    for cfg in (UNetConfig.tiny(), UNetConfig.small(), UNetConfig.default()):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert UNetConfig.from_dict(d) == cfg


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"base_chanels": 8}, "unknown UNetConfig key"),
        ({"prediction_type": "eps"}, "prediction_type"),
        ({"in_channels": 0}, "in_channels must be a positive int"),
        ({"in_channels": True}, "in_channels must be a positive int"),
        ({"image_size": 33}, "divisible"),
        ({"patch_size": 2, "image_size": 34}, "patch_size·2"),
        ({"patch_size": 0}, "patch_size must be a positive int"),
        ({"channel_mults": ()}, "channel_mults"),
        ({"channel_mults": (1, 2.5)}, "channel_mults"),
        ({"attention_levels": (5,)}, "attention_levels"),
        ({"cross_attention_levels": (1, 1)}, "cross_attention_levels"),
        ({"norm_groups": 3}, "norm_groups"),
        ({"attention_head_dim": 5}, "attention_head_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"mid_attention": 1}, "mid_attention"),
    ],
)
def test_config_validation(changes, match):
    with pytest.raises(UNetConfigError, match=match):
        UNetConfig.from_dict({**UNetConfig.tiny().to_dict(), **changes})
    if "base_chanels" not in changes:  # dataclasses.replace validates too
        with pytest.raises(UNetConfigError, match=match):
            dataclasses.replace(UNetConfig.tiny(), **changes)
    assert issubclass(UNetConfigError, ValueError)


def test_input_validation():
    model = UNet(UNetConfig.tiny())
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(UNetInputError, match="x must be"):
        model(torch.zeros(2, 1, 32, 32), torch.zeros(2))
    with pytest.raises(UNetInputError, match="multiples of 2"):
        model(torch.zeros(2, 3, 31, 32), torch.zeros(2))
    with pytest.raises(UNetInputError, match="t must be"):
        model(x, torch.zeros(3))
    with pytest.raises(UNetInputError, match="unknown cond key"):
        model(x, torch.zeros(2), {"token": torch.zeros(2, 3, 384)})
    with pytest.raises(UNetInputError, match="tokens"):
        model(x, torch.zeros(2), {"tokens": torch.zeros(2, 3, 100)})
    with pytest.raises(UNetInputError, match="mask"):
        model(x, torch.zeros(2), {"tokens": torch.zeros(2, 3, 384), "mask": torch.ones(2, 3)})
    with pytest.raises(UNetInputError, match="pooled"):
        model(x, torch.zeros(2), {"pooled": torch.zeros(1, 384)})
    with pytest.raises(UNetConfigError):
        UNet({"base_channels": 8})
