"""The work behind `unnoise paint` that is not option parsing: prompt files, the notes it prints, where
each image goes and how it is saved."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from . import images
from .errors import UnnoiseError
from .limits import DEFAULT_STRENGTH
from .modeldir import guidance_range
from .pipeline import Painter, PaintParams, save_image

MAX_PROMPTS = 1000  # lines of a --prompts-file


class PromptsFileError(UnnoiseError, ValueError):
    """A --prompts-file that cannot be read or holds no prompt."""


def read_prompts_file(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number from 1, prompt) for each non-blank line of a UTF-8 text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptsFileError(f"prompts file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PromptsFileError(f"cannot read prompts file {path}: {e}") from None
    prompts = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise PromptsFileError(f"{path} holds no prompt (one prompt per line)")
    if len(prompts) > MAX_PROMPTS:
        raise PromptsFileError(f"{path} holds {len(prompts)} prompts; at most {MAX_PROMPTS} a run")
    return prompts


def output_path(out: Path, num_images: int, index: int, line: int | None = None) -> Path:
    """Where image `index` (from 0) goes: OUT itself for a single image, STEM-i.EXT for several, and
    STEM-LINE-i.EXT for the prompt on line LINE of a prompts file."""
    if line is not None:
        return out.with_name(f"{out.stem}-{line}-{index + 1}{out.suffix}")
    return out if num_images == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")


def notes(painter: Painter, p: PaintParams) -> list[str]:
    """What the user should know before painting p: a diffusers model ignoring the prompt, a snapped prompt,
    a cut one, a student's limits."""
    out = []
    if painter.info.scheduler:  # a diffusers pipeline folder reads no text
        from .diffusers_folder import prompt_note

        if note := prompt_note(painter.info, p.prompt, p.class_label):
            out.append(note)
        return out
    if p.conditioned_on is not None:
        similarity = painter.snap(p.prompt).similarity
        out.append(f"note: painting {p.prompt!r} as {p.conditioned_on!r}, the closest caption this model was "
                   f"trained on (similarity {similarity:.2f}); add --no-snap to paint it exactly as typed")
    if len(painter.encoder.tokenize([p.prompt])[0][0]) >= painter.encoder.max_length:
        out.append(f"note: the prompt is longer than {painter.encoder.max_length} tokens; the rest is ignored")
    if (learned := guidance_range(painter.info)) is not None:  # a distilled student: w is a network input
        if not learned[0] <= p.guidance <= learned[1]:
            out.append(f"note: {painter.name} learned guidance from {learned[0]:g} to {learned[1]:g}; at "
                       f"{p.guidance:g} it extrapolates")
        if p.negative_prompt or p.guidance_rescale:
            out.append(f"note: {painter.name} takes w as an input and makes no unconditional pass, so "
                       "--negative-prompt and --guidance-rescale change nothing")
    return out


def save_paintings(x: torch.Tensor, p: PaintParams, paths: list[Path], size: int) -> list[Image.Image]:
    """Save image i of x (seed p.seed + i) to paths[i], upscaled to size (0: native), each with its
    parameters; the saved images (for a grid)."""
    saved = []
    for i, (xi, path) in enumerate(zip(x, paths)):
        im = p.replace(seed=p.seed + i).attach(images.to_pil(xi))
        if size:
            im = im.resize((size, size), Image.Resampling.NEAREST)  # keeps .info, the parameters
        save_image(im, path)
        saved.append(im)
    return saved


def paint_all(painter: Painter, jobs: Sequence[tuple[int | None, str]], params: list[PaintParams],
              init: Image.Image | None, *, out: Path, num_images: int, size: int, grid: bool,
              animate: Path | None) -> list[str]:
    """Paint each job (prompts-file line, prompt) with its parameters, save every image (and the grid and the
    GIF), with a progress bar; the lines to print on stdout."""
    from tqdm import tqdm

    from . import visualize

    p = params[0]
    frames: list[tuple[float, torch.Tensor, torch.Tensor]] = []
    per_job = p.steps if init is None else max(1, min(p.steps, round(p.steps * (p.strength or DEFAULT_STRENGTH))))
    bar = tqdm(total=per_job * len(jobs), unit="step", desc="painting", leave=False)

    def on_step(info) -> None:
        bar.update(1)
        if animate is not None and len(frames) < per_job:  # image 1 of the first prompt
            frames.append((info.sigma, info.x.clone(), info.denoised.clone()))

    paths: list[Path] = []
    tiles: list[Image.Image] = []
    first: torch.Tensor | None = None
    for (line, _), q in zip(jobs, params):
        x = painter.paint_tensor(q, num_images, init=init, callback=on_step)
        targets = [output_path(out, num_images, i, line) for i in range(num_images)]
        tiles += save_paintings(x, q, targets, size)
        paths += targets
        first = x if first is None else first
    bar.close()
    printed = []
    if grid and len(tiles) > 1:  # the grid carries image 1's parameters, as A1111's grids do
        paths.insert(0, save_image(p.attach(images.grid(tiles)), out))
    if animate is not None and first is not None:
        gif = visualize.denoising_frames(frames, first, size=max(size, 128))
        visualize.save_frames(gif, animate, duration_ms=150)
        printed.append(f"wrote {animate}  (the denoising of image 1, {len(gif)} frames)")
    shown = ", ".join(str(q) for q in paths[:3]) + (f" … ({len(paths)} files)" if len(paths) > 3 else "")
    printed.append(f"wrote {shown}  (seed {p.seed}, {p.steps} step{'s' * (p.steps != 1)} {p.sampler}, "
                   f"guidance {p.guidance:g}, model {painter.name})")
    return printed
