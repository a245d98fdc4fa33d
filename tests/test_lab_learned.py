"""The lab's learned reverse: a real Painter streams every sampler step through /api/generate."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from unnoise import schedules
from unnoise.lab.app import create_app
from unnoise.lab.learned import PainterFactory
from unnoise.modeldir import save_model_dir
from unnoise.models import UNet, UNetConfig

from test_lab_api import assert_json_error, decode_png, sse_events


def tiny_model_dirs(tmp_path_factory) -> dict[str, str]:
    """Two exported, untrained tiny models: "colour" (3 channels) and "grey" (1), 16×16."""
    torch.manual_seed(0)  # the untrained weights only; sampling is seeded per request
    dirs = {}
    for name, channels in (("colour", 3), ("grey", 1)):
        net = UNet(UNetConfig.tiny().replace(image_size=16, in_channels=channels, out_channels=channels))
        meta = SimpleNamespace(channels=channels, image_size=16, name=name, example_prompts=["a square"])
        dirs[name] = save_model_dir(tmp_path_factory.mktemp(name) / "model", net, schedule=schedules.get("linear"),
                                    prediction_type="v_prediction", dataset=meta, text_encoder="test")
    return dirs


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(generate=PainterFactory(tiny_model_dirs(tmp_path_factory)))) as c:
        yield c


@pytest.mark.parametrize("model", ["grey", "colour"])
def test_every_step_streams_x_t_eps_and_x0(client, model):
    r = client.get("/api/generate", params={"prompt": "a square", "model": model, "steps": 5, "seed": 3, "guidance": 2})
    events = sse_events(r.text)
    assert [k for k, _ in events] == ["start"] + ["step"] * 5 + ["done"]
    start, steps, done = events[0][1], [e for k, e in events if k == "step"], events[-1][1]
    assert start["width"] == 16 and start["model"] == model
    ts = [s["t"] for s in steps]
    assert ts == sorted(ts, reverse=True) and ts[0] > 900  # from static down towards t = 0
    for s in steps:
        assert decode_png(s["x_t"]).shape == (16, 16, 3)
    assert decode_png(done["image"]).shape == (16, 16, 3)
    # the same request paints the same picture (seeded per image)
    again = sse_events(client.get("/api/generate", params={"prompt": "a square", "model": model, "steps": 5,
                                                           "seed": 3, "guidance": 2}).text)
    assert np.array_equal(decode_png(again[-1][1]["image"]), decode_png(done["image"]))


def test_unknown_model_and_sampler_are_422(client):
    assert "unknown model" in assert_json_error(client.get("/api/generate", params={"model": "flowers"}), 422)
    assert "sampler" in assert_json_error(client.get("/api/generate", params={"model": "grey", "sampler": "zig"}), 422)
