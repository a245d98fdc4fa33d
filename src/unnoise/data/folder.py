"""Any folder of captioned images, in Hugging Face's imagefolder convention.

    my_pictures/
      metadata.jsonl      {"file_name": "cat.png", "text": "a cat on a sofa"}   ← one line per image
      cat.png  dog.jpg …

`text` may also be a list of strings: that image's caption set (training draws one per visit).
Images are decoded once, up front, so a broken file fails at load time with a message naming it:
each is checked with Pillow, EXIF-rotated, composited on white if it has transparency, then
resized (Lanczos) so the shorter side is `image_size` and centre-cropped to a square.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .base import CaptionedImages, DataError

METADATA = "metadata.jsonl"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's MAX_IMAGE_PIXELS default (~ 9459×9459), which also still applies


def read_metadata(folder: Path) -> list[tuple[int, str, list[str]]]:
    """(line number, file name, captions) for every non-blank line of metadata.jsonl, validated."""
    path = folder / METADATA
    if not path.is_file():
        if not any(folder.iterdir()):
            raise DataError(f"{folder} is empty: put images and a {METADATA} in it")
        raise DataError(f"{path} not found: a captioned image folder needs one line "
                        '{"file_name": "...", "text": "..."} per image')
    rows: list[tuple[int, str, list[str]]] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e})") from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key in ("file_name", "text"):
            if key not in row:
                raise DataError(f"{where}: missing key {key!r}")
        name, text = row["file_name"], row["text"]
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: 'file_name' must be a non-empty string")
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise DataError(f"{where}: 'file_name' {name!r} must be a path inside {folder}")
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{where}: 'text' must be a string or a non-empty list of strings")
        if name in seen:
            raise DataError(f"{where}: {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = n
        rows.append((n, name, list(dict.fromkeys(texts))))
    if not rows:
        raise DataError(f"{path} lists no images")
    return rows


def load_image(path: Path, image_size: int, channels: int, max_pixels: int) -> np.ndarray:
    """One image file → (S, S, C) uint8, or a DataError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"image file {path} not found")
    too_big = DataError(f"image file {path} is too large (over {max_pixels} pixels; a decompression bomb?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow's own guard: refuse, not warn
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:  # header only: checked before any decoding
                    raise too_big
                im.verify()  # structural check (PNG CRCs, …) before decoding
            with Image.open(path) as im:
                im.load()  # full decode: catches truncated data
                im = ImageOps.exif_transpose(im)
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    page = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    page.alpha_composite(im.convert("RGBA"))
                    im = page
                im = im.convert("RGB" if channels == 3 else "L")
                im = ImageOps.fit(im, (image_size, image_size), method=Image.Resampling.LANCZOS)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise too_big from e
    except UnidentifiedImageError as e:
        raise DataError(f"image file {path} is not an image Pillow can read") from e
    except (OSError, SyntaxError, ValueError) as e:  # Pillow reports corrupt data with these
        raise DataError(f"image file {path} is corrupt ({e})") from e
    return np.asarray(im).reshape(image_size, image_size, channels)


class FolderDataset(CaptionedImages):
    """Images listed in `folder/metadata.jsonl`, square, RGB (or gray with channels=1), 32×32 by default."""

    def __init__(self, folder: str | Path, image_size: int = 32, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder} is not a folder")
        if not isinstance(image_size, int) or not 8 <= image_size <= 1024:
            raise DataError(f"image_size must be an int in [8, 1024], got {image_size!r}")
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels!r}")
        rows = read_metadata(folder)
        images = np.stack([load_image(folder / name, image_size, channels, max_pixels) for _, name, _ in rows])
        self.folder = folder
        self.files = [name for _, name, _ in rows]  # file name of each item
        super().__init__(folder.name or str(folder), torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                         sets=[texts for _, _, texts in rows])
