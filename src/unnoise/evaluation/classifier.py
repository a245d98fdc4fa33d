"""The project's own MNIST digit classifier: the judge of digit prompt adherence and the feature
network of FD-digits (a Fréchet distance in its 128-d penultimate features).

A small VGG-style CNN on the 32×32 `digits` data (1 × 32 × 32 in [-1, 1]), trained with random
±2-pixel shifts.  The shipped weights (`assets/digit-classifier/`) were made by

    unnoise eval train-classifier --out src/unnoise/evaluation/assets/digit-classifier

and its `config.json` records the test accuracy the run measured.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnnoiseError


class ClassifierWeightsError(UnnoiseError, FileNotFoundError):
    """The digit classifier's weights are not where the evaluation looks for them."""

ASSET = Path(__file__).parent / "assets" / "digit-classifier"
FEATURE_DIM = 128


def block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3 conv–BatchNorm–ReLU layers and a 2× max-pool (VGG style): the judges' building block."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(block(1, 16), block(16, 32), block(32, 64))  # 32 → 4
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU())
        self.fc = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 128) penultimate features of (N, 1, 32, 32) images in [-1, 1]."""
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def shift(x: torch.Tensor, g: torch.Generator, pixels: int = 2, fill: float = -1.0) -> torch.Tensor:
    """Random integer translations by up to ±pixels, filling with the background (`fill`: -1 black, 1 white)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, value=fill)
    dx, dy = (torch.randint(0, 2 * pixels + 1, (2, n), generator=g)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.inference_mode()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    net.eval()
    batches = zip(images.split(batch_size), labels.split(batch_size))
    correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in batches)
    return correct / len(labels)


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (batch, generator) → augmented batch


def fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, augment: Augment, g: torch.Generator, *, epochs: int,
        batch_size: int, lr: float, desc: str, progress: bool = True) -> float:
    """Train `net` on (x, y) with AdamW and a one-cycle schedule, `augment` on every batch; the seconds taken."""
    from tqdm import tqdm

    steps = epochs * (len(x) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        for k in range(len(x) // batch_size):
            idx = order[k * batch_size : (k + 1) * batch_size]
            loss = F.cross_entropy(net(augment(x[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return time.perf_counter() - start


def save_weights(net: nn.Module, info: dict, out: str | os.PathLike) -> None:
    """model.safetensors + config.json in `out`, each written atomically."""
    from safetensors.torch import save_file

    from ..atomic import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda p: save_file(state, str(p)))
    atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))


def train_classifier(out: str | os.PathLike, *, epochs: int = 4, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, progress: bool = True) -> dict:
    """Train on digits/train, measure on digits/test, write model.safetensors + config.json to `out`."""
    from ..data import get_dataset
    from ..data.base import to_float

    train, test = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert train.labels is not None and test.labels is not None  # digits carry their class labels
    x_train, y_train = to_float(train.images), train.labels
    x_test, y_test = to_float(test.images), test.labels
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DigitClassifier().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    seconds = fit(net, x_train, y_train, shift, g, epochs=epochs, batch_size=batch_size, lr=lr, desc="classifier",
                  progress=progress)
    acc = accuracy(net, x_test, y_test)
    info = {"test_accuracy": acc, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "train_seconds": round(seconds, 1), "data": "digits 32x32 (MNIST)",
            "command": f"unnoise eval train-classifier --out {out} --epochs {epochs} --seed {seed}"}
    save_weights(net, info, out)
    return info


_cached: dict[str, DigitClassifier] = {}
M = TypeVar("M", bound=nn.Module)


def load_trained(directory: str | os.PathLike, build: Callable[[Path], M], what: str, command: str) -> M:
    """A judge network trained by the project (eval mode, no gradients): `build(directory)` makes the
    empty network, DIR/model.safetensors fills it; missing weights are one line saying how to make them."""
    from safetensors.torch import load_file

    path = Path(directory) / "model.safetensors"
    if not path.exists():
        raise ClassifierWeightsError(f"{what} weights not found: {path} (make them with `{command} --out {directory}`)")
    net = build(Path(directory))
    net.load_state_dict(load_file(path))
    return net.eval().requires_grad_(False)


def load_classifier(directory: str | os.PathLike = ASSET) -> DigitClassifier:
    """The trained classifier (eval mode), from safetensors."""
    key = str(Path(directory).resolve())
    if key not in _cached:
        _cached[key] = load_trained(directory, lambda _: DigitClassifier(), "digit classifier",
                                    "unnoise eval train-classifier")
    return _cached[key]
