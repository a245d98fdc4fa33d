"""Built-in datasets (digits, emoji) and captioned image folders; see docs/data.md.

    ds = get_dataset("digits")                  # or "emoji", "emoji-styles", or a folder with metadata.jsonl
    image, caption_index = ds[0]                # (C, H, W) float32 in [-1, 1], index into ds.captions
    images, caption_idx = ds.get_batch(items, generator=g)   # a varied caption per draw
"""

from __future__ import annotations

from pathlib import Path

from .base import CaptionedImages, DataError

NAMES = ("digits", "emoji", "emoji-styles")


def get_dataset(name_or_folder: str | Path, split: str = "train", image_size: int | None = None) -> CaptionedImages:
    """"digits" (MNIST, splits train/test), "emoji" (split train), "emoji-styles" (Noto, Twemoji and
    OpenMoji, split train, 32×32 only, held-out Noto pictures left out), or a folder of captioned images.

    A folder's split may be a sub-folder with its own metadata.jsonl (folder/test/metadata.jsonl),
    as in Hugging Face's imagefolder; otherwise only split="train" is accepted.  image_size
    defaults to 32.
    """
    size = 32 if image_size is None else image_size
    if not isinstance(split, str):
        raise TypeError(f"split must be a string, got {type(split).__name__}")
    if name_or_folder == "digits":
        from .digits import DigitsDataset

        return DigitsDataset(split, size)
    if name_or_folder == "emoji":
        from .emoji import EmojiDataset

        if split != "train":
            raise DataError(f"emoji has one split, 'train', not {split!r}")
        return EmojiDataset(size)
    if name_or_folder == "emoji-styles":
        from .emoji_styles import EmojiStylesDataset

        if split != "train":
            raise DataError(f"emoji-styles has one split, 'train', not {split!r}")
        return EmojiStylesDataset(size)
    if not isinstance(name_or_folder, (str, Path)):
        raise TypeError(f"dataset must be a name or a folder path, got {type(name_or_folder).__name__}")
    folder = Path(name_or_folder)
    if not folder.is_dir():
        raise DataError(f"unknown dataset {str(name_or_folder)!r}: expected one of {NAMES} or a folder of images")
    from .folder import FolderDataset

    if (folder / split).is_dir() and (folder / split / "metadata.jsonl").is_file():
        folder = folder / split
    elif split != "train":
        raise DataError(f"{folder} has no {split!r} split ({folder / split / 'metadata.jsonl'} not found)")
    return FolderDataset(folder, size)


__all__ = ["CaptionedImages", "DataError", "NAMES", "get_dataset"]
