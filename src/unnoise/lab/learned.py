"""The learned reverse for the lab: a GenerateFactory backed by real Painters, one per model name.

Parts 3 and 5 stream one run (x_t, ε̂, x̂0 per step); parts 6 and 7 stream several runs side by side
(each run's x̂0 per step).  Everything paints through the Painter and `generation.generate`, so the lab
shows exactly what `unnoise paint` makes.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import torch
from PIL import Image

from .. import images
from ..generation import generate
from ..modeldir import BUNDLED, ModelDirError, guidance_range, load_info, model_schedule, paint_defaults, resolve
from ..pipeline import Painter
from ..sampling import SAMPLERS
from .messages import DialRequest, GenerateRequest, Img2ImgRequest, SpacingsRequest
from .streams import Emit, Frame, Source, Tile, TilesFrame
from .sweeps import PerImageCFG, PerImageGuidanceInput, compare_to_reference, reference_steps, spacing_chart
from .uploads import png_data_url

Result = tuple[Source, dict[str, Any]]


class PainterFactory:
    """Turns lab requests into Sources that stream every step of real sampling runs.

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

    def model_defaults(self) -> dict[str, dict[str, Any]]:
        """Per model, how it paints by default (steps, guidance, sampler, spacing), read from its unnoise.json
        without loading it; a distilled student adds the guidance range it learned (w is its input)."""
        out = {}
        for name, path in self.models.items():
            try:
                info, _ = load_info(path)
            except (OSError, ValueError):
                continue  # /api/generate reports a broken model when asked to use it
            d = paint_defaults(info)  # as the Painter fills them in
            if (learned := guidance_range(info)) is not None:
                d["guidance_range"] = list(learned)
            out[name] = d
        return out

    def model_schedules(self) -> dict[str, Any]:
        """The β schedule of each diffusers pipeline folder among the models, named "MODEL (model)", for the
        lab's forward and schedule parts (an unnoise model's schedule is one of the named ones already)."""
        from dataclasses import replace

        out = {}
        for name, path in self.models.items():
            try:
                info, _ = load_info(path)
            except (OSError, ValueError):
                continue
            if info.scheduler:
                key = f"{name} (model)"
                out[key] = replace(model_schedule(info), name=key)
        return out

    def painter(self, name: str) -> Painter:
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}; this lab has {', '.join(sorted(self.models)) or 'none'}")
        with self._lock:
            if name not in self._painters:
                self._painters[name] = Painter.from_pretrained(self.models[name])
            return self._painters[name]

    # --- part 3: text to image -------------------------------------------------------------------------
    def __call__(self, req: GenerateRequest) -> Result:
        painter = self.painter(req.model)
        p = painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=req.guidance)

        def run(emit: Emit) -> torch.Tensor:
            out = painter.paint_tensor(p, req.num_images, callback=_frames(painter, emit))
            return _rgb(out[0])

        return run, {**_size(painter), **_used(p)}

    # --- part 5: image to image ------------------------------------------------------------------------
    def img2img(self, req: Img2ImgRequest) -> Result:
        """The Painter's own SDEdit path (`paint_tensor(init=…)`), so the lab and `unnoise paint
        --init-image` agree picture for picture."""
        painter = self.painter(req.model)
        p = painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=req.guidance,
                           init_image=req.image, strength=req.strength)
        init = Image.fromarray(req.picture.pixels)
        mode = "L" if painter.info.channels == 1 else "RGB"
        seen = images.to_tensor(images.fit(init.convert(mode), painter.info.image_size))  # what the model starts from

        def run(emit: Emit) -> torch.Tensor:
            return _rgb(painter.paint_tensor(p, 1, init=init, callback=_frames(painter, emit))[0])

        return run, {**_size(painter), **_used(p), "init": png_data_url(_rgb(seen))}

    # --- part 6: the guidance dial -----------------------------------------------------------------------
    def dial(self, req: DialRequest) -> Result:
        """Every scale a row of one batch, all from the same seed (so the same static)."""
        painter = self.painter(req.model)
        if painter.info.scheduler:  # ValueError → 422 before any work
            raise ValueError(f"{req.model} is a diffusers model that reads no text, so there is no guidance to dial")
        p = painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=0.0)
        scales = [float(w) for w in req.scales]
        for w in scales:
            painter.params(guidance=w, seed=0)  # the Painter's own range check for each scale

        def run(emit: Emit) -> dict[str, Any]:
            cond = painter.encoder.encode([p.conditioning_prompt])
            uncond = painter.encoder.encode([p.negative_prompt])

            def on_step(info) -> None:
                t, sigma = _t(painter, info.sigma), float(info.sigma)
                emit(TilesFrame(info.i, info.steps, tuple(
                    Tile(k, info.i, info.steps, t, sigma, _rgb(info.denoised[k])) for k in range(len(scales)))))

            if painter.model.config.guidance_embedding:  # a distilled student: w is an input, no CFG batch
                guide = lambda denoiser: PerImageGuidanceInput(denoiser, cond, scales)  # noqa: E731
            else:
                guide = lambda denoiser: PerImageCFG(denoiser, cond, uncond, scales)  # noqa: E731
            x = generate(painter.model, painter.schedule, painter.info.prediction_type, cond, uncond,
                         shape=painter.shape, seeds=[p.seed] * len(scales), steps=p.steps, sampler=p.sampler,
                         spacing=p.spacing, callback=on_step, guide=guide)
            return {"images": [_rgb(xi) for xi in x], "scales": scales}

        return run, {**_size(painter), "total": p.steps}

    # --- part 7: where the steps go ----------------------------------------------------------------------
    def spacings(self, req: SpacingsRequest) -> Result:
        """Each spacing in turn at req.steps, then the reference (the model's default spacing at many
        steps), all from the same seed; `done` compares each picture with the reference."""
        painter = self.painter(req.model)
        chart = spacing_chart(painter.schedule, req.steps, req.spacings)  # ScheduleError → 422 before any work
        runs = [painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler,
                               guidance=req.guidance, spacing=name) for name in req.spacings]
        ref = painter.params(req.prompt, seed=req.seed, steps=reference_steps(req.steps), sampler=req.sampler,
                             guidance=req.guidance, spacing=painter.defaults["spacing"])
        total = sum(p.steps for p in runs) + ref.steps

        def run(emit: Emit) -> dict[str, Any]:
            count = itertools.count()
            finals = []
            for k, p in enumerate([*runs, ref]):
                def on_step(info, k=k) -> None:
                    tile = Tile(k, info.i, info.steps, _t(painter, info.sigma), float(info.sigma), _rgb(info.denoised[0]))
                    emit(TilesFrame(next(count), total, (tile,)))

                finals.append(_rgb(painter.paint_tensor(p, 1, callback=on_step)[0]))
            *pictures, reference = finals
            return {"images": pictures, "reference": reference,
                    "metrics": [compare_to_reference(x, reference) for x in pictures]}

        return run, {**_size(painter), "chart": chart, "total": total, "reference_steps": ref.steps,
                     "reference_spacing": ref.spacing, "stochastic": SAMPLERS[req.sampler].stochastic}


def _frames(painter: Painter, emit: Emit):
    """A sampler callback that streams image 0 of the batch as a Frame (x_t, ε̂, x̂0)."""

    def on_step(info) -> None:
        sigma = float(info.sigma)
        x, x0 = info.x[0].double(), info.denoised[0].double()  # image 0 of the batch, (C, H, W)
        scale = (1.0 + sigma**2) ** -0.5  # sqrt(ᾱ): the σ view's x is the DDPM x_t / sqrt(ᾱ)
        eps = (x - x0) / sigma  # the noise this step believes is in x: x = x̂0 + σ·ε̂
        emit(Frame(info.i, info.steps, _t(painter, sigma), scale, x_t=_rgb(x * scale), eps=_rgb(eps), x0=_rgb(x0)))

    return on_step


def _t(painter: Painter, sigma: float) -> float:
    """The fractional DDPM timestep of a noise level σ on the painter's schedule."""
    return float(painter.schedule.sigma_to_t(torch.tensor([float(sigma)]))[0])


def _size(painter: Painter) -> dict[str, Any]:
    h = w = painter.info.image_size
    return {"width": w, "height": h, "model_prompts": painter.info.example_prompts[:8]}


def _used(p) -> dict[str, Any]:
    """The sampler, steps and guidance a run really uses (a request may leave them to the model's defaults)."""
    return {"sampler": p.sampler, "steps": p.steps, "guidance": p.guidance}


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """(1 or 3, H, W) → (3, H, W): digits are grey."""
    return x.expand(3, *x.shape[1:]) if x.shape[0] == 1 else x
