"""The learned reverse for the lab: a GenerateFactory backed by real Painters, one per model name.

Parts 3 and 5 stream one run (x_t, ε̂, x̂0 per step); parts 5 (the strength ladder), 6 and 7 stream
several runs side by side (each run's x̂0 per step); part 4's replay runs at a model's size from the very
noisy picture its image to image starts from.  Everything paints through the Painter and `generation.generate`,
so the lab shows exactly what `unnoise paint` makes.
"""

from __future__ import annotations

import base64
import itertools
import math
import os
import threading
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from .. import images
from ..generation import generate
from ..modeldir import BUNDLED, ModelDirError, guidance_range, load_info, model_schedule, paint_defaults, resolve
from ..pipeline import Painter, PaintError
from ..sampling import SAMPLERS, seeded_generators
from .messages import (
    DialRequest,
    GenerateRequest,
    Img2ImgRequest,
    LadderRequest,
    PaintBody,
    PaintResult,
    ReplayRequest,
    SpacingsRequest,
)
from .streams import Emit, Frame, Source, Tile, TilesFrame
from .sweeps import compare_to_reference, reference_steps, spacing_chart
from .uploads import Picture, png_data_url

Result = tuple[Source, dict[str, Any]]


class PainterFactory:
    """Turns lab requests into Sources that stream every step of real sampling runs.

    Models load lazily on first use and stay loaded (a Painter is read-only while painting, so
    concurrent requests share it; each run's sampler state lives in that run's own call).
    """

    def __init__(self, models: Mapping[str, str | os.PathLike], device: str = "cpu"):
        self.models, self.device = dict(models), device
        self._painters: dict[str, Painter] = {}
        self._lock = threading.Lock()

    @classmethod
    def bundled(cls, device: str = "cpu") -> PainterFactory | None:
        """The installed bundled models, or None when there are none."""
        found = {}
        for name in BUNDLED:
            try:
                found[name] = resolve(name)
            except ModelDirError:
                pass
        return cls(found, device) if found else None

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
            raise ModelDirError(f"unknown model {name!r}; this lab has {', '.join(sorted(self.models)) or 'none'}")
        with self._lock:
            if name not in self._painters:
                self._painters[name] = Painter.from_pretrained(self.models[name], device=self.device)
            return self._painters[name]

    # --- part 3: text to image -------------------------------------------------------------------------
    def __call__(self, req: GenerateRequest) -> Result:
        painter = self.painter(req.model)
        p = painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=req.guidance)

        def run(emit: Emit) -> torch.Tensor:
            out = painter.paint_tensor(p, req.num_images, callback=_frames(painter, emit))
            return _rgb(out[0])

        return run, {**_size(painter), **_used(p)}

    # --- the page contract's paint (window.unnoise.paint on the served page) -------------------------
    def paint_rgba(self, req: PaintBody) -> PaintResult:
        """One picture as the contract gives it: RGBA bytes at the model's size, the network calls, the
        parameters used.  `noise` (C·H·W values) replaces the seed's start noise, as the exported page's."""
        painter = self.painter(req.model or "")
        p = painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=req.guidance,
                           snap=req.snap)
        noise = None
        if req.noise is not None:
            size = math.prod(painter.shape)
            if len(req.noise) != size:
                raise PaintError(f"noise must hold {size} values (C·H·W = {' × '.join(map(str, painter.shape))}), "
                                 f"got {len(req.noise)}")
            noise = torch.tensor(req.noise, dtype=torch.float32).view(1, *painter.shape)  # float32: 1e300 is inf
        x = _rgb(painter.paint_tensor(p, 1, noise=noise)[0])
        rgb = np.asarray(images.to_pil(x))  # _rgb: grey is already three channels
        rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
        return PaintResult(width=rgb.shape[1], height=rgb.shape[0], data=base64.b64encode(rgba.tobytes()).decode(),
                           calls=SAMPLERS[p.sampler].nfe(p.steps), seed=p.seed, sampler=p.sampler, steps=p.steps,
                           guidance=p.guidance, conditioned_on=p.conditioned_on)

    # --- part 5: image to image ------------------------------------------------------------------------
    def img2img(self, req: Img2ImgRequest) -> Result:
        """The Painter's own SDEdit path (`paint_tensor(init=…)`), so the lab and `unnoise paint
        --init-image` agree picture for picture."""
        painter = self.painter(req.model)
        p = painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=req.guidance,
                           init_image=req.image, strength=req.strength)
        init = Image.fromarray(req.picture.pixels)

        def run(emit: Emit) -> torch.Tensor:
            return _rgb(painter.paint_tensor(p, 1, init=init, callback=_frames(painter, emit))[0])

        return run, {**_size(painter), **_used(p), "init": png_data_url(_rgb(_seen(painter, req.picture)))}

    def ladder(self, req: LadderRequest) -> Result:
        """The picture re-painted at each strength in turn (the Painter's SDEdit path, as img2img), all from
        the same seed: what strength does, side by side."""
        painter = self.painter(req.model)
        runs = [painter.params(req.prompt, seed=req.seed, steps=req.steps, sampler=req.sampler, guidance=req.guidance,
                               init_image=req.image, strength=s) for s in req.strengths]
        # as Painter._img2img_start; every run has an init image, so its strength is set
        counts = [max(1, min(p.steps, round(p.steps * cast(float, p.strength)))) for p in runs]
        init = Image.fromarray(req.picture.pixels)

        def run(emit: Emit) -> dict[str, Any]:
            return {"images": _in_turn(painter, runs, emit, sum(counts), init=init), "strengths": list(req.strengths)}

        return run, {**_size(painter), **_used(runs[0]), "init": png_data_url(_rgb(_seen(painter, req.picture))),
                     "total": sum(counts), "runs": counts}

    # --- part 4: the replay beside the learned reverse ---------------------------------------------------
    def replay(self, req: ReplayRequest) -> Result:
        """The fake reverse on the picture as the model sees it, from the very noisy picture x0 + σ_0·ε that
        image to image at strength 1 starts from with the same seed and steps (the same noise draw, on the
        model's own σ grid), so both sides of part 4 start from the same static and pass the same noise levels."""
        painter = self.painter(req.model)
        p = painter.params(seed=req.seed, steps=req.steps)
        sigmas = painter.schedule.sigmas(p.steps, p.spacing)
        noise = torch.randn(painter.shape, generator=seeded_generators([p.seed])[0])  # as Painter._img2img_start
        source = _replay(painter, _seen(painter, req.picture), noise, sigmas)
        ts = [_t(painter, float(s)) for s in sigmas[:-1]]
        return source, {**_size(painter), "schedule": painter.info.schedule, "steps": p.steps, "spacing": p.spacing,
                        "ts": ts, "sigma": float(sigmas[0]), "signal": (1.0 + float(sigmas[0]) ** 2) ** -0.5}

    # --- part 6: the guidance dial -----------------------------------------------------------------------
    def dial(self, req: DialRequest) -> Result:
        """Every scale a row of one batch, all from the same seed (so the same static)."""
        painter = self.painter(req.model)
        if painter.info.scheduler:  # ValueError → 422 before any work
            raise ModelDirError(f"{req.model} is a diffusers model that reads no text, so there is no guidance to dial")
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

            # one batch of len(scales) rows, one scale per row (w as an input for a distilled student)
            x = generate(painter.model, painter.schedule, painter.info.prediction_type, cond, uncond,
                         shape=painter.shape, seeds=[p.seed] * len(scales), steps=p.steps, sampler=p.sampler,
                         spacing=p.spacing, callback=on_step, guidance=list(scales))
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
            *pictures, reference = _in_turn(painter, [*runs, ref], emit, total)
            return {"images": pictures, "reference": reference,
                    "metrics": [compare_to_reference(x, reference) for x in pictures]}

        return run, {**_size(painter), "chart": chart, "total": total, "reference_steps": ref.steps,
                     "reference_spacing": ref.spacing, "stochastic": SAMPLERS[req.sampler].stochastic}


def _in_turn(painter: Painter, runs: list, emit: Emit, total: int,
             init: Image.Image | None = None) -> list[torch.Tensor]:
    """Paint each run's image 0 in turn, streaming every step's x̂0 as tile k of a side-by-side request of
    `total` events; the final pictures (3, H, W)."""
    count = itertools.count()
    finals = []
    for k, p in enumerate(runs):
        def on_step(info, k=k) -> None:
            tile = Tile(k, info.i, info.steps, _t(painter, info.sigma), float(info.sigma), _rgb(info.denoised[0]))
            emit(TilesFrame(next(count), total, (tile,)))

        finals.append(_rgb(painter.paint_tensor(p, 1, init=init, callback=on_step)[0]))
    return finals


def _replay(painter: Painter, x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> Source:
    """The fake reverse in the σ view, as a Source: x = x0 + σ·ε at each σ of the grid, ε the known noise.

    x0, noise: (C, H, W).  Frame k shows x_t = x/sqrt(1 + σ_k²) (the DDPM scale, as the learned frames);
    x̂0 is the picture recovered from the static by taking out σ_0·ε: it cheats."""
    x0_64, noise_64, sig = x0.double(), noise.double(), sigmas.double().tolist()
    x_start = x0_64 + sig[0] * noise_64  # (C, H, W): the static both sides of part 4 start from
    recovered = x_start - sig[0] * noise_64
    eps, x0_shown = _rgb(noise_64), _rgb(recovered)  # the same tensors every frame: sent once

    def run(emit: Emit) -> torch.Tensor:
        for k, sigma in enumerate(sig[:-1]):
            x = x_start if k == 0 else recovered + sigma * noise_64
            scale = (1.0 + sigma**2) ** -0.5  # sqrt(ᾱ) at σ
            emit(Frame(k, len(sig) - 1, _t(painter, sigma), scale, x_t=_rgb(x * scale), eps=eps, x0=x0_shown))
        return x0_shown

    return run


def _seen(painter: Painter, picture: Picture) -> torch.Tensor:
    """(C, H, W): the picture as the model sees it (centre square at its size, grey for a grey model), as
    the Painter's image to image starts from it."""
    mode = "L" if painter.info.channels == 1 else "RGB"
    return images.to_tensor(images.fit(Image.fromarray(picture.pixels).convert(mode), painter.info.image_size))


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
