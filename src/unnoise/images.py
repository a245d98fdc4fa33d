"""Image I/O at the edges: files and PIL images ↔ tensors in [−1, 1], with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import UnnoiseError

# Pillow's own decompression-bomb guard (it raises above 2× this many pixels); an explicit, documented cap.
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class ImageLoadError(UnnoiseError, ValueError):
    """A file that should be an image could not be read as one."""


class OutputPathError(UnnoiseError, ValueError):
    """An output path that cannot be written (wrong suffix, missing or read-only folder, a directory)."""


def load_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Open an image file fully (so truncated files fail here, not later), converted to mode."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"image not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return flatten(im, mode)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"image too large (over {MAX_IMAGE_PIXELS:,} pixels): {path}") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"not an image file (Pillow cannot identify it): {path}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"corrupt or truncated image {path}: {e}") from e


def flatten(im: Image.Image, mode: str) -> Image.Image:
    """Convert to mode, compositing any transparency onto white (how images sit on a page)."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert(mode)


def fit(im: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to size×size."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def limit_size(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink (never enlarge) so the longer side is at most max_side, keeping the aspect ratio."""
    w, h = im.size
    scale = max_side / max(w, h)
    if scale >= 1:
        return im
    return im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL image → float32 (C, H, W) in [−1, 1]."""
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def to_pil(x: torch.Tensor) -> Image.Image:
    """(C, H, W) in [−1, 1] → PIL image (values outside are clipped, as a display must)."""
    x = x.detach().float().cpu()
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def grid(images: list[Image.Image], cols: int | None = None, pad: int = 2, fill=(255, 255, 255)) -> Image.Image:
    """Tile equal-size images into one picture, row by row."""
    if not images:
        raise ValueError("grid needs at least one image")
    cols = cols or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), fill)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet.paste(im.convert("RGB"), (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet


def default_cat() -> Image.Image:
    """The cat photo from scikit-image (Chelsea), the default subject of the forward-process pictures."""
    from skimage import data

    return Image.fromarray(data.chelsea())


def check_writable(path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    """Validate an output path before any work is done: known suffix, existing writable folder."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputPathError(f"output must end in {' or '.join(suffixes)}, got {path.name!r}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"output folder is not writable: {parent}")
    if path.is_dir():
        raise OutputPathError(f"output path is a directory: {path}")
    return path


ImageFile.LOAD_TRUNCATED_IMAGES = False
