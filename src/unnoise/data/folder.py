"""Any folder of captioned images, in Hugging Face's imagefolder convention.

    my_pictures/
      metadata.jsonl      {"file_name": "cat.png", "text": "a cat on a sofa"}   ← one line per image
      cat.png  dog.jpg …

`text` may also be a list of strings: that image's caption set (training draws one per visit).
Images are decoded once, on first use, so a broken file fails at load time with a message naming it:
each is checked with Pillow, EXIF-rotated, composited on white if it has transparency, then
resized (Lanczos) so the shorter side is `image_size` and centre-cropped to a square.

The decoded pixels go to an on-disk cache, not to memory, so a folder larger than RAM can be trained on:
    $UNNOISE_FOLDER_CACHE_DIR, else $UNNOISE_CACHE_DIR/folders (~/.cache/unnoise/folders)
      <sha of the folder path>-<fingerprint>.npy      uint8 (N, C, S, S), a plain .npy file
The fingerprint covers every listed file's path, size and mtime, the size, channels, pixel limit and the
Pillow version, so a changed folder is decoded again.  It is written image by image to a temporary file
and renamed (atomic), and batches read just their rows (`os.pread`): peak memory does not grow with N.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from .base import CaptionedImages, DataError

METADATA = "metadata.jsonl"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's MAX_IMAGE_PIXELS default (~ 9459×9459), which also still applies
CACHE_FORMAT = 1  # bump when load_image's output changes for the same file


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
        if name.startswith("/") or ".." in name.split("/"):
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


def cache_dir() -> Path:
    """Where decoded folders are cached: $UNNOISE_FOLDER_CACHE_DIR, else $UNNOISE_CACHE_DIR/folders."""
    from ..conditioning.text import cache_root

    return Path(os.environ.get("UNNOISE_FOLDER_CACHE_DIR") or cache_root() / "folders")


def fingerprint(folder: Path, names: list[str], settings: list) -> str:
    """sha256 of every listed file's path, size and mtime plus the decode settings."""
    stats, base = [], str(folder)
    for name in names:
        try:
            st = os.stat(os.path.join(base, name))
        except OSError:
            raise DataError(f"image file {folder / name} not found") from None
        stats.append([name, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps([CACHE_FORMAT, settings, stats]).encode()).hexdigest()


class ImageCache:
    """A uint8 (N, C, S, S) .npy file read row by row with os.pread: nothing is kept in memory."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 (held for the dataset's lifetime, closed with it)
        fmt = np.lib.format
        version = fmt.read_magic(self.file)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(self.file)
        if dtype != np.uint8 or fortran or len(shape) != 4:
            raise ValueError(f"{path}: not a uint8 (N, C, S, S) array")
        self.shape = shape
        self.offset = self.file.tell()
        self.row_bytes = int(np.prod(shape[1:]))
        if os.fstat(self.file.fileno()).st_size != self.offset + shape[0] * self.row_bytes:
            raise ValueError(f"{path}: truncated")

    def read(self, items: np.ndarray) -> np.ndarray:
        """Rows `items` (B,) → (B, C, S, S) uint8, one pread per row."""
        if len(items) and not (0 <= items.min() and items.max() < self.shape[0]):
            raise IndexError(f"{self.path}: rows must be in [0, {self.shape[0]})")
        out = np.empty((len(items), *self.shape[1:]), np.uint8)
        fd, flat = self.file.fileno(), out.reshape(len(items), -1)
        for k, i in enumerate(items.tolist()):
            flat[k] = np.frombuffer(os.pread(fd, self.row_bytes, self.offset + i * self.row_bytes), np.uint8)
        return out

    def tensor(self) -> torch.Tensor:
        """The whole array as a memory-mapped tensor (pages are read only where it is indexed)."""
        return torch.from_numpy(np.load(self.path, mmap_mode="c"))


def build_cache(folder: Path, names: list[str], path: Path, image_size: int, channels: int, max_pixels: int) -> None:
    """Decode every image into `path` (.npy, uint8 (N, C, S, S)), streaming one image at a time; atomic."""
    from tqdm import tqdm

    header = {"descr": "|u1", "fortran_order": False, "shape": (len(names), channels, image_size, image_size)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            bar = tqdm(names, desc=f"decoding {folder} (once, into {path.parent})", unit="img", disable=None,
                       file=sys.stderr, mininterval=1.0)
            f.writelines(load_image(folder / n, image_size, channels, max_pixels).transpose(2, 0, 1).tobytes()
                         for n in bar)  # (S, S, C) → (C, S, S) rows

    atomic_write(path, write)


def open_cache(folder: Path, names: list[str], image_size: int, channels: int, max_pixels: int,
               root: str | Path | None = None) -> ImageCache:
    """The folder's decoded cache, built first if it is missing, stale or broken."""
    from PIL import __version__ as pillow

    root = Path(root) if root is not None else cache_dir()
    where = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    key = fingerprint(folder, names, [image_size, channels, max_pixels, pillow])
    path = root / f"{where}-{key[:20]}.npy"
    if path.is_file():
        try:
            cache = ImageCache(path)
            if cache.shape == (len(names), channels, image_size, image_size):
                return cache
        except (OSError, ValueError, SyntaxError):
            pass  # a broken cache is rebuilt
    try:
        root.mkdir(parents=True, exist_ok=True)
        build_cache(folder, names, path, image_size, channels, max_pixels)
    except OSError as e:
        raise DataError(f"cannot write the image cache {path} ({e.strerror or e}); set UNNOISE_CACHE_DIR "
                        "to a writable folder") from e
    for old in root.glob(f"{where}-*.npy"):  # earlier versions of this folder
        if old != path:
            old.unlink(missing_ok=True)
    return ImageCache(path)


class FolderDataset(CaptionedImages):
    """Images listed in `folder/metadata.jsonl`, square, RGB (or gray with channels=1), 32×32 by default.

    `images` is memory-mapped from the cache; `get_images(items)` (what training uses) reads only those rows.
    """

    def __init__(self, folder: str | Path, image_size: int = 32, channels: int = 3,
                 max_pixels: int = DEFAULT_MAX_PIXELS, cache_dir: str | Path | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder} is not a folder")
        if not isinstance(image_size, int) or not 8 <= image_size <= 1024:
            raise DataError(f"image_size must be an int in [8, 1024], got {image_size!r}")
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels!r}")
        rows = read_metadata(folder)
        self.folder = folder
        self.files = [name for _, name, _ in rows]  # file name of each item
        self.cache = open_cache(folder, self.files, image_size, channels, max_pixels, cache_dir)
        super().__init__(folder.name or str(folder), self.cache.tensor(), sets=[texts for _, _, texts in rows])

    def get_images(self, items: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.cache.read(items.numpy()))
