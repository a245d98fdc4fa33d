"""Datasets on real files: MNIST digits, the shipped emoji atlases, and captioned folders (broken ones too)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from unnoise.data import DataError, get_dataset
from unnoise.data.base import CaptionedImages
from unnoise.data.digits import DigitsDataset, archive_path, load_arrays
from unnoise.data.emoji import ASSET_DIR, FONT_PATH, EmojiDataset, _resize, build, drawable, load_asset
from unnoise.data.folder import FolderDataset

needs_font = pytest.mark.skipif(not FONT_PATH.is_file(), reason="fonts-noto-color-emoji not installed")


# ---------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits() -> DigitsDataset:
    return get_dataset("digits")


def test_digits_shapes_range_and_padding(digits):
    assert (len(digits), digits.image_size, digits.channels, digits.name) == (60_000, 32, 1, "digits")
    assert len(get_dataset("digits", "test")) == 10_000
    image, caption = digits[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert image.min() == -1.0 and image.max() == 1.0
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(digits.images[:, 0][:, border] == 0)  # the 2-pixel zero pad, no resampling
    raw, _ = load_arrays("train")
    assert torch.equal(digits.images[:, 0, 2:30, 2:30], torch.from_numpy(raw.copy()))


def test_digits_equal_the_zarr_reader():
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(zarr.storage.ZipStore(str(archive_path()), mode="r"), mode="r")
    for split in ("train", "test"):
        images, labels = load_arrays(split)
        assert np.array_equal(images, group[f"{split}_images"][:])
        assert np.array_equal(labels, group[f"{split}_labels"][:])
    assert load_arrays("train")[0] is load_arrays("train")[0]  # decoded once per process


def test_digit_captions_are_varied_and_match_labels(digits):
    assert len(digits.captions) == 100 == len(set(digits.captions))
    sevens = torch.nonzero(digits.labels == 7)[:, 0]
    i = int(sevens[0])
    assert digits.captions[digits[i][1]] == "a handwritten seven"
    assert {"a handwritten seven", "the digit 7", "7", "a seven", "number seven"} <= set(digits.item_captions(i))
    assert digits.item_captions(int(torch.nonzero(digits.labels == 8)[0, 0]))[3] == "an eight"
    items = torch.arange(0, 60_000, 7)
    g = torch.Generator().manual_seed(3)
    _, drawn = digits.get_batch(items, generator=g)
    for j, c in zip(items[:500].tolist(), drawn[:500].tolist()):
        assert c in digits.caption_choices(j).tolist()
    assert len(set(drawn[digits.labels[items] == 7].tolist())) == 10  # every phrasing gets drawn
    again = digits.draw_captions(items, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, again)
    assert torch.equal(digits.draw_captions(items[:300]), torch.tensor([digits[j][1] for j in items[:300].tolist()]))


@pytest.mark.parametrize("size", [28, 64])
def test_digits_other_sizes(size):
    ds = DigitsDataset("test", image_size=size)
    assert ds.images.shape == (10_000, 1, size, size) and ds.images.dtype == torch.uint8


def test_digits_bad_arguments():
    with pytest.raises(DataError, match="splits"):
        get_dataset("digits", "validation")
    with pytest.raises(DataError, match="image_size"):
        get_dataset("digits", image_size=3)


# ---------------------------------------------------------------- emoji
@pytest.fixture(scope="module")
def emoji_set() -> EmojiDataset:
    return get_dataset("emoji")


def test_emoji_shapes_range_captions(emoji_set):
    assert emoji_set.name == "emoji" and emoji_set.channels == 3 and emoji_set.image_size == 32
    assert 3000 < len(emoji_set) < 5000
    x, _ = emoji_set[0]
    assert x.shape == (3, 32, 32) and -1.0 <= x.min() and x.max() == 1.0
    corners = emoji_set.images[:, :, 0, 0]
    assert (corners == 255).all(dim=1).float().mean() > 0.95  # composited on a white page
    cat = emoji_set.emoji.index("\U0001F431")  # 🐱
    assert {"cat face", "cat face emoji", "an emoji of a cat face", "cat"} <= set(emoji_set.item_captions(cat))
    assert emoji_set.captions[emoji_set[cat][1]] == "cat face"
    japan = emoji_set.emoji.index("\U0001F1EF\U0001F1F5")  # flags render as one glyph
    assert "an emoji of Japan" in emoji_set.item_captions(japan)
    assert len(emoji_set.captions) == len(set(emoji_set.captions))


def test_emoji_has_skin_tone_variants(emoji_set):
    wave = ["\U0001F44B" + tone for tone in ("", "\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF")]
    idx = [emoji_set.emoji.index(w) for w in wave]
    assert "waving hand medium skin tone" in emoji_set.item_captions(idx[3])
    tiles = emoji_set.images[idx].float()
    assert all((tiles[0] - t).abs().mean() > 1 for t in tiles[1:])  # really different pictures
    assert sum("skin tone" in n[0] for n in emoji_set.names) > 1000


def test_family_balance_draws_each_skin_tone_family_as_one(emoji_set):
    wave = [emoji_set.emoji.index("\U0001F44B" + t) for t in ("", "\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF")]
    fox = emoji_set.emoji.index("\U0001F98A")
    assert len(set(emoji_set.families[wave].tolist())) == 1 and emoji_set.families[fox] != emoji_set.families[wave[0]]
    n_families = len(set(emoji_set.families.tolist()))
    assert 1800 < n_families < len(emoji_set) * 0.6  # about half the items are skin-tone variants
    w = emoji_set.sampling_weights("families")
    assert w.sum().item() == pytest.approx(1.0)
    assert w[wave].sum().item() == pytest.approx(w[fox].item()) == pytest.approx(1 / n_families)
    assert emoji_set.sampling_weights("items") is None
    with pytest.raises(ValueError, match="balance"):
        emoji_set.sampling_weights("classes")


def test_caption_draw_by_names_gives_names_three_quarters_with_one_draw_per_item():
    """caption_weights("names"): shares by kind (3/8 plain names, 3/8 tagged names, 1/8 each for keywords),
    uniform within a kind, a missing kind's share given to the others; the draw follows them, uses one
    float64 per item as the uniform draw does (so a resumed run's stream is unchanged), and never picks a
    zero-weight entry."""
    from unnoise.data.base import CaptionedImages, DataError

    sets = [["cat", "cat, a style", "face", "pet", "face, a style", "pet, a style"], ["dog", "dog, a style"]]
    kinds = [[0, 1, 2, 2, 3, 3], [0, 1]]
    ds = CaptionedImages("toy", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), sets, kinds=kinds)
    w = ds.caption_weights("names")
    assert w.tolist() == pytest.approx([3 / 8, 3 / 8, 1 / 16, 1 / 16, 1 / 16, 1 / 16, 3 / 8, 3 / 8])
    assert ds.caption_weights("uniform") is None
    items = torch.zeros(40_000, dtype=torch.int64)
    g, ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    drawn = ds.draw_captions(items, g, weights=w)
    ds.draw_captions(items, ref)
    assert torch.equal(g.get_state(), ref.get_state())  # the same number of draws as uniform
    share = torch.bincount(drawn, minlength=len(ds.captions)).double() / len(items)
    assert share[:2].sum().item() == pytest.approx(0.75, abs=0.01) and share[2].item() == pytest.approx(1 / 16, abs=0.005)
    zero = w.clone()
    zero[1] = 0
    assert 1 not in ds.draw_captions(items, g, weights=zero).tolist()
    with pytest.raises(DataError, match="kinds"):
        CaptionedImages("toy", torch.zeros(1, 1, 4, 4, dtype=torch.uint8), [["a", "b"]], kinds=[[0]])
    with pytest.raises(DataError, match="needs a dataset that marks its name captions"):
        CaptionedImages("toy", torch.zeros(1, 1, 4, 4, dtype=torch.uint8), [["a"]]).caption_weights("names")
    with pytest.raises(ValueError, match="caption draw"):
        ds.caption_weights("keywords")


def test_family_weighted_batches_follow_the_weights():
    from unnoise.training.loop import Batches

    data = CaptionedImages("toy", torch.zeros(4, 1, 2, 2, dtype=torch.uint8), sets=[["a"], ["b"], ["c"], ["d"]])
    data.families = torch.tensor([0, 0, 0, 1])  # three near-duplicates and one singleton
    batches = Batches(data, seed=1, weights=data.sampling_weights("families"))
    drawn = torch.cat([batches.indices(step, 4) for step in range(4000)])
    assert (drawn == 3).double().mean().item() == pytest.approx(0.5, abs=0.01)  # uniform would give 0.25
    again = Batches(data, seed=1, weights=data.sampling_weights("families"))
    assert torch.equal(again.indices(123, 4), batches.indices(123, 4))  # from (seed, epoch) alone: resumable
    assert data.sampling_weights("families") is not None and CaptionedImages(
        "plain", data.images, sets=[["a"]] * 4).sampling_weights("families") is None


def test_emoji_64_and_resized(emoji_set):
    big = EmojiDataset(64)
    assert big.images.shape == (len(emoji_set), 3, 64, 64)
    assert big.captions == emoji_set.captions
    small = _resize(big.images[:50], 32)  # other sizes are resized from the 64 px atlas, tile by tile
    assert small.shape == (50, 3, 32, 32)
    assert (small.float() - emoji_set.images[:50].float()).abs().mean() < 8  # ≈ the 32 px atlas (drawn from 136 px)


@needs_font
def test_drawable_rejects_tofu_and_broken_sequences():
    from fontTools.ttLib import TTFont

    from unnoise.data.emoji import _font

    font = _font(FONT_PATH)
    cmap = set(TTFont(str(FONT_PATH), lazy=True).getBestCmap())
    one = font.getlength("\U0001F600")
    assert drawable(font, cmap, "\U0001F431", one)  # 🐱
    assert drawable(font, cmap, "\U0001F9D1\u200D\U0001F680", one)  # 🧑‍🚀, a ZWJ ligature
    assert not drawable(font, cmap, "\U0001FAE9", one)  # a Unicode 16 emoji this font lacks: tofu
    assert not drawable(font, cmap, "\U0001F431\u200D\U0001F355", one)  # cat ZWJ pizza: two glyphs
    assert not drawable(font, cmap, "ab", one)


@needs_font
def test_build_round_trip_matches_the_shipped_asset(tmp_path):
    meta = build(tmp_path, limit=40, tiles_per_atlas=32)  # two atlases per size, the last one partial
    assert meta["count"] == 40 and meta["atlases"]["64"] == ["atlas-64-0.png", "atlas-64-1.png"]
    shipped = json.loads((ASSET_DIR / "emoji.json").read_text())
    records, tiles = load_asset(tmp_path, 64)
    assert [r["emoji"] for r in records] == [r["emoji"] for r in shipped["emoji"][:40]]
    if meta["versions"] != shipped["versions"]:
        pytest.skip(f"font/emoji/Pillow differ from the build: {meta['versions']} vs {shipped['versions']}")
    _, ours = load_asset(ASSET_DIR, 64)
    assert torch.equal(tiles, ours[:40])  # PNG is lossless: the shipped pixels are what the code draws


@pytest.mark.slow
@needs_font
def test_emoji_straight_from_the_font_equals_the_asset(tmp_path):
    direct = EmojiDataset(32, asset_dir=tmp_path)  # no asset there: renders the whole font
    shipped = EmojiDataset(32, source="asset")
    assert direct.emoji == shipped.emoji and direct.captions == shipped.captions
    assert (direct.images.int() - shipped.images.int()).abs().max() <= 1  # same Lanczos, PNG round trip


def test_broken_asset_is_a_clear_error(tmp_path):
    (tmp_path / "emoji.json").write_text("{not json")
    with pytest.raises(DataError, match="rebuild it"):
        EmojiDataset(source="asset", asset_dir=tmp_path)
    with pytest.raises(DataError, match="one split"):
        get_dataset("emoji", "test")


# ---------------------------------------------------------------- folders
def _folder(tmp_path: Path, lines: list, files: dict[str, bytes | Image.Image] | None = None) -> Path:
    for name, content in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Image.Image):
            content.save(path)
        else:
            path.write_bytes(content)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (tmp_path / "metadata.jsonl").write_text(text + "\n")
    return tmp_path


def _picture(mode: str, size: tuple[int, int], color) -> Image.Image:
    return Image.new(mode, size, color)


def test_folder_loads_real_files(tmp_path):
    wide = _picture("RGB", (90, 40), (200, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 25, 40))  # blue strip on the left: cropped away by the centre crop
    clear = _picture("RGBA", (20, 20), (0, 0, 0, 0))  # fully transparent → white page
    folder = _folder(tmp_path, [
        {"file_name": "red.jpg", "text": "a red square"},
        {"file_name": "sub/clear.png", "text": ["nothing", "a blank page"]},
        "",  # blank lines are allowed
        {"file_name": "gray.png", "text": "a gray square", "extra": 1},
    ], {"red.jpg": wide, "sub/clear.png": clear, "gray.png": _picture("L", (64, 64), 128)})
    ds = get_dataset(folder)
    assert (len(ds), ds.image_size, ds.channels) == (3, 32, 32, 3)[:1] + (32, 3)
    assert ds.files == ["red.jpg", "sub/clear.png", "gray.png"]
    red, c = ds[0]
    assert ds.captions[c] == "a red square" and red.shape == (3, 32, 32)
    assert red[0].mean() > 0.4 and red[2].mean() < -0.8  # JPEG red; the blue strip was cropped
    assert torch.all(ds[1][0] == 1.0) and ds.item_captions(1) == ["nothing", "a blank page"]
    assert torch.all(ds.images[2] == 128)
    assert FolderDataset(folder, image_size=16, channels=1).images.shape == (3, 1, 16, 16)


def test_folder_split_subfolder(tmp_path):
    _folder(tmp_path / "test", [{"file_name": "a.png", "text": "a"}], {"a.png": _picture("RGB", (8, 8), 0)})
    _folder(tmp_path, [{"file_name": "b.png", "text": "b"}], {"b.png": _picture("RGB", (8, 8), 0)})
    assert get_dataset(tmp_path, "test").captions == ["a"]
    assert get_dataset(tmp_path).captions == ["b"]
    with pytest.raises(DataError, match="no 'validation' split"):
        get_dataset(tmp_path, "validation")


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    _picture("RGB", (64, 64), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


BROKEN = {
    "missing metadata": (None, {"a.png": _png_bytes()}, r"metadata.jsonl not found"),
    "empty folder": (None, {}, r"is empty"),
    "no lines": ([], {}, r"lists no images"),
    "bad json": ([{"file_name": "a.png", "text": "a"}, '{"file_name": "b.png", "text": '], {"a.png": _png_bytes()},
                 r"metadata.jsonl line 2: invalid JSON"),
    "not an object": (['["a.png", "a"]'], {}, r"line 1: expected a JSON object"),
    "missing text": ([{"file_name": "a.png"}], {}, r"line 1: missing key 'text'"),
    "missing file_name": ([{"text": "a"}], {}, r"line 1: missing key 'file_name'"),
    "bad text": ([{"file_name": "a.png", "text": 3}], {}, r"line 1: 'text' must be"),
    "escapes folder": ([{"file_name": "../a.png", "text": "a"}], {}, r"must be a path inside"),
    "twice": ([{"file_name": "a.png", "text": "a"}, {"file_name": "a.png", "text": "b"}], {"a.png": _png_bytes()},
              r"line 2: 'a.png' is listed twice \(first on line 1\)"),
    "file not found": ([{"file_name": "gone.png", "text": "a"}], {}, r"gone.png not found"),
    "text file named png": ([{"file_name": "notes.png", "text": "a"}], {"notes.png": b"hello, I am text\n"},
                            r"notes.png is not an image"),
    "truncated png": ([{"file_name": "cut.png", "text": "a"}], {"cut.png": _png_bytes()[:80]}, r"cut.png is corrupt"),
    "flipped png byte": ([{"file_name": "bad.png", "text": "a"}],
                         {"bad.png": _png_bytes()[:60] + b"\x00" + _png_bytes()[61:]}, r"bad.png is corrupt"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_folders_name_the_problem(tmp_path, case):
    lines, files, message = BROKEN[case]
    if lines is None:
        for name, content in files.items():
            (tmp_path / name).write_bytes(content)
    else:
        _folder(tmp_path, lines, files)
    with pytest.raises(DataError, match=message):
        get_dataset(tmp_path)


def test_decompression_bomb_is_refused(tmp_path):
    folder = _folder(tmp_path, [{"file_name": "big.png", "text": "a"}], {"big.png": _picture("1", (200, 200), 0)})
    with pytest.raises(DataError, match="big.png is too large"):
        FolderDataset(folder, max_pixels=10_000)  # 40 000 pixels, read from the header only
    assert len(FolderDataset(folder, max_pixels=40_000)) == 1


def test_unknown_dataset_and_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        get_dataset("cifar")
    with pytest.raises(TypeError, match="name or a folder"):
        get_dataset(3)
    with pytest.raises(DataError, match="not a folder"):
        FolderDataset(tmp_path / "nope")
    with pytest.raises(DataError, match="channels"):
        FolderDataset(tmp_path, channels=2)


# ---------------------------------------------------------------- the shared dataset type
@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=4), min_size=1, max_size=6), st.integers(0, 2**31))
def test_drawn_captions_always_come_from_the_items_set(sets, seed):
    n = len(sets)
    ds = CaptionedImages("toy", torch.zeros(n, 1, 4, 4, dtype=torch.uint8), sets)
    items = torch.randint(0, n, (64,), generator=torch.Generator().manual_seed(seed))
    drawn = ds.draw_captions(items, torch.Generator().manual_seed(seed))
    for i, c in zip(items.tolist(), drawn.tolist()):
        assert ds.captions[c] in sets[i]
    assert [ds.captions[ds[i][1]] for i in range(n)] == [s[0] for s in sets]


def test_indexing_errors():
    ds = CaptionedImages("toy", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [["a"], ["b"]])
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
    with pytest.raises(TypeError, match="int64"):
        ds.get_batch(torch.tensor([0.5]))
    with pytest.raises(DataError, match="at least one caption"):
        CaptionedImages("toy", torch.zeros(1, 1, 4, 4, dtype=torch.uint8), [[]])
