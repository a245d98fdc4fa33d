"""unnoise: paint images out of pure noise.

    from unnoise import Painter
    painter = Painter.from_pretrained("emoji")   # or "emoji-fast", "digits", … (modeldir.BUNDLED), or a directory
    images = painter("a cat face", num_images=4, seed=0)

Heavy names load on first use, so `import unnoise` (and `unnoise --help`) stays instant.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {"Painter": ".pipeline", "PaintParams": ".pipeline", "PaintError": ".pipeline", "UnnoiseError": ".errors",
         "save_image": ".pipeline"}
__all__ = ["Painter", "PaintParams", "PaintError", "UnnoiseError", "save_image", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
