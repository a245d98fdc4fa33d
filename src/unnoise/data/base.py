"""The dataset type every source produces: images kept as uint8 in memory, each with a *set* of captions.

Items are `(image, caption_index)`: image float32 (C, H, W) in [-1, 1], caption_index an int into
`dataset.captions` (the distinct captions, so the text encoder runs once per caption).  Each item
has several captions ("a handwritten seven", "the digit 7", "7", …); `__getitem__` returns the
item's first (default) one, and training draws a fresh one per visit with its own generator:

    items = torch.randperm(len(ds), generator=g)[:B]
    images, caption_idx = ds.get_batch(items, generator=g)   # (B, C, H, W), (B,)

Caption sets are stored grouped: many items may share one set (all sevens share the sevens' set),
    group[i] → the set of item i;  sets are ragged: set_flat[set_offsets[s]:set_offsets[s+1]].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..errors import UnnoiseError

# Caption kinds a source may mark (CaptionedImages(kinds=…)) and their shares under caption draw "names".
KIND_SHARES = {0: 3 / 8, 1: 3 / 8, 2: 1 / 8, 3: 1 / 8}  # plain name, tagged name, plain keyword, tagged keyword


class DataError(UnnoiseError, ValueError):
    """A dataset, image file or metadata line cannot be used; the message names the file."""


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] (DDPM's data scaling, Ho et al. 2020 §3.3)."""
    return images.float().div_(127.5).sub_(1.0)


def caption_sets(sets: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Distinct captions (first-seen order) and the ragged index (offsets (S+1,), flat) of each set."""
    index: dict[str, int] = {}
    flat: list[int] = []
    offsets = [0]
    for s in sets:
        if not s:
            raise DataError("every item needs at least one caption")
        flat.extend(index.setdefault(c, len(index)) for c in s)
        offsets.append(len(flat))
    return list(index), torch.tensor(offsets, dtype=torch.int64), torch.tensor(flat, dtype=torch.int64)


class CaptionedImages(Dataset):
    """Images (N, C, H, W) uint8 with a caption set per item; see the module docstring."""

    def __init__(
        self,
        name: str,
        images: torch.Tensor,
        sets: Sequence[Sequence[str]],
        group: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        kinds: Sequence[Sequence[int]] | None = None,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise DataError(f"{name}: images must be uint8 (N, C, S, S), got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise DataError(f"{name}: no images")
        self.name = name
        self.images = images  # (N, C, H, W) uint8
        self.captions, self.set_offsets, self.set_flat = caption_sets(sets)
        self.group = torch.arange(len(images)) if group is None else group.to(torch.int64)  # (N,) item → set
        if self.group.shape != (len(images),) or int(self.group.max()) >= len(sets):
            raise DataError(f"{name}: group must map each of the {len(images)} items to one of {len(sets)} sets")
        self.labels = labels  # (N,) int64 class labels where the source has them (digits), else None
        self.families: torch.Tensor | None = None  # (N,) family id of near-duplicate items (emoji skin tones), or None
        # the kind of each set entry (aligned with set_flat), CAPTION_KINDS codes, where the source marks them
        self.caption_kinds: torch.Tensor | None = None
        if kinds is not None:
            if [len(k) for k in kinds] != [len(s) for s in sets] or any(c not in KIND_SHARES for k in kinds for c in k):
                raise DataError(f"{name}: kinds must give one code in {sorted(KIND_SHARES)} per caption of every set")
            self.caption_kinds = torch.tensor([c for k in kinds for c in k], dtype=torch.int64)

    def sampling_weights(self, balance: str = "items") -> torch.Tensor | None:
        """Per-item draw weights (N,) float64 summing to 1, or None for uniform draws over items.

        "items": every item equally often (None).  "families": every family of near-duplicates equally
        often, its members sharing its share, so an emoji with five skin-tone variants is drawn as often
        as one without any, not six times as often.
        """
        if balance == "items":
            return None
        if balance != "families":
            raise ValueError(f"balance must be 'items' or 'families', got {balance!r}")
        if self.families is None:
            return None
        _, inverse, counts = torch.unique(self.families, return_inverse=True, return_counts=True)
        w = 1.0 / counts[inverse].double()
        return w / w.sum()

    def caption_weights(self, draw: str = "uniform") -> torch.Tensor | None:
        """Relative draw weights of every set entry (aligned with set_flat, float64), or None for uniform draws.

        "uniform": each of an item's captions equally often (None).  "names": by the entries' kinds (see
        KIND_SHARES): names 3/4 of the time and keywords 1/4, plain and style-tagged alike, uniform within a
        kind; a kind an item lacks gives its share to the others.  Keywords are shared by many emoji ("face"
        by over a hundred), names by one, so drawn uniformly only about a third of the draws say which emoji
        an item is.
        """
        if draw == "uniform":
            return None
        if draw != "names":
            raise ValueError(f"caption draw must be 'uniform' or 'names', got {draw!r}")
        if self.caption_kinds is None:
            raise DataError(f"{self.name}: caption draw 'names' needs a dataset that marks its name captions "
                            "(emoji-styles)")
        share = torch.tensor([KIND_SHARES[k] for k in range(len(KIND_SHARES))], dtype=torch.float64)
        entry_set = torch.repeat_interleave(torch.arange(len(self.set_offsets) - 1),
                                            self.set_offsets[1:] - self.set_offsets[:-1])
        key = entry_set * len(KIND_SHARES) + self.caption_kinds  # (set, kind) of every entry
        count = torch.bincount(key, minlength=int(key.max()) + 1).to(torch.float64)
        return share[self.caption_kinds] / count[key]

    @property
    def example_prompts(self) -> list[str]:
        """Up to 8 default captions from caption sets spread evenly over the data (for sample grids)."""
        n = len(self.set_offsets) - 1
        picks = sorted({round(k * (n - 1) / 7) for k in range(8)}) if n > 1 else [0]
        return [self.captions[int(self.set_flat[self.set_offsets[s]])] for s in picks]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    def get_images(self, items: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, C, H, W) of item indices (B,): only those rows are read (a folder's cache is on disk)."""
        return self.images[items]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.name}: item {i} out of range for {len(self)} items")
        s = int(self.group[i])
        return to_float(self.get_images(torch.tensor([i % len(self)]))[0]), int(self.set_flat[self.set_offsets[s]])

    def caption_choices(self, i: int) -> torch.Tensor:
        """Indices into `captions` of item i's caption set (the first is the default)."""
        s = int(self.group[i])
        return self.set_flat[self.set_offsets[s] : self.set_offsets[s + 1]]

    def item_captions(self, i: int) -> list[str]:
        return [self.captions[j] for j in self.caption_choices(i).tolist()]

    def draw_captions(self, items: torch.Tensor, generator: torch.Generator | None = None,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
        """One caption index per item (B,): drawn from its set with `generator` (uniformly, or in proportion to
        `weights` from caption_weights), the default without.  One float64 draw per item either way."""
        s = self.group[items]
        start = self.set_offsets[s]
        if generator is None:
            return self.set_flat[start]
        u = torch.rand(s.shape, generator=generator, dtype=torch.float64)
        if weights is None:
            return self.set_flat[start + (u * (self.set_offsets[s + 1] - start)).long()]  # float64: exact floor
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), weights.cumsum(0)])  # cum[j]: weight before entry j
        end = self.set_offsets[s + 1]
        target = cum[start] + u * (cum[end] - cum[start])
        pick = (torch.searchsorted(cum, target, right=True) - 1).clamp(start, end - 1)  # zero-weight entries: never
        return self.set_flat[pick]

    def get_batch(
        self, items: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32 in [-1, 1] and caption indices (B,) for item indices (B,)."""
        if not isinstance(items, torch.Tensor) or items.dtype != torch.int64 or items.ndim != 1:
            raise TypeError("items must be a 1-D int64 tensor of item indices")
        return to_float(self.get_images(items)), self.draw_captions(items, generator)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, items={len(self)}, image_size={self.image_size}, "
                f"channels={self.channels}, captions={len(self.captions)})")
