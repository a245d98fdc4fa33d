"""The project's emoji style classifier: which of noto / twemoji / openmoji a 32×32 picture is drawn in.

It judges the diversity goal of issue 27 (does an untagged prompt paint several styles?).  A tiny
VGG-style CNN (16/32/64 channels, global average pooling, 3 logits; ~72 k parameters, ~0.3 MB) trained
on the emoji-styles atlases with random ±2-pixel shifts, mirror flips, softening, colour jitter and
Gaussian grain (σ up to 0.1): paintings are softer, grainier and off in colour compared with the atlases.

The split is by *emoji*, not by picture: every picture of an emoji family (all its styles and skin
tones) is on one side, so the test accuracy measures style, not remembered identity.  The test side is
the families with `crc32(family key) % 5 == 0` plus every held-out Noto emoji (`held_out_emoji()`), so
the classifier never saw any style of the emoji whose Noto paintings it will later judge.

The shipped weights (`assets/style-classifier/`) were made by

    unnoise eval train-style-classifier --out src/unnoise/evaluation/assets/style-classifier --epochs 30

and its `config.json` records the held-out accuracy the run measured.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .classifier import accuracy, block, fit, load_trained, save_weights, shift

STYLE_ASSET = Path(__file__).parent / "assets" / "style-classifier"
TEST_MOD = 5  # families with crc32(key) % 5 == 0 are the test side (about 20 %)


class StyleClassifier(nn.Module):
    def __init__(self, num_styles: int = 3):
        super().__init__()
        self.body = nn.Sequential(block(3, 16), block(16, 32), block(32, 64))  # 32 → 4
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_styles))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_styles) logits of (N, 3, 32, 32) images in [-1, 1]."""
        return self.fc(self.body(x))


def style_split(seqs: list[str]) -> torch.Tensor:
    """(N,) bool: True where the emoji belongs to the test side (by family; held-out Noto emoji always)."""
    from ..data.emoji import family_of
    from ..data.emoji_styles import held_out_emoji, key

    held = set(held_out_emoji())
    test = [family_of(s) in held or zlib.crc32(key(family_of(s)).encode()) % TEST_MOD == 0 for s in seqs]
    return torch.tensor(test)


def style_data() -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """(styles, images (N, 3, 32, 32) in [-1, 1], style labels (N,), test mask (N,)) from the shipped atlases."""
    from ..data.base import to_float
    from ..data.emoji_styles import STYLES, load_styles

    _, styles = load_styles()
    seqs = [s for style in STYLES for s in styles[style][0]]
    images = to_float(torch.cat([styles[style][1] for style in STYLES]))
    labels = torch.cat([torch.full((len(styles[style][0]),), i) for i, style in enumerate(STYLES)])
    return STYLES, images, labels, style_split(seqs)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift ±2 px on white, mirror half the pictures, soften half (down to 20–28 px and back up), jitter
    contrast, saturation and brightness, add grain of a random σ in [0, 0.1]: paintings are softer, grainier
    and off in colour compared with the atlases, and none of that is style."""
    n = len(x)
    x = shift(x, g, fill=1.0)
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    side = int(torch.randint(20, 29, (1,), generator=g))
    soft = F.interpolate(F.interpolate(x, size=side, mode="bilinear", antialias=True), size=x.shape[-1],
                         mode="bilinear")
    x = torch.where((torch.rand(n, generator=g) < 0.5)[:, None, None, None], soft, x)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g)

    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * uniform(0.7, 1.3)  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(0.8, 1.2) + mean + uniform(-0.1, 0.1)  # contrast, brightness
    x = x + 0.1 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    return x.clamp(-1, 1)  # as paintings are


def per_style_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, styles) -> dict[str, float]:
    return {s: accuracy(net, images[labels == i], labels[labels == i]) for i, s in enumerate(styles)}


def train_style_classifier(out: str | os.PathLike, *, epochs: int = 30, batch_size: int = 128, lr: float = 3e-3,
                           seed: int = 0, progress: bool = True) -> dict:
    """Train on the train families of the atlases, measure on the test families, write the weights to `out`."""
    styles, images, labels, test = style_data()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = StyleClassifier(len(styles))
    seconds = fit(net, images[~test], labels[~test], _augment, g, epochs=epochs, batch_size=batch_size, lr=lr,
                  desc="style classifier", progress=progress)
    info = {"styles": list(styles), "test_accuracy": accuracy(net, images[test], labels[test]),
            "test_accuracy_per_style": per_style_accuracy(net, images[test], labels[test], styles),
            "train_pictures": int((~test).sum()), "test_pictures": int(test.sum()),
            "split": f"by emoji family: crc32(key) % {TEST_MOD} == 0 or held out of Noto → test",
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "train_seconds": round(seconds, 1),
            "data": "emoji-styles 32x32 atlases (noto, twemoji, openmoji)",
            "command": f"unnoise eval train-style-classifier --out {out} --epochs {epochs} --seed {seed}"}
    save_weights(net, info, out)
    return info


_loaded: dict[str, tuple[StyleClassifier, tuple[str, ...]]] = {}


def load_style_classifier(directory: str | os.PathLike = STYLE_ASSET) -> tuple[StyleClassifier, tuple[str, ...]]:
    """The trained style classifier (eval mode) and its style names, in logit order."""
    import json

    def styles(d: Path) -> tuple[str, ...]:
        return tuple(json.loads((d / "config.json").read_text())["styles"])

    k = str(Path(directory).resolve())
    if k not in _loaded:
        net = load_trained(directory, lambda d: StyleClassifier(len(styles(d))), "style classifier",
                           "unnoise eval train-style-classifier")
        _loaded[k] = net, styles(Path(directory))
    return _loaded[k]


@torch.inference_mode()
def classify_styles(images: torch.Tensor,
                    directory: str | os.PathLike = STYLE_ASSET) -> tuple[torch.Tensor, torch.Tensor]:
    """Style index (N,) int64 (into the classifier's styles) and its probability (N,) of images (N, 3, 32, 32)
    in [-1, 1]."""
    net, _ = load_style_classifier(directory)
    probs = torch.cat([net(x.float()).softmax(1) for x in images.split(500)]) if len(images) else torch.empty(0, 3)
    conf, ids = probs.max(1)
    return ids, conf
