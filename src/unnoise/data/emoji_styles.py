"""Emoji in several styles (Noto, Twemoji, OpenMoji) with keyword captions and a held-out Noto set.

Sources (development time only; the built atlases ship in `assets/emoji-styles/`, licences beside them):
  noto      the existing Noto atlas (`assets/emoji/`, see emoji.py)
  twemoji   npm `emoji-datasource-twitter`: 64×64 PNGs of the Twemoji graphics (CC-BY 4.0)
  openmoji  npm `openmoji`: colour SVGs (CC-BY-SA 4.0), rasterized with resvg (PyPI `resvg-py`)
  keywords  npm `emojibase-data` en/data.json `tags` (CLDR annotations, Unicode licence)

Every picture is cropped to its opaque box, centred on a square, composited on white and resized to
32×32 with Lanczos, as the Noto glyphs are.  Emoji match across styles by code-point sequence with
U+FE0F dropped; names and aliases come from the PyPI `emoji` package as for Noto.

    npm install --prefix DIR emoji-datasource-twitter openmoji emojibase-data   # outside src/
    pip install resvg-py                                                        # build time only
    python -m unnoise.data.emoji_styles build --npm-dir DIR/node_modules
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zlib
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text_atomic
from .base import CaptionedImages, DataError
from .emoji import ASSET_DIR as NOTO_DIR
from .emoji import (
    TILES_PER_ATLAS,
    TILES_PER_ROW,
    captions_for,
    emoji_names,
    family_of,
    load_asset,
    read_sheets,
    write_atlases,
)

ASSET_DIR = Path(__file__).parent / "assets" / "emoji-styles"
STYLES = ("noto", "twemoji", "openmoji")  # lowercase, as in the caption suffix ", <style> style"
BUILT_STYLES = ("twemoji", "openmoji")  # those this module builds; noto comes from emoji.py
SIZE = 32
RENDER = 128  # SVGs are rasterized at this size before the crop and the Lanczos resize
PACKAGES = {"twemoji": "emoji-datasource-twitter", "openmoji": "openmoji", "keywords": "emojibase-data"}
HOLD_OUT_MOD, HOLD_OUT_REM = 20, 7  # crc32(clean name) % 20 == 7: about 5 % of the base emoji


def key(seq: str) -> str:
    """The code-point sequence without U+FE0F, as lowercase hex joined by '-': '❤️' → '2764'."""
    return "-".join(f"{ord(c):x}" for c in seq if ord(c) != 0xFE0F)


def clean_name(seq: str) -> str:
    """The `emoji` package's English name, colons stripped, '_' as spaces, whitespace collapsed, lowercase."""
    import emoji

    return " ".join(emoji.EMOJI_DATA[seq]["en"].replace(":", "").replace("_", " ").split()).lower()


def has_skin_tone(seq: str) -> bool:
    return family_of(seq) != seq


def is_held_out(seq: str) -> bool:
    """The issue-27 rule: a base emoji (no skin tone) whose clean name has crc32 % 20 == 7."""
    name = clean_name(seq).encode("utf-8")
    return not has_skin_tone(seq) and zlib.crc32(name) % HOLD_OUT_MOD == HOLD_OUT_REM


def held_out_emoji(asset_dir: Path = NOTO_DIR) -> list[str]:
    """The Noto emoji whose pictures training never sees, in atlas order (for evaluation)."""
    records, _ = load_asset(Path(asset_dir), SIZE)
    return [r["emoji"] for r in records if is_held_out(r["emoji"])]


# ---------------------------------------------------------------- build (development time)


def _square_on_white(rgba, size: int = SIZE) -> np.ndarray | None:
    """Crop to the opaque box, centre on a square, composite on white, Lanczos to size: (S, S, 3) uint8."""
    from PIL import Image

    box = rgba.getchannel("A").getbbox()
    if box is None:
        return None
    glyph = rgba.crop(box)
    side = max(glyph.size)
    page = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    page.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return np.asarray(page.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def _twemoji_files(npm: Path) -> dict[str, Path]:
    folder = npm / PACKAGES["twemoji"] / "img" / "twitter" / "64"
    return {key("".join(chr(int(h, 16)) for h in p.stem.split("-"))): p for p in sorted(folder.glob("*.png"))}


def _openmoji_files(npm: Path) -> dict[str, Path]:
    folder = npm / PACKAGES["openmoji"] / "color" / "svg"
    return {key("".join(chr(int(h, 16)) for h in p.stem.split("-"))): p for p in sorted(folder.glob("*.svg"))}


def _load_twemoji(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGBA")


def _load_openmoji(path: Path):
    import resvg_py
    from PIL import Image

    png = resvg_py.svg_to_bytes(svg_path=str(path), width=RENDER, height=RENDER, skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(png))) as im:
        return im.convert("RGBA")


def _universe() -> list[str]:
    """Fully-qualified emoji of the `emoji` package, in its order: the sequences a style may draw."""
    import emoji

    fq = emoji.STATUS["fully_qualified"]
    return [seq for seq, data in emoji.EMOJI_DATA.items() if data["status"] == fq]


def render_style(style: str, npm: Path) -> tuple[list[str], np.ndarray]:
    """The emoji a style's package draws (in the `emoji` package's order) and their tiles (N, S, S, 3)."""
    files = {"twemoji": _twemoji_files, "openmoji": _openmoji_files}[style](npm)
    load = {"twemoji": _load_twemoji, "openmoji": _load_openmoji}[style]
    if not files:
        raise DataError(f"no {style} pictures under {npm / PACKAGES[style]}: npm install {PACKAGES[style]}")
    seqs, tiles = [], []
    for seq in _universe():
        path = files.get(key(seq))
        tile = None if path is None else _square_on_white(load(path))
        if tile is not None:
            seqs.append(seq)
            tiles.append(tile)
    return seqs, np.stack(tiles)


def keywords(npm: Path) -> dict[str, list[str]]:
    """CLDR keyword tags of each emoji (by key) from emojibase-data; skin-tone variants share their base's."""
    path = npm / PACKAGES["keywords"] / "en" / "data.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e}); npm install emojibase-data") from e
    out: dict[str, list[str]] = {}
    for entry in data:
        tags = [t for t in entry.get("tags", []) if t.strip()]
        for item in [entry, *entry.get("skins", [])]:
            out[key(item["emoji"])] = tags
    return out


def _versions(npm: Path) -> dict[str, str]:
    import emoji
    import PIL
    import resvg_py

    out = {p: json.loads((npm / p / "package.json").read_text())["version"] for p in PACKAGES.values()}
    return {**out, "emoji (PyPI)": emoji.__version__, "pillow": PIL.__version__, "resvg-py": resvg_py.__version__}


def build(npm: Path, out: Path = ASSET_DIR) -> dict:
    """Render the styles into atlases and write styles.json (names, keywords, per-style emoji lists)."""
    out.mkdir(parents=True, exist_ok=True)
    noto, _ = load_asset(NOTO_DIR, SIZE)
    styles: dict[str, dict] = {"noto": {"asset": "../emoji", "emoji": [r["emoji"] for r in noto]}}
    for style in BUILT_STYLES:
        seqs, tiles = render_style(style, npm)
        styles[style] = {"emoji": seqs, "atlases": write_atlases(out, style, tiles)}
    tags = keywords(npm)
    every = list(dict.fromkeys(s for st in styles.values() for s in st["emoji"]))
    index = {s: {"names": emoji_names(s), "keywords": tags.get(key(s), [])} for s in every}
    meta = {"size": SIZE, "tiles_per_row": TILES_PER_ROW, "tiles_per_atlas": TILES_PER_ATLAS,
            "versions": _versions(npm), "styles": styles, "index": index}
    write_text_atomic(out / "styles.json", json.dumps(meta, ensure_ascii=False, indent=0))
    return meta


# ---------------------------------------------------------------- loading and the dataset


def load_styles(directory: Path = ASSET_DIR) -> tuple[dict, dict[str, tuple[list[str], torch.Tensor]]]:
    """styles.json and, per style, its emoji and tiles (N, 3, 32, 32) uint8 (Noto from its own asset)."""
    path = Path(directory) / "styles.json"
    try:
        meta = json.loads(path.read_text())
        out = {}
        for style in STYLES:
            st = meta["styles"][style]
            if style == "noto":
                records, tiles = load_asset((Path(directory) / st["asset"]).resolve(), SIZE)
                if [r["emoji"] for r in records] != st["emoji"]:
                    raise DataError(f"{path}: the Noto asset changed since styles.json was built; rebuild it")
            else:
                tiles = read_sheets(Path(directory), st["atlases"], len(st["emoji"]), meta["size"])
                if len(tiles) != len(st["emoji"]):
                    raise DataError(f"{path}: {st['atlases']} hold {len(tiles)} tiles, it lists {len(st['emoji'])}")
            out[style] = (st["emoji"], tiles)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"emoji styles asset {path} is unreadable ({e}); rebuild it: "
                        "python -m unnoise.data.emoji_styles build --npm-dir DIR") from e
    return meta, out


def style_captions(names: list[str], tags: list[str], style: str) -> list[str]:
    """Plain captions (name templates, then CLDR keywords) and each name and keyword with ', <style> style'."""
    return [c for c, _ in _styled(names, tags, style)]


def caption_kinds(names: list[str], tags: list[str], style: str) -> list[int]:
    """The base.KIND_SHARES code of each of style_captions' captions: 0 a plain name phrasing, 1 a name with
    the style tag, 2 a plain keyword, 3 a keyword with the style tag."""
    return [k for _, k in _styled(names, tags, style)]


def _styled(names: list[str], tags: list[str], style: str) -> list[tuple[str, int]]:
    named = captions_for(names)
    plain = list(dict.fromkeys([*named, *tags]))
    kinds = [(c, 0 if c in named else 2) for c in plain]
    for phrase in dict.fromkeys([*names, *tags]):
        if f"{phrase}, {style} style" not in plain:
            kinds.append((f"{phrase}, {style} style", 1 if phrase in names else 3))
    return kinds


class EmojiStylesDataset(CaptionedImages):
    """Noto, Twemoji and OpenMoji emoji at 32×32; held-out Noto pictures are absent (see is_held_out)."""

    def __init__(self, image_size: int = SIZE, asset_dir: Path = ASSET_DIR, families: Collection[str] | None = None):
        """families: keep only the emoji of these families (`family_of`), e.g. a few hundred for a quick check
        that a recipe can learn the data at all (scripts/emoji_styles_subset.py); None keeps all."""
        if image_size != SIZE:
            raise DataError(f"emoji-styles ships {SIZE}×{SIZE} atlases only, got image_size {image_size!r}")
        meta, styles = load_styles(asset_dir)
        index = meta["index"]
        self.emoji: list[str] = []  # the emoji string of each item
        self.styles: list[str] = []  # its style, one of STYLES
        parts, sets, kinds = [], [], []
        for style, (seqs, tiles) in styles.items():
            keep = [i for i, s in enumerate(seqs) if not (style == "noto" and is_held_out(s))
                    and (families is None or family_of(s) in families)]
            parts.append(tiles[keep])
            for i in keep:
                seq = seqs[i]
                self.emoji.append(seq)
                self.styles.append(style)
                styled = _styled(index[seq]["names"], index[seq]["keywords"], style)
                sets.append([c for c, _ in styled])
                kinds.append([k for _, k in styled])
        if not self.emoji:
            raise DataError(f"emoji-styles: none of the {len(families or ())} families asked for is in the atlases")
        super().__init__("emoji-styles", torch.cat(parts), sets=sets, kinds=kinds)
        ids = {b: i for i, b in enumerate(dict.fromkeys(family_of(e) for e in self.emoji))}
        self.families = torch.tensor([ids[family_of(e)] for e in self.emoji], dtype=torch.int64)
        self._phrases = list(dict.fromkeys(p for seq in dict.fromkeys(self.emoji)
                                           for p in [*index[seq]["names"], *index[seq]["keywords"]]))
        self.vocabulary_suffixes = [f", {style} style" for style in styles]

    def vocabulary(self) -> list[str]:
        """The names, aliases and keywords, plain (no caption templates, no style tag): what prompt snapping
        snaps to; a tagged prompt snaps its head and keeps its tag (`vocabulary_suffixes`)."""
        return self._phrases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unnoise.data.emoji_styles", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render the Twemoji and OpenMoji atlases + styles.json")
    b.add_argument("--npm-dir", type=Path, required=True, help="a node_modules folder with the three packages")
    b.add_argument("--out", type=Path, default=ASSET_DIR)
    args = parser.parse_args(argv)
    meta = build(args.npm_dir, args.out)
    counts = {s: len(st["emoji"]) for s, st in meta["styles"].items()}
    print(f"{counts} emoji, {len(meta['index'])} distinct → {args.out}  ({meta['versions']})")
    for p in sorted(args.out.iterdir()):
        print(f"  {p.name}: {p.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
