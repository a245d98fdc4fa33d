"""The lab's pictures: the cat, uploads checked at the door, and a small store of both.

An upload is untrusted bytes.  It must be small (5 MB), really an image (Pillow verifies it), and
modest in pixels *before* it is decoded, because a few kilobytes of PNG can declare a billion
pixels (a "decompression bomb").  What survives is flattened to RGB and shrunk so its longer side
is at most the lab's working size; the store keeps that small copy under a content hash.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import images
from ..errors import UnnoiseError

CAT_ID = "cat"
# Formats a browser can show and Pillow decodes well; anything else is refused rather than parsed.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")


class UploadError(UnnoiseError, ValueError):
    """An upload the lab refuses; status is the HTTP status the page gets with the message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Picture:
    """An image the lab works on: RGB, longer side at most the working size."""

    id: str  # "cat" or a content hash of the pixels
    pixels: np.ndarray  # (H, W, 3) uint8

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    def tensor(self) -> torch.Tensor:
        """x0 as float32 (3, H, W) in [−1, 1]."""
        return images.to_tensor(Image.fromarray(self.pixels))


def decode_upload(data: bytes, *, max_side: int, max_pixels: int) -> np.ndarray:
    """Untrusted bytes → (H, W, 3) uint8 with longer side ≤ max_side, or an UploadError (413/415)."""
    if not data:
        raise UploadError("the upload is empty: send the bytes of a PNG, JPEG, GIF, WebP or BMP image", 415)
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; here a warning is a refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:  # reads the header only
                fmt, (w, h) = probe.format, probe.size
                if fmt not in ALLOWED_FORMATS:
                    raise UploadError(f"{fmt} images are not accepted; use PNG, JPEG, GIF, WebP or BMP", 415)
                if w * h > max_pixels:
                    raise UploadError(f"image too large: {w}×{h} pixels (the limit is {max_pixels:,} pixels)", 413)
                probe.verify()  # checksums and structure, without decoding the pixels
            with Image.open(io.BytesIO(data)) as im:  # verify() leaves the image unusable: reopen
                im.draft("RGB", (2 * max_side, 2 * max_side))  # JPEG: decode at a reduced scale
                im.seek(0)  # first frame of an animation
                im.load()
                im = ImageOps.exif_transpose(im)
                im = images.limit_size(images.flatten(im, "RGB"), max_side)
                return np.asarray(im, dtype=np.uint8).copy()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(f"image too large: {e}", 413) from e
    except UnidentifiedImageError as e:
        raise UploadError("not an image: Pillow cannot identify the uploaded bytes as any image format", 415) from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as e:
        raise UploadError(f"broken image: {type(e).__name__}: {e}", 415) from e


def the_cat(max_side: int) -> Picture:
    """Chelsea, scikit-image's cat, shrunk so the longer side is at most max_side."""
    im = images.limit_size(images.default_cat(), max_side)
    return Picture(CAT_ID, np.asarray(im, dtype=np.uint8).copy())


class PictureStore:
    """The last `capacity` uploads by content hash (least recently used go first); thread-safe.

    Entries are never mutated, so requests that share one cannot disturb each other.
    """

    def __init__(self, capacity: int, cat: Picture) -> None:
        self._capacity = capacity
        self._cat = cat
        self._items: OrderedDict[str, Picture] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, pixels: np.ndarray) -> Picture:
        digest = hashlib.sha256(np.asarray(pixels.shape, dtype=np.int64).tobytes() + pixels.tobytes()).hexdigest()[:20]
        picture = Picture(digest, pixels)
        with self._lock:
            self._items[digest] = picture
            self._items.move_to_end(digest)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return picture

    def get(self, picture_id: str) -> Picture | None:
        if picture_id == CAT_ID:
            return self._cat
        with self._lock:
            picture = self._items.get(picture_id)
            if picture is not None:
                self._items.move_to_end(picture_id)
            return picture


def png_data_url(x: torch.Tensor) -> str:
    """(3, H, W) in [−1, 1] → "data:image/png;base64,…" (clipped for display, as every view of x_t is)."""
    buf = io.BytesIO()
    # compress_level 0: noise hardly compresses and the stream is local (measured in docs/lab.md)
    images.to_pil(x).save(buf, format="PNG", compress_level=0)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def b64(array: np.ndarray) -> str:
    """Raw little-endian bytes of an array, base64: how pixels and noise reach the page exactly."""
    return base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode("ascii")
