"""Measuring generated images: Fréchet distances (FD-ENL0, FD-digits), prompt adherence, sweeps.

    from unnoise.evaluation import frechet_distance, Stats, enl0_features

Names load lazily so `unnoise eval --help` does not import torch.
"""

from __future__ import annotations

import importlib

_NAMES = {"enl0_features": ".features", "Stats": ".frechet", "frechet_distance": ".frechet",
          "Setting": ".quality", "evaluate": ".quality"}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
