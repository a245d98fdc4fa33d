"""The multi-style emoji data (issue 27): held-out Noto pictures, captions, and the reproducible build."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import emoji
import pytest
import torch

from unnoise.data import DataError, get_dataset
from unnoise.data import emoji_styles as es
from unnoise.data.emoji import ASSET_DIR as NOTO_DIR
from unnoise.data.emoji import load_asset


@pytest.fixture(scope="module")
def ds():
    return get_dataset("emoji-styles")


@pytest.fixture(scope="module")
def noto():
    return load_asset(NOTO_DIR, 32)


def rule(seq: str) -> bool:
    """The issue's words, written out again: no skin tone, clean name's crc32 % 20 == 7."""
    if any(0x1F3FB <= ord(c) <= 0x1F3FF for c in seq):
        return False
    name = " ".join(emoji.EMOJI_DATA[seq]["en"].replace(":", "").replace("_", " ").split()).lower()
    return zlib.crc32(name.encode("utf-8")) % 20 == 7


def test_hold_out_is_exactly_the_crc32_rule(ds, noto):
    records, _ = noto
    expected = [r["emoji"] for r in records if rule(r["emoji"])]
    assert es.held_out_emoji() == expected
    assert 80 <= len(expected) <= 120  # about 5 % of the ~1900 base emoji
    in_noto = {e for e, s in zip(ds.emoji, ds.styles) if s == "noto"}
    assert in_noto == {r["emoji"] for r in records} - set(expected)
    assert es.clean_name("\U0001F431") == "cat face" and es.clean_name("\U0001F1EC\U0001F1FC") == "guinea-bissau"


def test_training_never_sees_a_held_out_noto_picture(ds, noto):
    records, tiles = noto
    held = [i for i, r in enumerate(records) if rule(r["emoji"])]
    training = {bytes(t.numpy()) for t in ds.images}
    seen = [records[i]["emoji"] for i in held if bytes(tiles[i].numpy()) in training]
    assert seen == []
    batch, _ = ds.get_batch(torch.arange(len(ds)))  # what the training loop reads
    as_uint8 = {bytes(t.numpy()) for t in ((batch + 1) * 127.5).round().to(torch.uint8)}
    assert not any(bytes(tiles[i].numpy()) in as_uint8 for i in held)
    # their other styles stay in
    other = {e for e, s in zip(ds.emoji, ds.styles) if s != "noto"}
    assert sum(records[i]["emoji"] in other for i in held) >= 0.9 * len(held)


def test_every_picture_has_plain_and_style_suffixed_captions(ds):
    assert set(ds.styles) == set(es.STYLES)
    for i in range(0, len(ds), 97):
        caps = ds.item_captions(i)
        suffix = f", {ds.styles[i]} style"
        assert any(c.endswith(suffix) for c in caps) and any(not c.endswith(" style") for c in caps), caps
        assert all(not c.endswith(" style") or c.endswith(suffix) for c in caps), caps
    cat = [i for i, e in enumerate(ds.emoji) if e == "\U0001F431"]
    assert sorted(ds.styles[i] for i in cat) == sorted(es.STYLES)
    for i in cat:
        caps = ds.item_captions(i)
        assert {"cat face", "kitten", f"cat face, {ds.styles[i]} style", f"kitten, {ds.styles[i]} style"} <= set(caps)


def test_styles_match_by_code_points_without_fe0f(ds):
    assert es.key("\u2764\ufe0f") == es.key("\u2764") == "2764"
    heart = {s for e, s in zip(ds.emoji, ds.styles) if e == "\u2764\ufe0f"}
    assert heart == set(es.STYLES)


def test_a_family_subset_keeps_exactly_those_families_and_their_rows(ds):
    """families=…: the diagnostic's subset (scripts/emoji_styles_subset.py) is the full data's rows of those
    families, in order, captions and all; held-out Noto pictures stay out; an empty choice is one clear error."""
    from unnoise.data.emoji import family_of

    cat = family_of("\U0001F431")
    held = es.held_out_emoji()[0]
    sub = es.EmojiStylesDataset(families={cat, family_of(held)})
    rows = [i for i, e in enumerate(ds.emoji) if family_of(e) in {cat, family_of(held)}]
    assert sub.emoji == [ds.emoji[i] for i in rows] and sub.styles == [ds.styles[i] for i in rows]
    assert torch.equal(sub.images, ds.images[rows])
    assert [sub.item_captions(j) for j in range(len(sub))] == [ds.item_captions(i) for i in rows]
    assert (held, "noto") not in set(zip(sub.emoji, sub.styles)) and held in sub.emoji
    with pytest.raises(DataError, match="none of the 1 families"):
        es.EmojiStylesDataset(families={"no such family"})


def test_only_32_pixels_and_one_split():
    with pytest.raises(DataError, match="32"):
        get_dataset("emoji-styles", image_size=64)
    with pytest.raises(DataError, match="one split"):
        get_dataset("emoji-styles", split="test")


def test_shipped_files_are_small():
    files = [p for p in es.ASSET_DIR.iterdir()]
    assert all(p.stat().st_size < 20e6 for p in files)
    assert sum(p.stat().st_size for p in files) < 15e6
    names = {p.name for p in files}
    assert {"ATTRIBUTION.md", "LICENSE-openmoji-CC-BY-SA-4.0.txt"} <= names


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"><circle cx="36" cy="36" r="{r}" '
       'fill="#fcea2b" stroke="#000" stroke-width="2"/></svg>')


def fake_npm(root: Path) -> Path:
    """A node_modules folder with two pictures per style and a keyword file, in the packages' layouts."""
    from PIL import Image, ImageDraw

    nm = root / "node_modules"
    for pkg, version in (("emoji-datasource-twitter", "16.0.0"), ("openmoji", "17.0.0"), ("emojibase-data", "17.0.0")):
        (nm / pkg).mkdir(parents=True)
        (nm / pkg / "package.json").write_text(json.dumps({"version": version}))
    png = nm / "emoji-datasource-twitter" / "img" / "twitter" / "64"
    svg = nm / "openmoji" / "color" / "svg"
    png.mkdir(parents=True)
    svg.mkdir(parents=True)
    for k, (hexcode, upper) in enumerate((("1f431", "1F431"), ("2764-fe0f", "2764-FE0F"))):
        im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        ImageDraw.Draw(im).ellipse((4 + k, 6, 60, 58), fill=(200, 80 + 50 * k, 40, 255))
        im.save(png / f"{hexcode}.png")
        (svg / f"{upper}.svg").write_text(SVG.format(r=20 + 8 * k))
    (nm / "emojibase-data" / "en").mkdir()
    (nm / "emojibase-data" / "en" / "data.json").write_text(json.dumps(
        [{"emoji": "\U0001F431", "tags": ["cat", "kitten"]}, {"emoji": "\u2764\ufe0f", "tags": ["love"]}]))
    return nm


def test_build_is_bit_exactly_reproducible(tmp_path):
    pytest.importorskip("resvg_py")  # a build-time tool only, not a runtime dependency
    nm = fake_npm(tmp_path)
    a, b = es.build(nm, tmp_path / "a"), es.build(nm, tmp_path / "b")
    assert a == b and {s: len(a["styles"][s]["emoji"]) for s in es.BUILT_STYLES} == {"twemoji": 2, "openmoji": 2}
    assert a["index"]["\U0001F431"]["keywords"] == ["cat", "kitten"]
    for p in sorted((tmp_path / "a").iterdir()):
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("UNNOISE_EMOJI_NPM"), reason="set UNNOISE_EMOJI_NPM to a node_modules "
                    "folder with emoji-datasource-twitter, openmoji and emojibase-data (see docs/data.md)")
def test_build_from_the_real_packages_gives_the_shipped_bytes(tmp_path):
    pytest.importorskip("resvg_py")
    es.build(Path(os.environ["UNNOISE_EMOJI_NPM"]), tmp_path)
    shipped = sorted(p.name for p in es.ASSET_DIR.glob("*-32-*.png")) + ["styles.json"]
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (es.ASSET_DIR / name).read_bytes(), name


def test_caption_kinds_mark_names_and_keywords_plain_and_tagged():
    from unnoise.data.emoji_styles import caption_kinds, style_captions

    names, tags = ["cat face"], ["cat", "face", "kitten", "cat face"]
    captions = style_captions(names, tags, "twemoji")
    kinds = dict(zip(captions, caption_kinds(names, tags, "twemoji"), strict=True))
    assert kinds["cat face"] == kinds["an emoji of a cat face"] == 0 and kinds["cat face, twemoji style"] == 1
    assert kinds["kitten"] == 2 and kinds["kitten, twemoji style"] == 3
