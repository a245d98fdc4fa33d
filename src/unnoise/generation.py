"""One place that turns (network, schedule, text condition) into images: used by training's sample grids,
the Painter, the lab and evaluation, so they all sample exactly the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .conditioning.guidance import guided as guided_denoiser
from .denoisers import DiscreteDenoiser
from .limits import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from .sampling import get_sampler, sample, seeded_generators
from .sampling.core import check_sigmas, randn_like
from .schedules import Schedule


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    schedule: Schedule,
    prediction_type: str,
    cond: dict[str, torch.Tensor] | None,
    uncond: dict[str, torch.Tensor] | None,
    *,
    shape: tuple[int, int, int],
    seeds: Sequence[int],
    steps: int = DEFAULT_STEPS,
    guidance: float | Sequence[float] = DEFAULT_GUIDANCE,
    guidance_rescale: float = 0.0,
    sampler: str = DEFAULT_SAMPLER,
    spacing: str | None = None,
    callback: Callable | None = None,
    autocast: bool = False,
    x_init: torch.Tensor | None = None,
    sigmas: torch.Tensor | None = None,
    takes_guidance: bool | None = None,
    noise: torch.Tensor | None = None,
    clip: float | None = 1.0,
    device: torch.device | str | None = None,
    **sampler_options,
) -> torch.Tensor:
    """Images (B, C, H, W) in about [−1, 1].  cond/uncond hold one row per image (B = len(seeds)).

    `sigmas` (σ_0 > … > 0) replaces the grid of `steps` and `spacing`; with `x_init` too the caller also
    controls the start (image-to-image starts from a noised picture), without it the start is each seed's
    noise·σ_0, as `sample` draws it.
    `guidance` is one scale or one per image (the lab's guidance dial).  `takes_guidance` (default: the
    network's `config.guidance_embedding`) says the model takes w as an input — a guidance-distilled
    student: one pass of B, no CFG batch, so no negative prompt or guidance rescale either.
    `noise` (B, C, H, W) replaces the seeds' start noise; the seeds still drive everything after it.
    `device` (default: the network's parameters') is where the images are painted; the start noise is drawn on
    the CPU either way.  `clip`: x̂0 is clipped to [−clip, clip] (None: not at all; a diffusers model's
    clip_sample says which).
    """
    denoiser = DiscreteDenoiser(model, schedule, prediction_type)
    if takes_guidance is None:
        takes_guidance = bool(model.config.guidance_embedding)  # type: ignore[union-attr]  # a UNet's config
    guided = guided_denoiser(denoiser, cond, uncond, guidance, takes_guidance=takes_guidance,
                             rescale=0.0 if takes_guidance else guidance_rescale, clip=clip)
    generators = seeded_generators(seeds)  # seed k paints the same image whatever the batch (EDM)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)

    def run(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with ctx:
            return guided(x, sigma).float()

    if x_init is not None and sigmas is None:
        raise ValueError("x_init needs the sigmas it starts from")
    # the noise is drawn by CPU generators (the same seed, the same start on any device), then moved
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if noise is not None:
        if x_init is not None:
            raise ValueError("noise replaces the seeds' start draw; give it or x_init, not both")
        randn_like(torch.empty((len(seeds), *shape)), generators)  # skip the seeds' draw: an ancestral
        # sampler's fresh noise is then what it is without `noise`, so the seeds' own draw as `noise` paints
        # the seeded picture exactly
        sigmas = schedule.sigmas(steps, spacing) if sigmas is None else sigmas
        x_init = noise.to(device) * float(check_sigmas(sigmas)[0])
    if x_init is None and sigmas is not None:  # seed k's start noise, exactly as sample draws it
        start = torch.empty((len(seeds), *shape), device=device)
        x_init = randn_like(start, generators) * float(check_sigmas(sigmas)[0])
    if x_init is None:
        return sample(
            run, (len(seeds), *shape), schedule=schedule, steps=steps, sampler=sampler, spacing=spacing,
            generator=generators, callback=callback, device=device, **sampler_options,
        )
    return get_sampler(sampler)(run, x_init.to(device), sigmas, generator=generators, callback=callback,
                                **sampler_options)
