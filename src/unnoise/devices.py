"""Which torch device to run on, checked once at the edge (`--device`, `device=`): a one-line error that
says why a device is not there, instead of a CUDA or MPS traceback from deep inside a model."""

from __future__ import annotations

import torch

from .errors import UnnoiseError
from .suggest import did_you_mean

KINDS = ("cpu", "cuda", "mps")


class DeviceError(UnnoiseError, ValueError):
    """A device name that is unknown or not available on this machine."""


def check_device(name: str | torch.device) -> torch.device:
    """The torch.device for "cpu", "cuda", "cuda:N" or "mps" (any case), if this PyTorch can use it here."""
    if isinstance(name, torch.device):
        name = str(name)
    text = name.strip().lower() if isinstance(name, str) else ""
    kind, colon, index = text.partition(":")
    if kind not in KINDS or (colon and (kind != "cuda" or not index.isdigit())):
        hint = "; did you mean 'cuda'?" if kind == "gpu" else did_you_mean(kind, KINDS)
        raise DeviceError(f"unknown device {name!r}{hint} (choose from cpu, cuda, cuda:N, mps)")
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device {name!r} is not available: {why} (torch {torch.__version__}); use cpu")
        if colon and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} is not available: this machine has {torch.cuda.device_count()} "
                              "CUDA GPU(s), numbered from 0")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            f"device {name!r} is not available: no Apple GPU (MPS) for torch {torch.__version__}; use cpu")
    return torch.device(text)
