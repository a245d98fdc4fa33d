"""Evaluation: the Fréchet distance against closed forms, the feature networks on real pictures, the
judges on real data (real digits are read as their labels; real emoji retrieve themselves)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unnoise.evaluation.frechet import Stats, frechet_distance


def gaussian(n: int, mu, std, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.as_tensor(mu, dtype=torch.float64) + torch.randn(n, len(std), generator=g, dtype=torch.float64) * torch.as_tensor(std, dtype=torch.float64)


def test_fd_closed_form_for_diagonal_gaussians():
    # FD(N(μ1, diag a), N(μ2, diag b)) = |μ1 − μ2|² + Σ (√a − √b)²
    a = Stats(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)), 10)
    b = Stats(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), torch.diag(torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64)), 10)
    expected = (1 + 0 + 4) + (1 + 1 + 4)
    assert frechet_distance(a, b) == pytest.approx(expected, abs=1e-9)


def test_fd_matches_the_scipy_sqrtm_formula_on_full_covariances():
    from scipy import linalg

    x, y = gaussian(400, [0] * 6, [1, 2, 3, 1, 1, 1], 0), gaussian(300, [1] * 6, [2, 1, 1, 3, 1, 1], 1)
    x[:, 1] += x[:, 0]  # correlated features
    a, b = Stats.of(x), Stats.of(y)
    s1, s2 = a.sigma.numpy(), b.sigma.numpy()
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = float(((a.mu - b.mu) ** 2).sum()) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(ref, rel=1e-8)


@settings(max_examples=30, deadline=None)
@given(shift=st.lists(st.floats(-5, 5), min_size=4, max_size=4), seed=st.integers(0, 2**16))
def test_fd_of_a_shifted_copy_is_the_squared_shift(shift, seed):
    x = gaussian(50, [0] * 4, [1, 0.5, 2, 1], seed)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + torch.tensor(shift, dtype=torch.float64)) == pytest.approx(sum(s * s for s in shift), rel=1e-6, abs=1e-6)


def test_fd_refuses_mismatched_or_too_few_features():
    with pytest.raises(ValueError, match="at least 2"):
        Stats.of(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="sizes differ"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))


def test_enl0_weights_recognise_the_cat_photo():
    from skimage import data

    from unnoise.evaluation.features import enl0_features, enl0_logits

    cat = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 127.5 - 1
    top5 = enl0_logits(cat).topk(5).indices[0].tolist()
    assert {281, 282, 285} & set(top5[:2])  # tabby / tiger cat / Egyptian cat (ImageNet classes)
    colour, grey = enl0_features(cat[:, :, :100, :100]), enl0_features(cat[:, :1, :100, :100])  # 1 channel → grey RGB
    assert colour.shape == grey.shape == (1, 1280) and colour.dtype == torch.float64 and torch.isfinite(grey).all()


def test_the_shipped_digit_classifier_reads_real_test_digits():
    from unnoise.data import get_dataset
    from unnoise.data.base import to_float
    from unnoise.evaluation.classifier import ASSET, accuracy, load_classifier

    info = json.loads((ASSET / "config.json").read_text())
    test = get_dataset("digits", "test")
    acc = accuracy(load_classifier(), to_float(test.images), test.labels)
    assert acc >= 0.99 and acc == pytest.approx(info["test_accuracy"], abs=1e-9)


def test_digits_judge_scores_real_digits_as_adherent_and_close():
    from unnoise.data import get_dataset
    from unnoise.data.base import to_float
    from unnoise.evaluation.quality import DigitsJudge

    judge = DigitsJudge(fd_enl0=False)
    train = get_dataset("digits", "train")
    x, y = to_float(train.images[:1000]), train.labels[:1000]
    real = judge.score(x, y)
    noise = judge.score(torch.rand_like(x) * 2 - 1, y)
    assert real["adherence"] >= 0.99 and noise["adherence"] < 0.5
    assert real["fd_digits"] < noise["fd_digits"] / 20
    prompts, labels = judge.prompts(25)
    assert prompts[7] == "a handwritten seven" and labels[17] == 7


def test_emoji_names_and_paraphrases_name_real_emoji():
    from unnoise.evaluation.quality import EMOJI_NAMES, EMOJI_PARAPHRASES, EmojiJudge

    judge = EmojiJudge()
    assert len(set(EMOJI_NAMES)) == len(EMOJI_NAMES) >= 50
    assert not any("skin tone" in " ".join(judge.data.names[judge.item(n)]) for n in EMOJI_NAMES)
    captions = set(judge.data.captions)
    assert not any(p in captions for p, _ in EMOJI_PARAPHRASES)
    prompts, targets = judge.prompts(70)
    assert prompts[60] == EMOJI_NAMES[0] and int(targets[0]) == judge.item(EMOJI_NAMES[0])


@pytest.mark.slow
def test_real_emoji_retrieve_themselves():
    """The retrieval judge works on real pictures: each listed emoji's own image is its nearest neighbour."""
    from unnoise.data.base import to_float
    from unnoise.evaluation.quality import EMOJI_NAMES, EmojiJudge

    judge = EmojiJudge()
    idx = torch.tensor([judge.item(n) for n in EMOJI_NAMES])
    top5, top1, _ = judge.retrieval(to_float(judge.data.images[idx]), idx)
    assert top1 == 1.0 and top5 == 1.0


@settings(max_examples=30, deadline=None)
@given(groups=st.integers(1, 12), per=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_paired_difference_is_the_mean_difference_inside_its_interval(groups, per, seed):
    from unnoise.evaluation.quality import paired_difference

    g = torch.Generator().manual_seed(seed)
    a, b = (torch.rand(groups * per, generator=g) < 0.7).double(), (torch.rand(groups * per, generator=g) < 0.6).double()
    d, lo, hi = paired_difference(a, b, groups)
    assert d == pytest.approx(float((a - b).mean()))
    assert -1 <= lo <= d <= hi <= 1
    assert paired_difference(a, a, groups) == (0.0, 0.0, 0.0)  # the same images: no difference, no spread
    swapped = paired_difference(b, a, groups)
    assert swapped[0] == pytest.approx(-d)


def test_paired_difference_interval_shrinks_with_more_prompts_and_refuses_unpaired():
    from unnoise.evaluation.quality import paired_difference

    g = torch.Generator().manual_seed(0)
    widths = []
    for groups in (20, 500):
        a, b = (torch.rand(groups * 5, generator=g) < 0.8).double(), (torch.rand(groups * 5, generator=g) < 0.8).double()
        _, lo, hi = paired_difference(a, b, groups)
        assert lo < 0 < hi  # equal rates: the interval covers 0
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3  # ~1/sqrt(prompts)
    with pytest.raises(ValueError, match="paired_difference"):
        paired_difference(torch.zeros(10), torch.zeros(12), 2)
    with pytest.raises(ValueError, match="paired_difference"):
        paired_difference(torch.zeros(10), torch.zeros(10), 3)


@pytest.mark.slow
def test_eval_distill_tables_teacher_against_student(tmp_path):
    """`unnoise eval distill` on the bundled digits teacher and a (barely trained) student of it."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "cd"
    subprocess.run([sys.executable, "-m", "unnoise", "distill", "--teacher", "digits", "--steps", "2", "--out", str(run),
                    "--max-steps", "2", "--batch-size", "4", "--threads", "1"], check=True, capture_output=True, env=env)
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "unnoise", "eval", "distill", "--teacher", "digits", "--student", str(run / "model"),
                        "--student", str(run / "model"), "-n", "10", "--teacher-nfe", "2", "--student-nfe", "1,2", "--out", str(out), "--threads", "1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())
    assert [(x["model"], x["nfe"]) for x in rows] == [("teacher", 2), *[("student", 1), ("student", 2)] * 2]
    assert [x["sampler"] for x in rows[1:]] == ["student consistency (consistency, K=2)"] * 2 + ["student consistency (consistency, K=2) 2"] * 2
    assert rows[1]["fd_digits"] == rows[3]["fd_digits"]  # the same student, seeds and prompts: the same images
    assert all(0 <= x["adherence"] <= 1 and x["fd_digits"] > 0 and x["num_images"] == 10 for x in rows)
    assert (out / "plot.png").stat().st_size > 0
    # each student row against the teacher (its only NFE, 2), image by image: both students are one model
    paired = json.loads((out / "paired.json").read_text())
    assert [(p["nfe"], p["reference_nfe"], p["metric"]) for p in paired] == [(1, 2, "adherence"), (2, 2, "adherence")] * 2
    assert [p["difference"] for p in paired[:2]] == [p["difference"] for p in paired[2:]]  # one model twice
    for p, r in zip(paired, rows[1:]):
        assert p["difference"] == pytest.approx(r["adherence"] - rows[0]["adherence"])
        assert p["low"] <= p["difference"] <= p["high"]
    assert "student − teacher at 2 calls" in (out / "results.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["sweep", "--over", "speed"], "--over must be nfe or guidance"),
    (["sweep", "--model", "digits", "--steps", "0,10"], "--steps must be integers from 1 to 1000"),
    (["sweep", "--model", "digits", "--over", "guidance", "--scales", "1,nan"], "--scales must be numbers"),
    (["sweep", "--samplers", "warp_drive"], "warp_drive"),
    (["quality", "--model", "no-such-model"], "no-such-model"),
    (["quality", "--model", "digits", "-n", "1"], "--num-images must be from 2"),
    (["distill", "--teacher", "digits", "--student", "x", "--teacher-spacing", "uniform"], "--teacher-spacing: unknown spacing 'uniform'"),
    (["distill", "--teacher", "digits", "--student", "x", "--teacher-spacing", "log_snr@-2"], "after 'log_snr@' comes"),
    (["distill", "--teacher", "digits", "--student", "x", "--teacher-nfe", "4,8", "--reference-nfe", "20"],
     "--reference-nfe 20 is not one of --teacher-nfe 4,8"),
])
def test_eval_cli_bad_input_is_one_line(args, message, capsys):
    from unnoise.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
