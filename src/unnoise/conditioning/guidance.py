"""Classifier-free guidance as a denoiser → denoiser wrapper (Ho & Salimans 2022); samplers never know.

    x̂0 = x̂0_u + w·(x̂0_c − x̂0_u)
with x̂0_c = D(x, σ, cond) and x̂0_u = D(x, σ, uncond).  Guiding x̂0 is the same as guiding ε̂ or v̂:
all three are affine in each other with coefficients that depend only on (x, σ), shared by both passes,
and the weights (1 − w, w) sum to 1.  A negative prompt is simply its condition passed as ``uncond``.

A guidance-distilled student (docs/distill.md) takes w as a network input instead: `GuidanceInput`.
`guided(…, takes_guidance=…)` picks one of the two by the model's declared capability
(`UNetConfig.guidance_embedding`); the Painter, training grids, evaluation and the lab's guidance dial all
guide through it.  The scale is one number, or one per image of the batch (the lab's dial: B scales,
one network call per step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import UnnoiseError


class GuidanceError(UnnoiseError, ValueError):
    """Classifier-free guidance was set up with bad arguments."""


Scale = float | Sequence[float] | torch.Tensor  # one guidance scale, or one per image (a list or a (B,) tensor)
RESCALE_SPACES = ("x0", "eps", "v")  # where guidance rescale matches std: x̂0, ε̂ or v̂ (CFGDenoiser)


def _check_number(name: str, value, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise GuidanceError(f"{name} must be finite, got {value!r}")
    if not low <= value <= high:
        raise GuidanceError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return float(value)


def _scales(scale: Scale) -> float | torch.Tensor:
    """One scale as a float, or one per image as a (B,) float32 tensor; every scale finite."""
    if not isinstance(scale, (Sequence, torch.Tensor)) or isinstance(scale, str):
        return _check_number("guidance scale", scale)  # one number (or a clear error for a non-number)
    if isinstance(scale, torch.Tensor) and scale.ndim == 0:
        return _check_number("guidance scale", float(scale))
    try:
        out = torch.tensor([float(w) for w in scale], dtype=torch.float32)
    except (TypeError, ValueError):
        raise GuidanceError(f"guidance scale must be a number or a list of numbers, got {scale!r}") from None
    if out.ndim != 1 or len(out) == 0 or not bool(torch.isfinite(out).all()):
        raise GuidanceError(f"guidance scales must be a non-empty list of finite numbers, got {scale!r}")
    return out


def _per_image(scale: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """The scale broadcastable against x (B, C, H, W): a float, or the (B,) scales viewed as (B, 1, 1, 1)."""
    if isinstance(scale, float):
        return scale
    if len(scale) != x.shape[0]:
        raise GuidanceError(f"a batch of {x.shape[0]} images needs {x.shape[0]} guidance scales, got {len(scale)}")
    return scale.to(x).view(x.shape[0], *(1,) * (x.ndim - 1))


def _batch_one(a: torch.Tensor, b: torch.Tensor, batch: int, key: str) -> torch.Tensor:
    """cat([a, b]) along dim 0 after broadcasting a batch of 1 to ``batch``.  Token sequences (B, L, D)
    and masks (B, L) bool of different lengths L are right-padded with zeros/False, the text encoder's
    own padding, so a prompt and a shorter negative prompt share one batch."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"condition {key} must be tensors, got {type(a).__name__} and {type(b).__name__}")
    parts = []
    for t in (a, b):
        if t.ndim == 0 or t.shape[0] not in (1, batch):
            raise GuidanceError(f"condition {key} has shape {tuple(t.shape)}; need a batch of 1 or {batch}")
        parts.append(t.expand(batch, *t.shape[1:]))
    a, b = parts
    if a.ndim != b.ndim or a.dtype != b.dtype:
        raise GuidanceError(f"cond and uncond {key} differ: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
    is_sequence = a.ndim >= 3 or (a.ndim == 2 and a.dtype == torch.bool)  # (B, L, D) tokens or (B, L) mask
    if is_sequence and a.shape[2:] == b.shape[2:] and a.shape[1] != b.shape[1]:
        length = max(a.shape[1], b.shape[1])
        pad = [0, 0] * (a.ndim - 2)
        a = F.pad(a, pad + [0, length - a.shape[1]])
        b = F.pad(b, pad + [0, length - b.shape[1]])
    if a.shape != b.shape:
        raise GuidanceError(f"cond and uncond {key} shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.cat([a, b])


def batch_conditions(cond, uncond, batch: int):
    """One batch of 2·batch conditions, conditional first: None, a tensor, or a dict of tensors."""
    if cond is None and uncond is None:
        return None
    if isinstance(cond, dict) and isinstance(uncond, dict):
        if cond.keys() != uncond.keys():
            raise GuidanceError(f"cond and uncond keys differ: {sorted(cond)} vs {sorted(uncond)}")
        return {k: _batch_one(cond[k], uncond[k], batch, repr(k)) for k in cond}
    return _batch_one(cond, uncond, batch, "")


class CFGDenoiser:
    """denoiser(x, σ, cond) → guided denoiser(x, σ): both passes in one batch of 2B.

    ``scale`` w: 1 returns the conditional prediction exactly (one pass of B); 0 with no rescale returns
    the unconditional one exactly (one pass).  ``rescale`` φ ∈ [0, 1] is guidance rescale (Lin et al.
    2023, §3.4, Algorithm 2): out ← φ·out·std(out_c)/std(out) + (1 − φ)·out, std per sample over all
    non-batch dims, where out is the prediction in ``rescale_space``:
      "x0"  (default) x̂0 itself: it keeps large w from inflating the predicted image's contrast;
      "eps" ε̂ = (x − x̂0)/σ, the form diffusers' pipelines apply to an ε-network's output;
      "v"   v̂ = α·ε̂ − σ·α·x̂0 (α = 1/sqrt(1 + σ²), the DDPM view), the paper's own space.
    Each is an affine map of x̂0 with coefficients of (x, σ) only, out = −k·(x̂0 − c), so rescaling out
    scales x̂0's deviation from the centre c: 0 (x0), x (eps), ᾱ·x = x/(1 + σ²) (v).  So the three
    agree exactly where the centres do: at x = 0, v = x0 at σ = ∞ (zero terminal SNR, where v = −x0:
    the paper's case) and v = eps as σ → 0; with x constant per sample they differ by a per-sample
    offset only.  A constant guided prediction (std 0) is left unscaled.

    If exactly one of cond/uncond is None they cannot share a batch (the model alone knows what None
    means), so the two passes run separately.
    """

    def __init__(self, denoiser, cond, uncond, scale: Scale, rescale: float = 0.0,
                 rescale_space: str = "x0"):
        if not callable(denoiser):
            raise TypeError("denoiser must be callable as denoiser(x, sigma, cond)")
        self.denoiser = denoiser
        self.cond = cond
        self.uncond = uncond
        self.scale = _scales(scale)
        self.rescale = _check_number("guidance rescale", rescale, 0.0, 1.0)
        if rescale_space not in RESCALE_SPACES:
            choices = ", ".join(RESCALE_SPACES)
            raise GuidanceError(f"guidance rescale space must be one of {choices}, got {rescale_space!r}")
        self.rescale_space = rescale_space

    def __repr__(self) -> str:
        return f"CFGDenoiser(scale={self.scale}, rescale={self.rescale}, rescale_space={self.rescale_space!r})"

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, float) and self.scale == 1.0:
            return self.denoiser(x, sigma, self.cond)
        if isinstance(self.scale, float) and self.scale == 0.0 and self.rescale == 0.0:
            return self.denoiser(x, sigma, self.uncond)
        batch = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device)
        sigma = sigma.expand(batch) if sigma.ndim == 0 else sigma
        if (self.cond is None) != (self.uncond is None):
            cond_x0 = self.denoiser(x, sigma, self.cond)
            uncond_x0 = self.denoiser(x, sigma, self.uncond)
        else:
            conds = batch_conditions(self.cond, self.uncond, batch)
            both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), conds)  # (2B, …)
            cond_x0, uncond_x0 = both[:batch], both[batch:]
        guided = uncond_x0 + _per_image(self.scale, x) * (cond_x0 - uncond_x0)
        if self.rescale > 0.0:
            guided = self._rescaled(x, sigma, cond_x0, guided)
        return guided

    def _rescaled(self, x: torch.Tensor, sigma: torch.Tensor, cond_x0: torch.Tensor, guided: torch.Tensor):
        """Guidance rescale in rescale_space, as a scaling of x̂0's deviation from that space's centre."""
        batch = x.shape[0]
        view = (batch,) + (1,) * (x.ndim - 1)
        center: torch.Tensor | float
        if self.rescale_space == "x0":
            center = 0.0
        elif self.rescale_space == "eps":
            center = x  # ε̂ = −(x̂0 − x)/σ
        else:
            center = x / (1.0 + sigma.to(x.dtype).view(view) ** 2)  # v̂ = −α(1 + σ²)/σ·(x̂0 − ᾱ·x)
        cond_dev, guided_dev = cond_x0 - center, guided - center
        std_cond = cond_dev.reshape(batch, -1).std(dim=1, correction=0).view(view)
        std_guided = guided_dev.reshape(batch, -1).std(dim=1, correction=0).view(view)
        ratio = torch.where(std_guided > 0, std_cond / std_guided, torch.ones_like(std_guided))
        return center + (self.rescale * (guided_dev * ratio) + (1.0 - self.rescale) * guided_dev)


class GuidanceInput:
    """Guidance for a guidance-distilled student: w is a network input (cond["guidance"], one per image),
    so one pass of B rows per step — no unconditional half, hence no negative prompt or rescale."""

    def __init__(self, denoiser, cond, scale: Scale):
        if not callable(denoiser):
            raise TypeError("denoiser must be callable as denoiser(x, sigma, cond)")
        self.denoiser, self.cond, self.scale = denoiser, cond, _scales(scale)

    def __repr__(self) -> str:
        return f"GuidanceInput(scale={self.scale})"

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        w = _per_image(self.scale, x)
        w = torch.full((batch,), w, device=x.device) if isinstance(w, float) else w.reshape(batch)
        cond = {k: v.expand(batch, *v.shape[1:]) for k, v in (self.cond or {}).items()}  # 1 row or B rows
        return self.denoiser(x, sigma, {**cond, "guidance": w})


class Clipped:
    """x̂0 projected onto the data's box [−clip, clip].  Images live in [−1, 1], so the true E[x0 | x] does
    too, and the projection can only shrink x̂0's error.  It matters for ε-prediction at high σ, where
    x̂0 = x − σ·ε̂ multiplies the network's error by σ (≈157 at the top of the linear schedule); DDPM clips
    the same way (Ho et al. 2020, clip_denoised; diffusers' clip_sample)."""

    def __init__(self, denoiser, clip: float):
        self.denoiser, self.clip = denoiser, _check_number("clip", clip, 0.0)
        if self.clip == 0.0:
            raise GuidanceError("clip must be positive (None: no clipping), got 0")

    def __repr__(self) -> str:
        return f"Clipped({self.denoiser!r}, clip={self.clip})"

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, sigma).clamp(-self.clip, self.clip)


def guided(denoiser, cond, uncond, scale: Scale, *, takes_guidance: bool, rescale: float = 0.0,
           rescale_space: str = "x0", clip: float | None = None):
    """The guided denoiser (x, σ) → x̂0: w as an input for a model that declares it takes one
    (`takes_guidance`, from UNetConfig.guidance_embedding), classifier-free guidance otherwise; with `clip`,
    the guided x̂0 is clipped to [−clip, clip] (`Clipped`: the Painter and distillation's teacher use 1)."""
    g: GuidanceInput | CFGDenoiser
    if takes_guidance:
        if rescale:
            raise GuidanceError("guidance rescale needs classifier-free guidance; this model takes w as an input")
        g = GuidanceInput(denoiser, cond, scale)
    else:
        g = CFGDenoiser(denoiser, cond, uncond, scale, rescale=rescale, rescale_space=rescale_space)
    return g if clip is None else Clipped(g, clip)
