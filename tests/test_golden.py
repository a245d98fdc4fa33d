"""Golden outputs (tests/golden/, written by scripts/make_golden.py): each bundled model paints its stored
pictures within 1 grey level with its own defaults, and 20 steps of tiny training give the stored weights to
float tolerance.  A refactor must leave these passing; a deliberate numeric change rewrites them in its own
commit (README in tests/golden/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
MANIFEST = json.loads(golden.MANIFEST.read_text())


def test_every_bundled_model_has_golden_pictures():
    from unnoise.modeldir import BUNDLED

    assert set(golden.CASES) == set(BUNDLED)
    assert {p["model"] for p in MANIFEST["pictures"].values()} == set(BUNDLED)


@pytest.mark.parametrize("model", list(golden.CASES))
def test_bundled_model_paints_its_golden_pictures(model):
    rows = golden.compare_pictures(golden.paint_cases([model]), MANIFEST)
    assert len(rows) == len(golden.CASES[model]) * MANIFEST["num_images"]
    bad = [r for r in rows if r["max"] is None or r["max"] > golden.GREY_TOLERANCE or not r["params_match"]]
    assert not bad, f"differs from tests/golden/pictures (stored on {MANIFEST['environment']}): {bad}"


def test_tiny_training_gives_the_golden_weights(tmp_path):
    t = golden.compare_training(golden.train_tiny(tmp_path / "run"), MANIFEST)
    assert t["keys_match"]
    assert t["within"], f"max |Δweight| {t['max_abs']:.3g} (stored on {MANIFEST['environment']})"
    assert t["ema_norm_rel"] <= golden.NORM_RTOL
    assert t["loss_diff"] <= 1e-4
