"""`unnoise eval styles` (issue 27): the style classifier on held-out emoji families, the split by emoji,
the diversity and retrieval rules on real pictures, and the command end to end on the bundled model."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_shipped_style_classifier_reads_held_out_families_at_its_recorded_accuracy():
    from unnoise.evaluation.classifier import accuracy
    from unnoise.evaluation.style_classifier import STYLE_ASSET, load_style_classifier, per_style_accuracy, style_data

    info = json.loads((STYLE_ASSET / "config.json").read_text())
    styles, images, labels, test = style_data()
    net, names = load_style_classifier()
    assert names == styles == ("noto", "twemoji", "openmoji") and tuple(info["styles"]) == styles
    acc = accuracy(net, images[test], labels[test])
    assert acc >= 0.95 and acc == pytest.approx(info["test_accuracy"], abs=1e-9)
    assert min(per_style_accuracy(net, images[test], labels[test], styles).values()) >= 0.93
    assert (STYLE_ASSET / "model.safetensors").stat().st_size < 1_000_000  # small enough to ship


@pytest.mark.slow
def test_train_style_classifier_learns_style_from_one_epoch(tmp_path):
    """The training command's function end to end: one epoch already reads held-out families' styles well
    above chance (1/3), and the files it writes load back into the same accuracy."""
    from unnoise.evaluation.classifier import accuracy
    from unnoise.evaluation.style_classifier import load_style_classifier, style_data, train_style_classifier

    info = train_style_classifier(tmp_path, epochs=1, progress=False)
    assert info["test_accuracy"] > 0.8 and info["train_pictures"] + info["test_pictures"] == 11_514
    _, images, labels, test = style_data()
    net, styles = load_style_classifier(tmp_path)
    assert accuracy(net, images[test], labels[test]) == pytest.approx(info["test_accuracy"], abs=1e-9)
    assert json.loads((tmp_path / "config.json").read_text())["styles"] == list(styles)


def test_the_style_split_is_by_emoji_family_and_tests_every_held_out_emoji():
    from unnoise.data.emoji import family_of
    from unnoise.data.emoji_styles import STYLES, held_out_emoji, load_styles
    from unnoise.evaluation.style_classifier import style_split

    _, styles = load_styles()
    seqs = [s for style in STYLES for s in styles[style][0]]
    test = style_split(seqs).tolist()
    train_families = {family_of(s) for s, t in zip(seqs, test) if not t}
    test_families = {family_of(s) for s, t in zip(seqs, test) if t}
    assert not train_families & test_families  # no emoji on both sides: the accuracy measures style
    assert set(held_out_emoji()) <= test_families
    assert 0.15 < sum(test) / len(test) < 0.35


def test_diversity_needs_two_styles_read_with_confidence():
    from unnoise.evaluation.styles import diversity

    ids = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [2, 2, 1, 1], [1, 1, 1, 1]])
    assert diversity(ids).tolist() == [False, True, True, False]
    conf = torch.tensor([[1.0] * 4, [1.0, 0.5, 1.0, 1.0], [0.9, 0.9, 0.9, 0.2], [0.1] * 4])
    assert diversity(ids, conf, 0.8).tolist() == [False, False, True, False]  # a lone unsure read does not count
    assert diversity(ids, min_count=2).tolist() == [False, False, True, False]  # a lone read of a style neither
    assert diversity(ids, conf, 0.8, min_count=2).tolist() == [False] * 4


def test_spread_keeps_every_category_in_small_subsets():
    from unnoise.evaluation.quality import EMOJI_NAMES
    from unnoise.evaluation.styles import spread

    assert spread(EMOJI_NAMES, None) == list(EMOJI_NAMES) == spread(EMOJI_NAMES, 1000)
    four = spread(EMOJI_NAMES, 4)
    assert four == [EMOJI_NAMES[0], EMOJI_NAMES[15], EMOJI_NAMES[30], EMOJI_NAMES[45]]


@pytest.mark.slow
def test_real_pictures_retrieve_their_own_emoji_in_every_style():
    """The retrieval rule on real pictures: each style's picture of a listed emoji finds that emoji within its
    style and among all styles, and not a different emoji (the first run caches the atlases' ENL0 features)."""
    from unnoise.data.base import to_float
    from unnoise.evaluation.features import enl0_features
    from unnoise.evaluation.quality import EMOJI_NAMES
    from unnoise.evaluation.styles import StyleReferences, spread

    refs = StyleReferences()
    names = spread(EMOJI_NAMES, 12)
    targets = [refs.seq(n) for n in names]
    for style in refs.styles:
        seqs, tiles = refs._styles[style]
        feats = enl0_features(to_float(tiles[[seqs.index(t) for t in targets]]))
        assert refs.top5_hits(feats, targets, [style]).tolist() == [1.0] * len(names)
        assert refs.top5_hits(feats, targets, refs.styles).tolist() == [1.0] * len(names)
        assert refs.top5_hits(feats, targets[1:] + targets[:1], [style]).sum() <= 1  # shifted targets: misses


@pytest.mark.slow
def test_eval_styles_on_the_bundled_model(tmp_path, cli):
    """The command end to end on the bundled emoji model: every goal reported against its target, the style
    shares of its untagged paintings, FD-ENL0 per style, and the files written."""
    out = tmp_path / "styles"
    r = cli(["eval", "styles", "--model", "emoji", "-n", "4", "--seeds", "2", "--diversity-seeds", "4",
             "--out", str(out), "--threads", "1"])
    assert r.code == 0, r.err[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert set(result["goals"]) == {"names_noto_top5", "paraphrases_top5", "held_out_top5", "diversity"}
    assert result["num_names"] == result["num_paraphrases"] == result["num_held_out"] == 4
    shares = result["style_shares_untagged"]
    assert set(shares) == {"noto", "twemoji", "openmoji"} and sum(shares.values()) == pytest.approx(1, abs=0.02)
    assert set(result["fd_enl0"]) == {"noto", "twemoji", "openmoji"} and all(v > 0 for v in result["fd_enl0"].values())
    assert all(0 <= g["value"] <= 1 and g["met"] == (g["value"] >= g["goal"]) for g in result["goals"].values())
    assert "| exact names" in (out / "results.md").read_text() and "≥ 85%" in r.out


@pytest.mark.parametrize("args, message", [
    (["--seeds", "1"], "--seeds must be from 2 to 100"),
    (["--diversity-seeds", "0"], "--diversity-seeds must be from 2 to 100"),
    (["-n", "0"], "--num-prompts must be from 1 to 1000"),
    (["--model", "digits"], "eval styles scores 32×32 emoji models only"),
])
def test_eval_styles_bad_input_is_one_line(args, message, capsys):
    from unnoise.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "styles", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
