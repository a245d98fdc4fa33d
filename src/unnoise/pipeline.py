"""Painter: load a model directory and paint(prompt, …) — the main job of unnoise."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin

from . import __version__, images, infotext, schedules
from .errors import UnnoiseError
from .generation import generate
from .limits import DEFAULT_STRENGTH, MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS
from .modeldir import load_model_dir, model_schedule, paint_defaults
from .sampling import seeded_generators

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
    size: int | None = None  # side of the painted (square) image in pixels, before any upscaling
    class_label: int | None = None  # the class a class-conditional diffusers model paints (None: not such a model)

    def replace(self, **changes) -> PaintParams:
        return dataclasses.replace(self, **changes)

    @property
    def conditioning_prompt(self) -> str:
        """What the network is conditioned on: the snapped caption, or the prompt as typed."""
        return self.prompt if self.conditioned_on is None else self.conditioned_on

    def settings(self, index: int = 0) -> dict[str, Any]:
        """The settings line of the A1111 text (infotext.py): A1111's keys first (its sampler display name,
        with the spacing as A1111 names it), then unnoise's own; None: left out."""
        from .sampling.names import a1111_name

        return {
            "Steps": self.steps, "Sampler": a1111_name(self.sampler, self.spacing), "CFG scale": self.guidance,
            "Seed": self.seed + index, "Size": f"{self.size}x{self.size}" if self.size else None,
            "Model": self.model, "Denoising strength": self.strength if self.init_image or self.strength else None,
            "unnoise sampler": self.sampler, "Spacing": self.spacing,
            "Guidance rescale": self.guidance_rescale or None, "Conditioned on": self.conditioned_on,
            "Prompt snapping": "on" if self.snap else "off", "Init image": self.init_image,
            "unnoise version": self.unnoise_version,
        }

    def to_parameters(self, index: int = 0) -> str:
        """The A1111 `parameters` text of image `index` of the call (seed + index)."""
        return infotext.format_text(self.prompt, self.negative_prompt, self.settings(index))

    def to_png_info(self, index: int = 0) -> PngImagePlugin.PngInfo:
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_KEY, json.dumps({**asdict(self), "seed": self.seed + index}))
        info.add_text(infotext.PNG_TEXT_KEY, self.to_parameters(index))
        return info

    def attach(self, image: Image.Image) -> Image.Image:
        """Stamp these parameters on a PIL image: `.info` ("unnoise" JSON, "parameters" text, which
        `save_image` writes into the file; Pillow's resize and copy keep them) and `.unnoise_params`."""
        image.info[PNG_KEY] = json.dumps(asdict(self))
        image.info[infotext.PNG_TEXT_KEY] = self.to_parameters()
        image.unnoise_params = self  # type: ignore[attr-defined]  # read back by save_image
        return image

    @classmethod
    def from_parameters(cls, text: str, source: str = "the text") -> PaintParams:
        """Read back an unnoise A1111 text (its own keys included); PaintError if it is not one."""
        prompt, negative_prompt, s = infotext.parse_text(text)
        if "unnoise version" not in s:
            raise PaintError(f"{source} carries no unnoise parameters (it was not painted by unnoise)")
        try:
            strength = s.get("Denoising strength")
            return cls(
                prompt=prompt, negative_prompt=negative_prompt, seed=int(s["Seed"]), steps=int(s["Steps"]),
                sampler=s["unnoise sampler"], guidance=float(s["CFG scale"]),
                guidance_rescale=float(s.get("Guidance rescale", 0.0)), spacing=s["Spacing"], model=s["Model"],
                unnoise_version=s["unnoise version"], init_image=s.get("Init image"),
                strength=None if strength is None else float(strength), snap=s.get("Prompt snapping") == "on",
                conditioned_on=s.get("Conditioned on"), size=int(s["Size"].split("x")[0]) if "Size" in s else None,
            )
        except (KeyError, ValueError) as e:
            raise PaintError(f"{source}: unreadable unnoise parameters ({type(e).__name__}: {e})") from None

    @classmethod
    def from_png(cls, path: str | os.PathLike) -> PaintParams:
        """The parameters stored in a PNG, JPEG or WebP that unnoise painted (also PNGs of older versions)."""
        images.load_image(path)  # a missing, corrupt or non-image file gets its clear error here
        json_text, text = infotext.read(path)
        if json_text is not None:
            try:
                return cls(**json.loads(json_text))
            except (json.JSONDecodeError, TypeError) as e:
                raise PaintError(f"{path}: unreadable unnoise parameters ({e})") from e
        if text is None:
            raise PaintError(f"{path} carries no unnoise parameters (it was not painted by unnoise)")
        return cls.from_parameters(text, str(path))

    from_file = from_png


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


def check_noise(noise: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """A caller's start noise (unit variance, `shape` = (num_images, C, H, W)) as float32, or a one-line error."""
    if not isinstance(noise, torch.Tensor):
        raise PaintError(f"noise must be a torch.Tensor of shape {shape}, got {type(noise).__name__}")
    if not noise.dtype.is_floating_point:
        raise PaintError(f"noise must be a floating-point tensor, got dtype {noise.dtype}")
    if tuple(noise.shape) != tuple(shape):
        raise PaintError(f"noise must have shape {tuple(shape)} (num_images, C, H, W), got {tuple(noise.shape)}")
    if not bool(torch.isfinite(noise).all()):
        raise PaintError("noise must be finite (it holds NaN or infinity)")
    return noise.detach().to(torch.float32)


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
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "emoji", device: str | torch.device = "cpu") -> Painter:
        """A bundled model's name or a model directory, on device "cpu", "cuda", "cuda:N" or "mps" (DeviceError,
        one line, if this machine has none)."""
        from .devices import check_device

        device = check_device(device)
        model, info, path = load_model_dir(name_or_dir, device)
        return cls(model, info, path, str(name_or_dir), device)

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
        from .sampling.names import resolve_sampler, resolve_spacing

        if sampler is not None:  # "Euler a", "DPM++ 2M Karras", k_euler …: the registry's name (+ spacing)
            sampler, named_spacing = resolve_sampler(sampler)
            spacing = resolve_spacing(spacing) if spacing is not None else named_spacing
            if named_spacing is not None and spacing != named_spacing:
                raise PaintError(f"the sampler name asks for the {named_spacing} spacing, but spacing is {spacing!r}")
        elif spacing is not None:
            spacing = resolve_spacing(spacing)
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
            snap=snap, conditioned_on=snapped.caption if snapped else None, size=self.info.image_size,
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
        return self.vocabulary.snap([prompt], self.encoder.encode([self.vocabulary.query(prompt)])["pooled"])[0]

    def paint_tensor(self, p: PaintParams, num_images: int = 1, *, init: Image.Image | None = None,
                     callback: Callable | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """(num_images, C, H, W) in about [−1, 1] for validated parameters; `noise` (checked by
        `check_noise`) replaces the seeds' start noise, the seeds still drive any later noise."""
        check_paint_args(p.prompt, p.negative_prompt, num_images, p.steps, p.guidance, p.strength)
        if noise is not None:
            noise = check_noise(noise, (num_images, *self.shape))
        if self.info.scheduler:  # a diffusers pipeline folder: no text, at most a class label
            from .diffusers_folder import class_condition

            cond = uncond = class_condition(self.info.num_classes, p.class_label, num_images)
        else:
            cond = self.encoder.encode([p.conditioning_prompt] * num_images)
            uncond = self.encoder.encode([p.negative_prompt] * num_images)
        seeds = [p.seed + i for i in range(num_images)]
        x_init = sigmas = None
        if init is not None:
            x_init, sigmas = self._img2img_start(init, p, seeds, noise)
        return generate(
            self.model, self.schedule, self.info.prediction_type, cond, uncond, shape=self.shape, seeds=seeds,
            steps=p.steps, guidance=p.guidance, guidance_rescale=p.guidance_rescale, sampler=p.sampler,
            spacing=p.spacing, callback=callback, x_init=x_init, sigmas=sigmas, clip=self.info.clip_sample,
            device=self.device,
            noise=noise.to(self.device) if noise is not None and init is None else None,
        )

    def _img2img_start(self, init: Image.Image, p: PaintParams, seeds: list[int], noise: torch.Tensor | None = None):
        """SDEdit (Meng et al. 2022): noise the picture to the level `strength` of the way along the
        schedule's inference σs and denoise only the remaining steps under the prompt."""
        strength = DEFAULT_STRENGTH if p.strength is None else p.strength
        mode = "L" if self.info.channels == 1 else "RGB"
        x0 = images.to_tensor(images.fit(init.convert(mode), self.info.image_size))  # (C, H, W)
        sigmas = self.schedule.sigmas(p.steps, p.spacing)
        run = max(1, min(p.steps, round(p.steps * strength)))
        sigmas = sigmas[p.steps - run:]
        if noise is None:
            noise = torch.stack([torch.randn(self.shape, generator=g) for g in seeded_generators(seeds)])
        return x0[None] + float(sigmas[0]) * noise, sigmas

    def __call__(self, prompt: str | Sequence[str] = "", num_images: int = 1, *, steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None, seed: int | None = None,
                 negative_prompt: str | Sequence[str] = "", guidance_rescale: float = 0.0, spacing: str | None = None,
                 init_image: str | os.PathLike | Image.Image | None = None, strength: float | None = None,
                 callback: Callable | None = None, snap: bool | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 num_images_per_prompt: int | None = None,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 noise: torch.Tensor | None = None, class_label: int | None = None) -> list[Image.Image]:
        """Paint num_images images for a prompt, or for each prompt of a list (one flat list, prompt by prompt;
        image i of every prompt uses seed + i, a negative prompt may be a list too).  Each PIL image carries
        its parameters in `.info` and `.unnoise_params`; `unnoise.save_image(image, "x.png" | "x.jpg" |
        "x.webp")` keeps them in the file.  `snap` (default: on when the model has a vocabulary) conditions
        on the nearest training caption instead of an unknown prompt.

        diffusers' names work as well: num_inference_steps (= steps), guidance_scale (= guidance),
        num_images_per_prompt (= num_images), generator: a torch.Generator, whose initial_seed() is the
        seed (torch.Generator().manual_seed(s) paints what seed=s paints), or a list of one per image.

        `noise` (one row per image, C, H, W), unit variance, is the start noise instead of the seeds' draw
        (`torch.randn(shape, generator=torch.Generator().manual_seed(seed + i))` for image i); the seeds
        still drive the fresh noise of ancestral samplers, and the saved parameters do not record it.
        `class_label`: the class a class-conditional diffusers pipeline folder paints (docs/diffusers.md)."""
        steps = _either("steps", steps, "num_inference_steps", num_inference_steps)
        guidance = _either("guidance", guidance, "guidance_scale", guidance_scale)
        if num_images_per_prompt is not None:
            num_images = _either("num_images", None if num_images == 1 else num_images, "num_images_per_prompt",
                                 num_images_per_prompt)
        prompts, negatives = _prompt_list(prompt, negative_prompt)
        check_paint_args(prompts[0], negatives[0], num_images, 1, 0.0)
        seed, seeds = _generator_seeds(generator, seed, len(prompts) * num_images)
        seed = secrets.randbelow(2**31) if seed is None and seeds is None else seed  # one draw for all prompts
        init = init_name = None
        if init_image is not None:
            init = init_image if isinstance(init_image, Image.Image) else images.load_image(init_image)
            init_name = None if isinstance(init_image, Image.Image) else str(init_image)
            strength = DEFAULT_STRENGTH if strength is None else strength
        jobs = ([(t, n, seed, num_images) for t, n in zip(prompts, negatives)] if seeds is None else
                [(t, n, seeds[j * num_images + i], 1) for j, (t, n) in enumerate(zip(prompts, negatives))
                 for i in range(num_images)])
        out: list[Image.Image] = []
        if noise is not None:  # one row per image, all prompts together: checked once, sliced per prompt
            noise = check_noise(noise, (sum(k for *_, k in jobs), *self.shape))
        for text, negative, s, k in jobs:
            p = self.params(text, negative_prompt=negative, seed=s, steps=steps, sampler=sampler, guidance=guidance,
                            guidance_rescale=guidance_rescale, spacing=spacing, init_image=init_name,
                            strength=strength, snap=snap, class_label=class_label)
            rows = None if noise is None else noise[len(out):len(out) + k]
            x = self.paint_tensor(p, k, init=init, callback=callback, noise=rows)
            out += [p.replace(seed=p.seed + i).attach(images.to_pil(xi)) for i, xi in enumerate(x)]
        return out


def _either(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """The value given under our name or its diffusers alias; PaintError if both differ."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise PaintError(f"give {name} or its diffusers name {alias}, not both ({value!r} and {alias_value!r})")
    return alias_value


def _prompt_list(prompt: Any, negative_prompt: Any) -> tuple[list[str], list[str]]:
    """Prompts and negative prompts as two lists of strings of the same length."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else []
    if not prompts or not all(isinstance(t, str) for t in prompts):
        raise PaintError(f"prompt must be a string or a non-empty list of strings, got {prompt!r:.80}")
    if isinstance(negative_prompt, str):
        return prompts, [negative_prompt] * len(prompts)
    negatives = list(negative_prompt) if isinstance(negative_prompt, (list, tuple)) else []
    if len(negatives) != len(prompts) or not all(isinstance(t, str) for t in negatives):
        raise PaintError(f"negative_prompt must be a string or a list of {len(prompts)} strings, one per prompt")
    return prompts, negatives


def _generator_seeds(generator: Any, seed: int | None, count: int) -> tuple[int | None, list[int] | None]:
    """(seed, None) for no generator or one; (None, one seed per image) for a list of `count` generators."""
    if generator is None:
        return seed, None
    if seed is not None:
        raise PaintError("give seed or generator, not both")
    if isinstance(generator, torch.Generator):
        return generator.initial_seed(), None
    gens = list(generator) if isinstance(generator, (list, tuple)) else []
    if not gens or not all(isinstance(g, torch.Generator) for g in gens):
        raise PaintError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
    if len(gens) != count:
        raise PaintError(f"a list of generators needs one per image ({count}), got {len(gens)}")
    return None, [g.initial_seed() for g in gens]


def save_image(image: Image.Image, path: str | os.PathLike) -> Path:
    """Save an image as .png, .jpg or .webp with the generation parameters it carries in `.info` (as
    every image the Painter returns does): in a PNG the `unnoise` JSON and the A1111 `parameters` text,
    in a JPEG or WebP that text in the EXIF UserComment, as AUTOMATIC1111 writes it.  Atomic."""
    params: PaintParams | None = getattr(image, "unnoise_params", None)
    json_text, text = image.info.get(PNG_KEY), image.info.get(infotext.PNG_TEXT_KEY)
    if params is not None and json_text is None:  # stamped by hand, or by an older unnoise
        json_text, text = json.dumps(asdict(params)), params.to_parameters()
    return infotext.save(image, path, text=text if isinstance(text, str) else None,
                         json_text=json_text if isinstance(json_text, str) else None)


save_png = save_image  # its old name
