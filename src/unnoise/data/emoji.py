"""The Noto Color Emoji set: every emoji the font draws as one glyph, on white, at 64×64 and 32×32.

Pillow draws the font's colour bitmaps (CBDT) only at their native size 109 with
`embedded_color=True`; each glyph (136×128 px) is composited on white, as emoji appear on a page,
centred on a 136×136 square and resized with Lanczos.  Names come from the PyPI `emoji` package
(':cat_face:' → "cat face", plus its aliases), skin-tone variants included.

Built once and shipped in the package (`assets/emoji/`: PNG atlases of tiles + JSON of names):
    python -m unnoise.data.emoji build --out src/unnoise/data/assets/emoji
If the asset is missing, `EmojiDataset(source="font")` renders straight from the installed font.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write, write_text_atomic
from .base import CaptionedImages, DataError

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")  # Debian fonts-noto-color-emoji
FONT_SIZE = 109  # the only size the CBDT bitmap strike exists at
ASSET_DIR = Path(__file__).parent / "assets" / "emoji"
ATLAS_SIZES = (64, 32)  # tile sizes shipped; others are resized from 64
TILES_PER_ROW = 32
TILES_PER_ATLAS = 1024  # 32×32 tiles: a 2048×2048 PNG at 64 px
IGNORABLE = {0x200D, 0xFE0E, 0xFE0F}  # ZWJ and variation selectors: shaped away, never in the cmap
TEMPLATES = ("{name}", "{name} emoji", "an emoji of {a}{name}")


def emoji_names(seq: str) -> list[str]:
    """The package's English name and aliases of one emoji, as words: ':cat_face:' → 'cat face'."""
    import emoji

    data = emoji.EMOJI_DATA[seq]
    names: dict[str, str] = {}
    for raw in [data["en"], *data.get("alias", [])]:
        name = raw.strip(":").replace("_", " ").strip()
        if re.fullmatch(r"u[0-9a-f]{4,6}", name):  # aliases such as ':u55b6:' are code points, not words
            continue
        names.setdefault(name.lower(), name)  # the tokenizer lower-cases: ':AB:' and ':ab:' are one caption
    return list(names.values())


def family_of(seq: str) -> str:
    """The emoji with its skin-tone modifiers (U+1F3FB–U+1F3FF) removed: '👍🏽' → '👍'."""
    return "".join(c for c in seq if not 0x1F3FB <= ord(c) <= 0x1F3FF)


def captions_for(names: list[str]) -> list[str]:
    """A few phrasings of each name; proper nouns (flags: "Japan") get no article."""
    out: list[str] = []
    for name in names:
        a = "" if name[:1].isupper() else ("an " if name[:1] in "aeiou" else "a ")
        out += [t.format(name=name, a=a) for t in TEMPLATES]
    return list(dict.fromkeys(out))


def _font(path: Path):
    from PIL import ImageFont, features

    if not path.is_file():
        raise DataError(f"emoji font {path} not found: apt-get install fonts-noto-color-emoji")
    if not features.check("raqm"):
        raise DataError("Pillow lacks libraqm, so it cannot shape emoji sequences into single glyphs")
    return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)


def drawable(font, cmap: set[int], seq: str, one_glyph: float) -> bool:
    """True if the font draws `seq` as exactly one glyph: every code point mapped (no tofu) and the
    shaped run one glyph wide (an unsupported ZWJ sequence falls apart into several glyphs)."""
    return all(ord(c) in cmap or ord(c) in IGNORABLE for c in seq) and abs(font.getlength(seq) - one_glyph) < 0.5


def render(font, seq: str, sizes: tuple[int, ...] = ATLAS_SIZES) -> list[np.ndarray] | None:
    """The emoji composited on white, centred on a square, at each size (S, S, 3) uint8; None if blank."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(seq)
    glyph = Image.new("RGBA", (right - left, bottom - top), (255, 255, 255, 0))
    ImageDraw.Draw(glyph).text((-left, -top), seq, font=font, embedded_color=True)
    if glyph.getchannel("A").getbbox() is None:
        return None
    side = max(glyph.size)
    page = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    page.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    page = page.convert("RGB")
    return [np.asarray(page.resize((s, s), Image.Resampling.LANCZOS)) for s in sizes]


def render_all(
    font_path: Path = FONT_PATH, sizes: tuple[int, ...] = ATLAS_SIZES, limit: int | None = None
) -> tuple[list[dict], list[np.ndarray]]:
    """Records {emoji, names} and one (N, S, S, 3) uint8 array per size, for every drawable emoji
    (the first `limit` of them if given: tests)."""
    import emoji
    from fontTools.ttLib import TTFont

    font = _font(font_path)
    cmap = set(TTFont(str(font_path), lazy=True).getBestCmap())
    one_glyph = font.getlength("\U0001F600")  # 😀, a plain single glyph
    fully_qualified = emoji.STATUS["fully_qualified"]  # skip unqualified duplicates (same glyph twice)
    records: list[dict[str, Any]] = []
    tiles: list[list[np.ndarray]] = [[] for _ in sizes]
    for seq, data in emoji.EMOJI_DATA.items():
        if limit is not None and len(records) >= limit:
            break
        if data["status"] != fully_qualified or not drawable(font, cmap, seq, one_glyph):
            continue
        images = render(font, seq, sizes)
        if images is None:
            continue
        records.append({"emoji": seq, "names": emoji_names(seq)})
        for t, im in zip(tiles, images):
            t.append(im)
    return records, [np.stack(t) for t in tiles]


def _versions(font_path: Path) -> dict[str, str]:
    import emoji
    import PIL
    from fontTools.ttLib import TTFont

    font = TTFont(str(font_path), lazy=True)
    return {"font": font["name"].getDebugName(5) or "?", "font_file": str(font_path),
            "emoji": emoji.__version__, "pillow": PIL.__version__}


def write_atlases(out: Path, prefix: str, tiles: np.ndarray, tiles_per_atlas: int = TILES_PER_ATLAS) -> list[str]:
    """Tiles (N, S, S, 3) as PNG sheets `{prefix}-{S}-{k}.png` of TILES_PER_ROW columns, on white."""
    from PIL import Image

    size = tiles.shape[1]
    names = []
    for k, start in enumerate(range(0, len(tiles), tiles_per_atlas)):
        chunk = tiles[start : start + tiles_per_atlas]
        rows = -(-len(chunk) // TILES_PER_ROW)
        sheet = np.full((rows * size, TILES_PER_ROW * size, 3), 255, np.uint8)
        for j, tile in enumerate(chunk):
            r, c = divmod(j, TILES_PER_ROW)
            sheet[r * size : (r + 1) * size, c * size : (c + 1) * size] = tile
        name = f"{prefix}-{size}-{k}.png"
        atomic_write(out / name, partial(Image.fromarray(sheet).save, format="PNG", optimize=True))
        names.append(name)
    return names


def build(out: Path, font_path: Path = FONT_PATH, *, limit: int | None = None,
          tiles_per_atlas: int = TILES_PER_ATLAS) -> dict:
    """Render the set and write atlas PNGs + emoji.json to `out` (each file written atomically)."""

    if tiles_per_atlas < 1 or tiles_per_atlas % TILES_PER_ROW:
        raise DataError(f"tiles_per_atlas must be a positive multiple of {TILES_PER_ROW}, got {tiles_per_atlas}")
    records, arrays = render_all(font_path, limit=limit)
    out.mkdir(parents=True, exist_ok=True)
    files = {str(size): write_atlases(out, "atlas", tiles, tiles_per_atlas) for size, tiles in zip(ATLAS_SIZES, arrays)}
    meta = {"count": len(records), "tiles_per_row": TILES_PER_ROW, "tiles_per_atlas": tiles_per_atlas,
            "atlases": files, "versions": _versions(font_path), "emoji": records}
    write_text_atomic(out / "emoji.json", json.dumps(meta, ensure_ascii=False, indent=0))
    return meta


_cache: dict[tuple, tuple[list[dict], torch.Tensor]] = {}  # (folder, emoji.json mtime, size) → decoded asset


def load_asset(directory: Path, size: int) -> tuple[list[dict], torch.Tensor]:
    """Records and tiles (N, 3, size, size) uint8 from a built asset folder; decoded once per process."""
    meta = Path(directory) / "emoji.json"
    key = (str(meta.resolve()), meta.stat().st_mtime_ns if meta.is_file() else None, size)
    if key not in _cache:
        _cache[key] = _decode_asset(Path(directory), size)
    return _cache[key]


def read_sheets(directory: Path, names: list[str], count: int, size: int, per_row: int = TILES_PER_ROW,
                per_atlas: int = TILES_PER_ATLAS) -> torch.Tensor:
    """The first `count` tiles (≤ count, 3, size, size) uint8 of PNG sheets written by write_atlases."""
    from PIL import Image

    tiles: list[torch.Tensor] = []
    for name in names:
        with Image.open(directory / name) as im:
            sheet = torch.from_numpy(np.asarray(im.convert("RGB")).copy())  # (rows·S, per_row·S, 3)
        rows = sheet.shape[0] // size
        grid = sheet.view(rows, size, per_row, size, 3).permute(0, 2, 4, 1, 3)  # (rows, per_row, 3, S, S)
        keep = min(per_atlas, count - len(tiles) * per_atlas)
        tiles.append(grid.reshape(rows * per_row, 3, size, size)[:keep])
    return torch.cat(tiles)


def _decode_asset(directory: Path, size: int) -> tuple[list[dict], torch.Tensor]:
    meta_path = directory / "emoji.json"
    try:
        meta = json.loads(meta_path.read_text())
        per_row, per_atlas = meta["tiles_per_row"], meta["tiles_per_atlas"]
        source = size if str(size) in meta["atlases"] else max(int(s) for s in meta["atlases"])
        images = read_sheets(directory, meta["atlases"][str(source)], meta["count"], source, per_row, per_atlas)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"emoji asset in {directory} is unreadable ({e}); rebuild it: "
                        f"python -m unnoise.data.emoji build --out {directory}") from e
    if len(images) != meta["count"]:
        raise DataError(f"{meta_path}: lists {meta['count']} emoji but the atlases hold {len(images)}")
    return meta["emoji"], images if source == size else _resize(images, size)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    from PIL import Image

    out = [np.asarray(Image.fromarray(t.permute(1, 2, 0).numpy()).resize((size, size), Image.Resampling.LANCZOS))
           for t in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


class EmojiDataset(CaptionedImages):
    """Noto Color Emoji, 3 channels on white, 32×32 by default (64 also shipped); one item per emoji."""

    def __init__(self, image_size: int = 32, source: str = "auto", asset_dir: Path = ASSET_DIR):
        if not isinstance(image_size, int) or not 8 <= image_size <= 136:
            raise DataError(f"emoji image_size must be an int in [8, 136], got {image_size!r}")
        if source not in ("auto", "asset", "font"):
            raise DataError(f"source must be 'auto', 'asset' or 'font', got {source!r}")
        if source == "asset" or (source == "auto" and (asset_dir / "emoji.json").is_file()):
            records, images = load_asset(Path(asset_dir), image_size)
        else:
            records, (arrays,) = render_all(FONT_PATH, (image_size,))
            images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
        self.emoji = [r["emoji"] for r in records]  # the emoji string of each item
        self.names = [r["names"] for r in records]  # its English name and aliases
        super().__init__("emoji", images, sets=[captions_for(r["names"]) for r in records])
        bases = [family_of(e) for e in self.emoji]
        ids = {b: i for i, b in enumerate(dict.fromkeys(bases))}
        self.families = torch.tensor([ids[b] for b in bases], dtype=torch.int64)

    def vocabulary(self) -> list[str]:
        """The names and aliases (without the caption templates): what prompt snapping snaps to."""
        return list(dict.fromkeys(n for names in self.names for n in names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unnoise.data.emoji", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render the emoji set into atlas PNGs + emoji.json")
    b.add_argument("--out", type=Path, default=ASSET_DIR)
    b.add_argument("--font", type=Path, default=FONT_PATH)
    args = parser.parse_args(argv)
    meta = build(args.out, args.font)
    sizes = {p.name: p.stat().st_size for p in sorted(args.out.iterdir()) if not p.name.startswith(".")}
    print(f"{meta['count']} emoji → {args.out}  ({meta['versions']})")
    for name, n in sizes.items():
        print(f"  {name}: {n / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
