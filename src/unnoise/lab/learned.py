"""The learned reverse for the lab: a GenerateFactory backed by real Painters, one per model name."""

from __future__ import annotations

import os
import threading
from typing import Any

import torch

from ..modeldir import BUNDLED, ModelDirError, resolve
from ..pipeline import Painter
from .app import GenerateRequest
from .streams import Emit, Frame, Source


class PainterFactory:
    """Turns a GenerateRequest into a Source that streams every step of a real sampling run.

    Models load lazily on first use and stay loaded (a Painter is read-only while painting, so
    concurrent requests share it; each run's sampler state lives in that run's own call).
    """

    def __init__(self, models: dict[str, str | os.PathLike]):
        self.models = dict(models)
        self._painters: dict[str, Painter] = {}
        self._lock = threading.Lock()

    @classmethod
    def bundled(cls) -> PainterFactory | None:
        """The installed bundled models, or None when there are none."""
        found = {}
        for name in BUNDLED:
            try:
                found[name] = resolve(name)
            except ModelDirError:
                pass
        return cls(found) if found else None

    def painter(self, name: str) -> Painter:
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}; this lab has {', '.join(sorted(self.models)) or 'none'}")
        with self._lock:
            if name not in self._painters:
                self._painters[name] = Painter.from_pretrained(self.models[name])
            return self._painters[name]

    def __call__(self, req: GenerateRequest) -> tuple[Source, dict[str, Any]]:
        painter = self.painter(req.model)
        p = painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=req.guidance)
        schedule = painter.schedule

        def run(emit: Emit) -> torch.Tensor:
            def on_step(info) -> None:
                sigma = float(info.sigma)
                x, x0 = info.x[0].double(), info.denoised[0].double()  # image 0 of the batch, (C, H, W)
                scale = (1.0 + sigma**2) ** -0.5  # sqrt(ᾱ): the σ view's x is the DDPM x_t / sqrt(ᾱ)
                eps = (x - x0) / sigma  # the noise this step believes is in x: x = x̂0 + σ·ε̂
                emit(Frame(
                    info.i, info.steps, float(schedule.sigma_to_t(torch.tensor([sigma]))[0]), scale,
                    x_t=_rgb(x * scale), eps=_rgb(eps), x0=_rgb(x0),
                ))

            out = painter.paint_tensor(p, req.num_images, callback=on_step)
            return _rgb(out[0])

        h = w = painter.info.image_size
        return run, {"width": w, "height": h, "model_prompts": painter.info.example_prompts[:8]}


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """(1 or 3, H, W) → (3, H, W): digits are grey."""
    return x.expand(3, *x.shape[1:]) if x.shape[0] == 1 else x
