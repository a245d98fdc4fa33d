"""The lab's half of a static site (unnoise.lab.site): the static page answers /api/status, /api/samplers and
/api/schedules from what write_lab_site writes, so it must be what the served lab answers, to the number."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from unnoise.lab import create_app
from unnoise.lab.learned import PainterFactory
from unnoise.lab.site import SiteError, lab_site_data, write_lab_site
from unnoise.lab.uploads import the_cat


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from test_lab_learned import tiny_model_dirs

    return tiny_model_dirs(tmp_path_factory, student=True)


def test_the_site_answers_what_the_served_lab_answers(models, tmp_path):
    lab = write_lab_site(tmp_path, models)
    client = TestClient(create_app(generate=PainterFactory(models)))
    served = client.get("/api/status").json()
    assert lab["status"] == {**served, "running": 0, "waiting": 0}
    assert lab["samplers"] == client.get("/api/samplers").json()
    assert lab["schedules"] == client.get("/api/schedules").json()  # float64 ᾱ lists, exactly
    for name, model in lab["models"].items():
        assert model["schedule"] in {s["name"] for s in lab["schedules"]["schedules"]}
        assert model["defaults"] == served["model_defaults"][name]
    cat = np.asarray(Image.open(tmp_path / lab["pictures"]["cat"]))
    assert np.array_equal(cat, the_cat(256).pixels)  # the served lab's cat, pixel for pixel


def test_a_model_with_its_own_schedule_length_is_listed_under_its_name(models, tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    src = models["colour"]
    for f in src.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    meta = json.loads((folder / "unnoise.json").read_text())
    meta["num_train_steps"] = 500
    (folder / "unnoise.json").write_text(json.dumps(meta))
    lab = lab_site_data({"short": folder})
    assert lab["models"]["short"]["schedule"] == "short (model)"
    listed = {s["name"]: s for s in lab["schedules"]["schedules"]}
    assert listed["short (model)"]["num_steps"] == 500


def test_an_unreadable_model_is_one_line(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "unnoise.json").write_text("{not json")
    with pytest.raises(SiteError, match="cannot export model 'broken'"):
        lab_site_data({"broken": tmp_path / "broken"})


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node (Node.js ≥ 20) is not installed")
def test_the_pages_lanczos_is_pillows_to_the_byte(tmp_path):
    """static/resample.js shrinks uploads and shows "the picture as the model sees it": Pillow's bytes exactly
    (both pass orders of Pillow's two-pass resize, grey and colour, shrinking and enlarging)."""
    rng = np.random.default_rng(0)
    sizes = [(256, 170, 32, 32), (37, 53, 32, 32), (600, 400, 256, 171), (300, 2000, 38, 256), (20, 20, 32, 32),
             (170, 170, 32, 32), (4096, 40, 256, 3)]
    cases, want = [], []
    for k, (w, h, ow, oh) in enumerate(sizes):
        channels = 1 if k % 3 == 1 else 3
        a = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        a[: h // 2] = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]  # smooth content as well as noise
        im = Image.fromarray(a[:, :, 0] if channels == 1 else a)
        want.append(np.asarray(im.resize((ow, oh), Image.Resampling.LANCZOS)).reshape(-1))
        cases.append({"pixels": base64.b64encode(a.tobytes()).decode(), "width": w, "height": h, "channels": channels,
                      "out_width": ow, "out_height": oh})
    fixture = tmp_path / "resample.json"
    fixture.write_text(json.dumps({"cases": cases}))
    harness = Path(__file__).parent / "js" / "resample.mjs"
    done = subprocess.run([NODE, str(harness), str(fixture)], capture_output=True, text=True, timeout=120, check=True)
    for size, got, w in zip(sizes, json.loads(done.stdout), want, strict=True):
        assert np.array_equal(np.frombuffer(base64.b64decode(got), dtype=np.uint8), w), size
