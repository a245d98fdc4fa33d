"""What the lab's API takes and gives: the requests a model source serves, and the response schemas
(FastAPI turns these into /openapi.json, which the fuzz test reads)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..limits import LAB_MAX_GUIDANCE
from .streams import Source
from .uploads import Picture


@dataclass(frozen=True)
class PaintRequest:
    """What every painting part asks for; checked against LabConfig's limits."""

    prompt: str
    model: str
    sampler: str | None  # None: the model's own default (as steps and guidance)
    steps: int | None  # of the full schedule (image to image runs about strength × steps of them)
    guidance: float | None
    seed: int


@dataclass(frozen=True)
class GenerateRequest(PaintRequest):
    """What the page asks of the learned reverse (section 3)."""

    num_images: int


@dataclass(frozen=True)
class Img2ImgRequest(PaintRequest):
    """Part 5: re-paint a picture from `strength` of the way up the noise under a prompt (SDEdit)."""

    strength: float  # in (0, 1]: 1 starts from pure static, small values keep most of the picture
    image: str  # the picture's id ("cat" or an upload's)
    picture: Picture = field(compare=False, repr=False)


@dataclass(frozen=True)
class LadderRequest(PaintRequest):
    """Part 5's strength ladder: one picture re-painted at several strengths, one run after another."""

    strengths: tuple[float, ...]  # each in (0, 1]
    image: str  # the picture's id ("cat" or an upload's)
    picture: Picture = field(compare=False, repr=False)


@dataclass(frozen=True)
class ReplayRequest:
    """Part 4 with a model: the replay on the picture as the model sees it, from the very noisy picture
    that image to image at strength 1 starts from (same seed, steps and σ grid)."""

    model: str
    seed: int
    steps: int
    image: str  # the picture's id ("cat" or an upload's)
    picture: Picture = field(compare=False, repr=False)


@dataclass(frozen=True)
class DialRequest:
    """Part 6: one prompt and seed at several guidance scales, side by side."""

    prompt: str
    model: str
    sampler: str
    steps: int
    seed: int
    scales: tuple[float, ...]


@dataclass(frozen=True)
class SpacingsRequest:
    """Part 7: one prompt and seed at a small step count under several spacings, side by side."""

    prompt: str
    model: str
    sampler: str
    steps: int
    guidance: float
    seed: int
    spacings: tuple[str, ...]


# Turns a request into (source, start-event data); raises an unnoise.UnnoiseError (→ 422) for an unknown
# model or sampler; any other exception is a bug (a logged 500).
# The factory may also offer parts 5–7 as methods of the same shape: .img2img(Img2ImgRequest),
# .dial(DialRequest), .spacings(SpacingsRequest), .replay(ReplayRequest) and .ladder(LadderRequest); a part
# whose method is missing answers 404.
GenerateFactory = Callable[[GenerateRequest], tuple[Source, dict[str, Any]]]
LEARNED_PARTS = ("img2img", "dial", "spacings", "replay", "ladder")
DIAL_SCALES = (0.0, 1.0, 3.0, 7.0, 12.0)  # from "ignores the prompt" to "overcooked"
LADDER_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)  # from "a light touch-up" to "pure static"


MAX_SEED = 2**32 - 1  # the lab's seeds: what a page's integer input and the JS engine's draws take


class ErrorBody(BaseModel):
    error: str


class PaintBody(BaseModel):
    """POST /api/paint: the page contract's paint request (window.unnoise.paint), every field but the prompt
    optional (the model's own defaults; a seed left out is drawn at random). Strict: JSON's true is not a
    seed of 1 nor "7" a step count (an int still passes as a float)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prompt: str
    model: str | None = None
    sampler: str | None = None
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0, le=LAB_MAX_GUIDANCE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    snap: bool | None = None  # None: the model's default (on where it has a vocabulary)
    noise: list[float] | None = None  # the C·H·W start-noise values, flat (C, H, W) order


class PaintResult(BaseModel):
    width: int
    height: int
    data: str  # base64 of (H, W, 4) uint8 RGBA, row-major
    calls: int  # network calls (a classifier-free-guided call is one doubled batch)
    seed: int
    sampler: str
    steps: int
    guidance: float
    conditioned_on: str | None  # the vocabulary caption the prompt snapped to, or None (painted as typed)


class PictureInfo(BaseModel):
    id: str
    width: int
    height: int


class ForwardData(BaseModel):
    image: str
    width: int
    height: int
    seed: int
    x0: str  # base64 of (H, W, 3) uint8, row-major: the image exactly
    noise: str  # base64 of (H, W, 3) float32 little-endian: ε, a standard normal draw from the seed


class ScheduleCurves(BaseModel):
    name: str
    num_steps: int
    zero_terminal_snr: bool
    crossing_step: float  # fractional t where signal = noise (ᾱ = 1/2)
    alphas_cumprod: list[float]  # ᾱ_t, t = 0 … T−1, float64 values exactly


class ScheduleList(BaseModel):
    default: str
    schedules: list[ScheduleCurves]


class Status(BaseModel):
    version: str
    learned: bool  # whether /api/generate has a trained model behind it
    models: list[str] = []  # the model names /api/generate knows (empty when unknown or none)
    default_model: str = ""  # the model a request that names none gets (emoji when the lab has it)
    parts: list[str] = []  # which of img2img, dial, spacings, replay, ladder the model source offers
    # per model: its default steps, guidance, sampler and spacing (+ guidance_range for a distilled student)
    model_defaults: dict[str, dict[str, Any]] = {}
    running: int
    waiting: int
    limits: dict[str, float]


class SamplerInfo(BaseModel):
    name: str
    order: int  # convergence order of its ODE solver
    stochastic: bool  # draws fresh noise every step
    calls_per_step: int  # network calls per step
    paper: str


class SamplerList(BaseModel):
    default: str
    samplers: list[SamplerInfo]
    default_spacing: str
    spacings: list[str]


class SpacingSteps(BaseModel):
    spacing: str
    sigmas: list[float]  # steps + 1 noise levels, descending, the last exactly 0
    ts: list[float]  # the fractional DDPM timestep of each step's σ (steps entries)
    noisy_steps: int  # steps that start where σ > 1 (noise outweighs signal)
    clean_steps: int  # steps that start where σ ≤ 1


class SpacingChart(BaseModel):
    schedule: str
    num_steps: int
    steps: int
    crossing_step: float  # fractional t where σ = 1
    spacings: list[SpacingSteps]
