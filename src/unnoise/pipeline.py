"""Painter: load a model directory and paint(prompt, …) — the main job of unnoise."""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin

from .errors import UnnoiseError
from . import __version__, images, schedules
from .generation import generate
from .sampling import seeded_generators
from .modeldir import load_model_dir, model_schedule, paint_defaults

MAX_STEPS = 1000
MAX_IMAGES = 64
MAX_GUIDANCE = 100.0
PNG_KEY = "unnoise"  # the PNG text chunk that holds the generation parameters as JSON


class PaintError(UnnoiseError, ValueError):
    """Bad painting arguments."""


@dataclass(frozen=True)
class PaintParams:
    """Everything that determines a painting: stored in each PNG, enough to reproduce it."""

    prompt: str
    negative_prompt: str
    seed: int  # image i of a call uses seed + i
    steps: int
    sampler: str
    guidance: float
    guidance_rescale: float
    spacing: str
    model: str
    unnoise_version: str
    init_image: str | None = None
    strength: float | None = None
    snap: bool = False  # prompt snapping to the model's vocabulary (conditioning/vocabulary.py) was on
    conditioned_on: str | None = None  # the vocabulary caption the prompt snapped to (None: the prompt itself)
    class_label: int | None = None  # the class a class-conditional diffusers model paints (None: not such a model)

    @property
    def conditioning_prompt(self) -> str:
        """What the network is conditioned on: the snapped caption, or the prompt as typed."""
        return self.prompt if self.conditioned_on is None else self.conditioned_on

    def to_png_info(self, index: int = 0) -> PngImagePlugin.PngInfo:
        info = PngImagePlugin.PngInfo()
        data = {**asdict(self), "seed": self.seed + index}
        info.add_text(PNG_KEY, json.dumps(data))
        snapped = f"Conditioned on: {self.conditioned_on}\n" if self.conditioned_on is not None else ""
        info.add_text("parameters", f"{self.prompt}\nNegative prompt: {self.negative_prompt}\n{snapped}"
                      f"Steps: {self.steps}, Sampler: {self.sampler}, CFG scale: {self.guidance}, "
                      f"Seed: {self.seed + index}, Model: {self.model}, unnoise {self.unnoise_version}")
        return info

    @classmethod
    def from_png(cls, path: str | os.PathLike) -> PaintParams:
        images.load_image(path)  # a missing, corrupt or non-image file gets its clear error here
        with Image.open(path) as raw:
            text = getattr(raw, "text", {}) or {}
        if PNG_KEY not in text:
            raise PaintError(f"{path} carries no unnoise parameters (it was not painted by unnoise)")
        try:
            data = json.loads(text[PNG_KEY])
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as e:
            raise PaintError(f"{path}: unreadable unnoise parameters ({e})") from e


def check_paint_args(prompt: Any, negative_prompt: Any, num_images: Any, steps: Any, guidance: Any,
                     strength: Any = None, guidance_rescale: Any = 0.0) -> None:
    """Validation at the edge, shared by the Python API, the CLI and the lab."""
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise PaintError("prompt and negative prompt must be strings")
    for name, v, lo, hi in (("num_images", num_images, 1, MAX_IMAGES), ("steps", steps, 1, MAX_STEPS)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise PaintError(f"{name} must be an integer from {lo} to {hi}, got {v!r}")
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
        raise PaintError(f"guidance must be a finite number from 0 to {MAX_GUIDANCE:g}, got {guidance!r}")
    if not isinstance(guidance_rescale, (int, float)) or not 0 <= guidance_rescale <= 1:
        raise PaintError(f"guidance rescale must be from 0 to 1, got {guidance_rescale!r}")
    if strength is not None and (not isinstance(strength, (int, float)) or not 0 < strength <= 1):
        raise PaintError(f"strength must be in (0, 1], got {strength!r}")


class Painter:
    """A trained model ready to paint.  `Painter.from_pretrained("emoji")(prompt)` → list of PIL images."""

    def __init__(self, model: torch.nn.Module, info, path: Path, name: str, device: torch.device):
        from .conditioning.text import TextEncoder
        from .conditioning.vocabulary import Vocabulary

        self.model, self.info, self.path, self.name, self.device = model, info, path, name, device
        self.vocabulary = Vocabulary.load(path)  # None: this model has no vocabulary.safetensors, prompts go as typed
        self.schedule = model_schedule(info)
        self._encoder = None if info.scheduler else TextEncoder.load(device=device)  # a diffusers folder reads no text
        self.defaults = paint_defaults(info)

    @property
    def encoder(self):
        """The text encoder (loaded on first use for a model that reads no text)."""
        if self._encoder is None:
            from .conditioning.text import TextEncoder

            self._encoder = TextEncoder.load(device=self.device)
        return self._encoder

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "emoji", device: str = "cpu") -> Painter:
        model, info, path = load_model_dir(name_or_dir, device)
        return cls(model, info, path, str(name_or_dir), torch.device(device))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.info.channels, self.info.image_size, self.info.image_size)

    def params(self, prompt: str = "", *, negative_prompt: str = "", seed: int | None = None, steps: int | None = None,
               sampler: str | None = None, guidance: float | None = None, guidance_rescale: float = 0.0,
               spacing: str | None = None, init_image: str | None = None, strength: float | None = None,
               snap: bool | None = None, class_label: int | None = None) -> PaintParams:
        """Fill in defaults (a fresh random seed when none is given; snapping on if the model has a
        vocabulary) and validate.  A diffusers pipeline folder's model reads no text: guidance is 1 (one
        pass), and a class-conditional one paints `class_label` (default: the prompt if it is a class
        number, else 0)."""
        from .sampling import get_sampler

        snap = self.vocabulary is not None if snap is None else bool(snap)
        snapped = self.snap(prompt) if snap and isinstance(prompt, str) else None

        p = PaintParams(
            prompt=prompt, negative_prompt=negative_prompt,
            seed=secrets.randbelow(2**31) if seed is None else seed,
            steps=self.defaults["steps"] if steps is None else steps,
            sampler=self.defaults["sampler"] if sampler is None else sampler,
            guidance=float(self.defaults["guidance"] if guidance is None else guidance),
            guidance_rescale=float(guidance_rescale),
            spacing=self.defaults["spacing"] if spacing is None else spacing,
            model=self.name, unnoise_version=__version__, init_image=init_image, strength=strength,
            snap=snap, conditioned_on=snapped.caption if snapped else None,
        )
        if self.info.scheduler:
            p = self._diffusers_params(p, class_label)
        elif class_label is not None:
            raise PaintError(f"class_label is for class-conditional diffusers models; {self.name} reads prompts")
        check_paint_args(p.prompt, p.negative_prompt, 1, p.steps, p.guidance, p.strength, p.guidance_rescale)
        if isinstance(p.seed, bool) or not isinstance(p.seed, int) or not 0 <= p.seed < 2**63 - MAX_IMAGES:
            raise PaintError(f"seed must be a non-negative integer, got {p.seed!r}")
        get_sampler(p.sampler)
        try:
            self.schedule.sigmas(p.steps, p.spacing)  # a known spacing; a log_snr@S spacing's S inside the σ range
        except schedules.ScheduleError as e:
            raise PaintError(str(e)) from None
        return p

    def _diffusers_params(self, p: PaintParams, class_label: int | None) -> PaintParams:
        from dataclasses import replace

        from .diffusers_folder import prompt_label

        n = self.info.num_classes
        if n is None and class_label is not None:
            raise PaintError(f"class_label {class_label!r}: {self.name} is an unconditional model (no classes)")
        if n is not None:
            if class_label is None:
                class_label = prompt_label(p.prompt, n) or 0
            if isinstance(class_label, bool) or not isinstance(class_label, int) or not 0 <= class_label < n:
                raise PaintError(f"class_label must be an integer from 0 to {n - 1}, got {class_label!r}")
        return replace(p, guidance=1.0, snap=False, conditioned_on=None, class_label=class_label)

    def snap(self, prompt: str):
        """The prompt's `Snap` to this model's vocabulary (caption None: painted as typed), or None
        without a vocabulary."""
        if self.vocabulary is None:
            return None
        return self.vocabulary.snap([prompt], self.encoder.encode([prompt])["pooled"])[0]

    def paint_tensor(self, p: PaintParams, num_images: int = 1, *, init: Image.Image | None = None,
                     callback: Callable | None = None) -> torch.Tensor:
        """(num_images, C, H, W) in about [−1, 1] for validated parameters."""
        check_paint_args(p.prompt, p.negative_prompt, num_images, p.steps, p.guidance, p.strength)
        if self.info.scheduler:  # a diffusers pipeline folder: no text, at most a class label
            from .diffusers_folder import class_condition

            cond = uncond = class_condition(self.info.num_classes, p.class_label, num_images)
        else:
            cond = self.encoder.encode([p.conditioning_prompt] * num_images)
            uncond = self.encoder.encode([p.negative_prompt] * num_images)
        seeds = [p.seed + i for i in range(num_images)]
        x_init = sigmas = None
        if init is not None:
            x_init, sigmas = self._img2img_start(init, p, seeds)
        return generate(
            self.model, self.schedule, self.info.prediction_type, cond, uncond, shape=self.shape, seeds=seeds,
            steps=p.steps, guidance=p.guidance, guidance_rescale=p.guidance_rescale, sampler=p.sampler,
            spacing=p.spacing, callback=callback, x_init=x_init, sigmas=sigmas, clip=self.info.clip_sample,
        )

    def _img2img_start(self, init: Image.Image, p: PaintParams, seeds: list[int]):
        """SDEdit (Meng et al. 2022): noise the picture to the level `strength` of the way along the
        schedule's inference σs and denoise only the remaining steps under the prompt."""
        strength = 0.6 if p.strength is None else p.strength
        mode = "L" if self.info.channels == 1 else "RGB"
        x0 = images.to_tensor(images.fit(init.convert(mode), self.info.image_size))  # (C, H, W)
        sigmas = self.schedule.sigmas(p.steps, p.spacing)
        run = max(1, min(p.steps, round(p.steps * strength)))
        sigmas = sigmas[p.steps - run:]
        noise = torch.stack([torch.randn(self.shape, generator=g) for g in seeded_generators(seeds)])
        return x0[None] + float(sigmas[0]) * noise, sigmas

    def __call__(self, prompt: str = "", num_images: int = 1, *, steps: int | None = None, guidance: float | None = None,
                 sampler: str | None = None, seed: int | None = None, negative_prompt: str = "",
                 guidance_rescale: float = 0.0, spacing: str | None = None, init_image: str | os.PathLike | Image.Image | None = None,
                 strength: float | None = None, callback: Callable | None = None,
                 snap: bool | None = None, class_label: int | None = None) -> list[Image.Image]:
        """Paint num_images images for a prompt; each PIL image carries its parameters in `.info` and
        `.unnoise_params` (save with `save_png` to keep them in the file).  `snap` (default: on when the
        model has a vocabulary) conditions on the nearest training caption instead of an unknown prompt.
        `class_label`: the class a class-conditional diffusers pipeline folder paints (docs/diffusers.md)."""
        init = None
        init_name = None
        if init_image is not None:
            init = init_image if isinstance(init_image, Image.Image) else images.load_image(init_image)
            init_name = None if isinstance(init_image, Image.Image) else str(init_image)
            strength = 0.6 if strength is None else strength
        p = self.params(prompt, negative_prompt=negative_prompt, seed=seed, steps=steps, sampler=sampler,
                        guidance=guidance, guidance_rescale=guidance_rescale, spacing=spacing,
                        init_image=init_name, strength=strength, snap=snap, class_label=class_label)
        x = self.paint_tensor(p, num_images, init=init, callback=callback)
        out = []
        for i, xi in enumerate(x):
            im = images.to_pil(xi)
            im.unnoise_params = PaintParams(**{**asdict(p), "seed": p.seed + i})
            out.append(im)
        return out


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Save a painted image with its generation parameters in a PNG text chunk."""
    params: PaintParams | None = getattr(image, "unnoise_params", None)
    path = Path(path)
    image.save(path, pnginfo=params.to_png_info() if params else None)
    return path
