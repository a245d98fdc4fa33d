"""The in-browser lab's pure JavaScript engine (src/unnoise/lab/static/engine/) against the Python it mirrors.

Each test writes a fixture computed by the Python side, runs a node harness (tests/js/*.mjs) on it and
compares the harness's JSON answer here.  Skipped, with the reason, where `node` is not installed."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from unnoise import schedules

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js ≥ 20) is not installed")
HARNESS = Path(__file__).parent / "js"


def run_node(harness: str, fixture, tmp_path: Path):
    """Run tests/js/<harness>.mjs on the fixture (written as JSON) and return its JSON stdout."""
    path = tmp_path / f"{harness}.json"
    path.write_text(json.dumps(fixture, allow_nan=False))
    done = subprocess.run([NODE, str(HARNESS / f"{harness}.mjs"), str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def max_rel(ours, theirs) -> float:
    a = torch.as_tensor(ours, dtype=torch.float64)
    b = torch.as_tensor(theirs, dtype=torch.float64)
    assert a.shape == b.shape
    return float(((a - b).abs() / b.abs().clamp(min=1e-300)).max()) if a.numel() else 0.0


# ---------------------------------------------------------------------------------------------------------
# schedules.js


SCHEDULES = [*schedules.available()]
STEPS = [1, 2, 4, 20, 50, 1000]
SPACINGS = [*schedules.SPACINGS, "log_snr@0.5", "log_snr@0.02"]


def test_schedules_match_python(tmp_path):
    probe = [0.0, 1e-3, 0.0064, 0.01, 0.3, 1.0, 1.7, 80.0, 157.0, 1e5]
    cases = [{"name": n, "numSteps": 1000, "steps": STEPS, "spacing": SPACINGS, "probe": probe} for n in SCHEDULES]
    cases.append({"name": "cosine", "numSteps": 37, "steps": [1, 2, 5, 37], "spacing": SPACINGS, "probe": probe})
    worst = {"alphas_cumprod": 0.0, "sigmas": 0.0, "t": 0.0}
    for case, got in zip(cases, run_node("schedules", {"cases": cases}, tmp_path)):
        s = schedules.get(case["name"], case["numSteps"])
        worst["alphas_cumprod"] = max(worst["alphas_cumprod"], max_rel(got["alphasCumprod"], s.alphas_cumprod))
        t = s.sigma_to_t(torch.tensor(probe, dtype=torch.float64))
        worst["t"] = max(worst["t"], float((torch.tensor(got["t"], dtype=torch.float64) - t).abs().max()))
        for steps in case["steps"]:
            for spacing in case["spacing"]:
                js = got["sigmas"][str(steps)][spacing]
                try:
                    py = s.sigmas(steps, spacing)
                except schedules.ScheduleError:
                    assert isinstance(js, dict), (case["name"], steps, spacing, "Python refuses, JS does not")
                    continue
                assert not isinstance(js, dict), (case["name"], steps, spacing, js)
                assert js[-1] == 0.0
                worst["sigmas"] = max(worst["sigmas"], max_rel(js[:-1], py[:-1]))
    print("schedules.js max relative differences:", worst)
    assert worst["alphas_cumprod"] < 1e-12 and worst["sigmas"] < 1e-6 and worst["t"] < 1e-9, worst
