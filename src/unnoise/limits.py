"""Painting limits and the defaults that do not depend on the model: the one table the Painter, the CLI and the
lab read.  A model's own defaults (steps, guidance, sampler, spacing) live in its unnoise.json
(`modeldir.paint_defaults`); the prompt length is the text encoder's (`conditioning.text.MAX_LENGTH`, 77 tokens).
Values are checked once, where parameters are built (`pipeline.check_paint_args`, the lab's query schema)."""

from __future__ import annotations

MAX_STEPS = 1000  # sampler steps: the training schedules have 1000 steps
MAX_IMAGES = 64  # images per call (`-k`, num_images)
MAX_GUIDANCE = 100.0  # classifier-free guidance scale w, Python API and CLI
LAB_MAX_GUIDANCE = 30.0  # the lab's inputs stop here: beyond it every bundled model only overcooks
DEFAULT_STRENGTH = 0.6  # image to image: how far up the noise the picture goes, in (0, 1]

# What a model paints with when its unnoise.json names no default (and what training's sample grids use).
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0
DEFAULT_SAMPLER = "dpmpp_2m"
DEFAULT_SPACING = "log_snr"  # uniform in log-SNR: the lowest error at 5–50 steps (docs/samplers.md)
PAINT_DEFAULTS = {"steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE, "sampler": DEFAULT_SAMPLER}
