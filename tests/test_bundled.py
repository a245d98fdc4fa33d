"""The bundled models: shipped inside the package (also in a built wheel), small, documented, and they
paint what they are asked for (digits judged by the project's classifier)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from unnoise import Painter
from unnoise.modeldir import BUNDLED, resolve

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_is_small_documented_and_loads(name):
    d = resolve(name)
    files = {p.name: p.stat().st_size for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "unnoise.json", "MODEL.md"} <= set(files)
    assert all(size < 20 * 2**20 for size in files.values())
    card = (d / "MODEL.md").read_text()
    assert "compute time" in card and "machine:" in card
    info = json.loads((d / "unnoise.json").read_text())
    assert info["training"]["steps"] > 0
    teacher = info["training"].get("distilled_from")
    if teacher is None:  # trained: the card has its `unnoise train` command
        assert "unnoise train --data" in card and info["dataset"] == name
    else:  # a distilled student: of a bundled teacher (by name, not a path), with its teacher's data and vocabulary
        assert f"unnoise distill --teacher {teacher}" in card and teacher in BUNDLED
        assert info["dataset"] == json.loads((resolve(teacher) / "unnoise.json").read_text())["dataset"]
        assert (d / "vocabulary.safetensors").read_bytes() == (resolve(teacher) / "vocabulary.safetensors").read_bytes()
    painter = Painter.from_pretrained(name)
    assert painter.shape == ((3, 32, 32) if info["dataset"] == "emoji" else (1, 32, 32))


def test_emoji_is_the_default_model_and_paints_rgb():
    painter = Painter.from_pretrained()
    assert painter.info.dataset == "emoji"
    (im,) = painter("a cat face", steps=8, seed=0)
    assert im.mode == "RGB" and im.size == (32, 32)
    again = painter("a cat face", steps=8, seed=0)[0]
    assert im.tobytes() == again.tobytes()  # seeds reproduce


def test_bundled_digits_paint_the_prompted_digit():
    """A quick check of the real model (the ≥ 97 % over 500 images is measured by `unnoise eval`)."""
    from unnoise.data.digits import WORDS
    from unnoise.evaluation.classifier import load_classifier
    from unnoise.evaluation.quality import Setting, paint_many

    painter = Painter.from_pretrained("digits")
    labels = torch.arange(30) % 10
    x, nfe = paint_many(painter, [f"a handwritten {WORDS[d]}" for d in labels.tolist()], list(range(30)), Setting(steps=10))
    assert nfe == 10
    with torch.inference_mode():
        read = load_classifier()(x).argmax(1)
    assert (read == labels).double().mean() >= 0.9


@pytest.mark.parametrize("name, calls", [("digits-fast", 4), ("digits-1step", 1)])
def test_bundled_digits_students_paint_the_prompted_digit_in_single_batch_calls(name, calls):
    """The distilled students: 4 (or 1) network calls of one batch each (w is an input, no CFG doubling); the FD
    and adherence over 500 images against the teacher are measured by `unnoise eval distill` (docs/distill.md)."""
    from unnoise.data.digits import WORDS
    from unnoise.evaluation.classifier import load_classifier
    from unnoise.evaluation.quality import Setting, paint_many

    painter = Painter.from_pretrained(name)
    d = painter.defaults
    assert (d["sampler"], d["steps"], d["spacing"]) == ("ddim", calls, "log_snr_trailing")
    labels = torch.arange(30) % 10
    batches = []
    hook = painter.model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    x, nfe = paint_many(painter, [f"a handwritten {WORDS[d]}" for d in labels.tolist()], list(range(30)),
                        Setting(sampler="ddim", steps=calls, guidance=d["guidance"]))
    hook.remove()
    assert nfe == calls and batches == [30] * calls
    with torch.inference_mode():
        read = load_classifier()(x).argmax(1)
    assert (read == labels).double().mean() >= 0.9


def test_bundled_emoji_student_paints_the_prompted_emoji_in_four_single_batch_calls():
    """emoji-fast: 4 network calls of one batch each, and the judge finds the prompted emoji among the 5
    nearest for most of its 60 names (one seed each; 300 images against the teacher: docs/distill.md)."""
    from unnoise.evaluation.quality import EmojiJudge, Setting, paint_many

    painter = Painter.from_pretrained("emoji-fast")
    d = painter.defaults
    assert (d["sampler"], d["steps"], d["spacing"]) == ("ddim", 4, "log_snr@0.5")
    judge = EmojiJudge()
    prompts, targets = judge.distinct_prompts()
    batches = []
    hook = painter.model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    x, nfe = paint_many(painter, prompts, list(range(len(prompts))),
                        Setting(sampler="ddim", steps=4, guidance=d["guidance"]))
    hook.remove()
    assert nfe == 4 and batches == [len(prompts)] * 4
    top5, _, _ = judge.retrieval(x, targets)
    assert top5 >= 0.6


def test_painting_a_student_outside_what_it_learned_says_so(tmp_path, cli):
    """emoji-fast learned w ∈ [2, 4] as an input and has no unconditional pass: the CLI paints, with a note."""
    out = tmp_path / "cat.png"
    quiet = cli(["paint", "cat face", "--model", "emoji-fast", "--seed", "0", "--out", str(out)])
    assert quiet.code == 0 and "note:" not in quiet.err
    loud = cli(["paint", "cat face", "--model", "emoji-fast", "--seed", "0", "-g", "5", "--negative-prompt", "dog",
                "--out", str(out)])
    assert loud.code == 0 and out.exists()
    assert "learned guidance from 2 to 4; at 5 it extrapolates" in loud.err
    assert "--negative-prompt and --guidance-rescale change nothing" in loud.err
    teacher = cli(["paint", "cat face", "--model", "emoji", "--steps", "2", "-g", "5", "--negative-prompt", "dog",
                   "--out", str(out)])
    assert teacher.code == 0 and "note:" not in teacher.err


@pytest.mark.slow
def test_a_built_wheel_carries_the_models_and_the_judges(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("unnoise-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in BUNDLED:
        for f in ("config.json", "model.safetensors", "unnoise.json", "MODEL.md"):
            assert f"unnoise/bundled/{name}/{f}" in names
    assert "unnoise/evaluation/assets/digit-classifier/model.safetensors" in names
    assert {"unnoise/evaluation/assets/style-classifier/model.safetensors",
            "unnoise/evaluation/assets/style-classifier/config.json"} <= names
    assert "unnoise/data/assets/emoji/emoji.json" in names
    for f in ("styles.json", "twemoji-32-0.png", "openmoji-32-0.png", "ATTRIBUTION.md",
              "LICENSE-openmoji-CC-BY-SA-4.0.txt"):
        assert f"unnoise/data/assets/emoji-styles/{f}" in names
