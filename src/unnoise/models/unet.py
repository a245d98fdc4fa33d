"""The denoiser: a text-conditioned UNet that predicts ε (or v, or x0) from a noisy image x_t and t.

Layout follows DDPM/ADM (Ho et al. 2020; Dhariwal & Nichol 2021): conv in, levels of residual blocks
going down with stride-2 convs, a middle block, levels going up that each consume the skip
activations by concatenation, GroupNorm → SiLU → conv out.  The time embedding (sinusoidal, so
fractional t works) plus a projection of the pooled text vector drives every residual block through
scale-shift; the text token states are read by cross-attention blocks (Rombach et al. 2022).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write, tmp_name
from ..diffusion import PREDICTION_TYPES
from ..errors import UnnoiseError
from .layers import AttentionBlock, Downsample, ResBlock, Upsample, timestep_embedding, zero_

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COND_KEYS = ("tokens", "mask", "pooled", "guidance")
# w is embedded like a timestep, as w·GUIDANCE_EMBED_SCALE: guidance scales of 0 … 15 then span the
# same range of the sinusoidal features as t does (LCM embeds w·1000 over a 256-wide table).
GUIDANCE_EMBED_SCALE = 100.0


class UNetConfigError(UnnoiseError, ValueError):
    """A UNet config has an unknown key or a bad value."""


class WeightsFileError(UnnoiseError, ValueError):
    """A model.safetensors that cannot be read (truncated, empty, not safetensors at all)."""


class UNetInputError(UnnoiseError, ValueError):
    """UNet.forward was given inputs of the wrong shape or kind."""


class UNetFileError(UnnoiseError, FileNotFoundError):
    """A directory that should hold a UNet lacks its config.json or model.safetensors."""


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of a UNet; every field is validated on construction (also by `dataclasses.replace`)."""

    in_channels: int = 3  # image channels (1 for digits, 3 for emoji)
    out_channels: int = 3  # channels of the prediction (= in_channels for ε, v and x0)
    image_size: int = 32  # training resolution; any H, W divisible by patch_size·2**(levels−1) also runs
    patch_size: int = 2  # p > 1: fold p×p pixels into channels first (space-to-depth), unfold at the end
    base_channels: int = 64  # width of level 0; the sinusoidal time features are this wide too
    channel_mults: tuple[int, ...] = (1, 2, 2)  # level i: width base·mults[i], resolution image_size/(p·2**i)
    num_res_blocks: int = 1  # residual blocks per level going down (one more going up, as in DDPM)
    attention_levels: tuple[int, ...] = (1, 2)  # levels with self-attention; keep them small (cost ∝ (H·W)²)
    cross_attention_levels: tuple[int, ...] = (0, 1, 2)  # levels whose blocks attend to the text tokens
    mid_attention: bool = True  # self-attention in the middle block (plus cross-attention if the last level has it)
    attention_head_dim: int = 32  # channels per head; heads = width / head_dim
    cond_dim: int = 384  # text encoder width: MiniLM-L6 token states and pooled vector
    emb_mult: int = 4  # time/text embedding width = emb_mult · base_channels (DDPM uses 4)
    norm_groups: int = 32  # GroupNorm groups (Wu & He 2018); every width must be a multiple
    dropout: float = 0.0  # dropout in residual blocks (torch's own RNG; off by default)
    prediction_type: str = "epsilon"  # what the network outputs: "epsilon", "v_prediction" or "sample"
    guidance_embedding: bool = False  # guidance-distilled students: the CFG scale w is an input, cond["guidance"] (B,)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("channel_mults", "attention_levels", "cross_attention_levels"):
                if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
                    raise UNetConfigError(f"UNetConfig.{f.name} must be a sequence of ints, got {value!r}")
                object.__setattr__(self, f.name, tuple(int(v) for v in value))  # JSON lists → tuples
            elif f.name in ("mid_attention", "guidance_embedding"):
                if not isinstance(value, bool):
                    raise UNetConfigError(f"UNetConfig.{f.name} must be a bool, got {value!r}")
            elif f.name == "dropout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                    raise UNetConfigError(f"UNetConfig.dropout must be a number in [0, 1), got {value!r}")
            elif f.name == "prediction_type":
                if value not in PREDICTION_TYPES:
                    raise UNetConfigError(
                        f"UNetConfig.prediction_type must be one of {', '.join(PREDICTION_TYPES)}; got {value!r}"
                    )
            elif not _is_int(value) or value < 1:
                raise UNetConfigError(f"UNetConfig.{f.name} must be a positive int, got {value!r}")
        levels = len(self.channel_mults)
        if levels == 0 or min(self.channel_mults) < 1:
            raise UNetConfigError(f"UNetConfig.channel_mults must be non-empty positive ints, got {self.channel_mults}")
        if self.image_size % self.size_multiple:
            raise UNetConfigError(
                f"UNetConfig.image_size={self.image_size} must be divisible by patch_size·2**(levels−1) = "
                f"{self.size_multiple}"
            )
        for name in ("attention_levels", "cross_attention_levels"):
            value = getattr(self, name)
            if any(not 0 <= i < levels for i in value) or len(set(value)) != len(value):
                raise UNetConfigError(f"UNetConfig.{name}={value} must be distinct level indices in 0…{levels - 1}")
        for i, width in enumerate(self.widths):
            if width % self.norm_groups:
                raise UNetConfigError(f"level {i} width {width} is not a multiple of norm_groups={self.norm_groups}")
            attends = i in self.attention_levels or i in self.cross_attention_levels
            attends = attends or (i == levels - 1 and self.mid_attention)
            if attends and width % self.attention_head_dim:
                raise UNetConfigError(
                    f"level {i} width {width} is not a multiple of attention_head_dim={self.attention_head_dim}"
                )

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: patch_size · 2**(levels−1)."""
        return self.patch_size * 2 ** (len(self.channel_mults) - 1)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel width of each level."""
        return tuple(self.base_channels * m for m in self.channel_mults)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists).  `guidance_embedding` appears only when on, so the
        config.json of every ordinary network is exactly what it was before the option existed."""
        d = {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}
        if not self.guidance_embedding:
            del d["guidance_embedding"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Inverse of `to_dict`; unknown keys are an error (they are usually typos)."""
        if not isinstance(data, Mapping):
            raise UNetConfigError(f"UNetConfig.from_dict needs a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UNetConfigError(f"unknown UNetConfig key(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> UNetConfig:
        """A copy with some fields changed (validated)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise UNetConfigError(f"unknown UNetConfig key(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    # Presets.  Parameter counts, FLOPs and measured speed: docs/model.md.
    @classmethod
    def tiny(cls) -> UNetConfig:
        """For tests: ~0.1M parameters (mostly the 384-wide text projections), a step in milliseconds."""
        return cls(
            patch_size=1, base_channels=8, channel_mults=(1, 2), attention_levels=(1,),
            cross_attention_levels=(1,), attention_head_dim=8, norm_groups=4, emb_mult=2,
        )

    @classmethod
    def small(cls) -> UNetConfig:
        """The bundled 32×32 models (digits, emoji): the default at half the width, about a quarter of its compute."""
        return cls(base_channels=32, norm_groups=16)

    @classmethod
    def default(cls) -> UNetConfig:
        """The field defaults: `unnoise train --model-size default` (its default size) and the throughput benchmark."""
        return cls()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Stage(nn.Module):
    """One residual block, optionally followed by an attention block."""

    def __init__(self, in_ch: int, out_ch: int, cfg: UNetConfig, self_attn: bool, cross_attn: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, cfg.emb_mult * cfg.base_channels, cfg.norm_groups, cfg.dropout)
        self.attn = (
            AttentionBlock(out_ch, cfg.attention_head_dim, cfg.cond_dim, self_attn, cross_attn)
            if self_attn or cross_attn
            else None
        )

    def forward(self, x, emb, context, mask):
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context, mask)


class UNet(nn.Module):
    """ε/v/x0-prediction UNet: forward(x_t (B, C, H, W), t (B,) float in [0, T), cond) → (B, out, H, W)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise UNetConfigError(f"UNet needs a UNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        widths, levels = cfg.widths, len(cfg.channel_mults)
        emb_dim = cfg.emb_mult * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.pooled_proj = nn.Linear(cfg.cond_dim, emb_dim)
        if cfg.guidance_embedding:
            # Guidance distillation (Meng et al. 2023, "On Distillation of Guided Diffusion Models"; LCM):
            # an embedding of w added to the time embedding.  Its last layer starts at zero, so a student
            # initialised from its teacher's weights starts as exactly the teacher's conditional network.
            self.guidance_mlp = nn.Sequential(
                nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), zero_(nn.Linear(emb_dim, emb_dim))
            )
        p = cfg.patch_size
        self.conv_in = nn.Conv2d(cfg.in_channels * p * p, widths[0], 3, padding=1)

        def stage(i: int, in_ch: int) -> _Stage:
            return _Stage(in_ch, widths[i], cfg, i in cfg.attention_levels, i in cfg.cross_attention_levels)

        self.down = nn.ModuleList()
        skip_widths, ch = [widths[0]], widths[0]
        for i in range(levels):
            for _ in range(cfg.num_res_blocks):
                self.down.append(stage(i, ch))
                ch = widths[i]
                skip_widths.append(ch)
            if i < levels - 1:
                self.down.append(Downsample(ch))
                skip_widths.append(ch)

        last_cross = levels - 1 in cfg.cross_attention_levels
        self.mid = nn.ModuleList([
            _Stage(ch, ch, cfg, cfg.mid_attention, cfg.mid_attention and last_cross),
            _Stage(ch, ch, cfg, False, False),
        ])

        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(stage(i, ch + skip_widths.pop()))
                ch = widths[i]
            if i > 0:
                self.up.append(Upsample(ch))

        self.norm_out = nn.GroupNorm(cfg.norm_groups, ch)
        # With p > 1 the last conv emits p×p pixels per position; pixel_shuffle lays them out.
        self.conv_out = zero_(nn.Conv2d(ch, cfg.out_channels * p * p, 3, padding=1))

    @property
    def prediction_type(self) -> str:
        """What this network predicts: "epsilon", "v_prediction" or "sample"."""
        return self.config.prediction_type

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, cond: Mapping[str, torch.Tensor] | None = None):
        """x: (B, C, H, W) DDPM-scaled x_t; t: (B,) or scalar timestep, fractional allowed; cond: text or None.

        cond=None is the unconditional network: the pooled vector is taken as zeros and cross-attention
        adds nothing.  (Training drops prompts to the *empty-prompt encoding* instead, which is what
        classifier-free guidance should pair with.)  With `guidance_embedding`, cond["guidance"] (B,) or a
        scalar is the guidance scale w the output should follow (default 1: the plain conditional).
        """
        b = self._check_x(x)
        dtype = self.conv_in.weight.dtype  # under autocast the layers cast further themselves
        t = self._timesteps(t, b, x.device)
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels).to(dtype))  # (B, E)
        context, mask, pooled = self._condition(cond, b, x.device, dtype)
        emb = emb + (self.pooled_proj(pooled) if pooled is not None else self.pooled_proj.bias)
        if self.config.guidance_embedding:
            w = self._guidance(cond, b, x.device)  # (B,)
            w_emb = timestep_embedding(w * GUIDANCE_EMBED_SCALE, self.config.base_channels).to(dtype)
            emb = emb + self.guidance_mlp(w_emb)
        emb = F.silu(emb)  # every ResBlock's projection starts with SiLU; do it once

        if self.config.patch_size > 1:
            x = F.pixel_unshuffle(x, self.config.patch_size)  # (B, C·p², H/p, W/p)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h) if isinstance(block, Downsample) else block(h, emb, context, mask)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb, context, mask)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context, mask)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.config.patch_size) if self.config.patch_size > 1 else out

    def _check_x(self, x: torch.Tensor) -> int:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.config.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UNetInputError(f"x must be (B, {self.config.in_channels}, H, W), got {shape}")
        factor = self.config.size_multiple
        if x.shape[2] % factor or x.shape[3] % factor:
            raise UNetInputError(f"x's H and W must be multiples of {factor}, got {tuple(x.shape[2:])}")
        return x.shape[0]

    @staticmethod
    def _timesteps(t: torch.Tensor | float, b: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        if t.is_complex() or t.dtype == torch.bool:
            raise UNetInputError(f"t must be real timesteps, got dtype {t.dtype}")
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise UNetInputError(f"t must be a scalar or shape ({b},), got {tuple(t.shape)}")
        return t.float()

    def _guidance(self, cond, b: int, device: torch.device) -> torch.Tensor:
        """cond["guidance"] as (B,) float32; 1.0 (the conditional prediction) when absent."""
        w = cond.get("guidance") if isinstance(cond, Mapping) else None
        if w is None:
            return torch.ones(b, device=device)
        w = torch.as_tensor(w, device=device)
        if w.ndim == 0:
            w = w.expand(b)
        if w.shape != (b,) or w.is_complex() or w.dtype == torch.bool:
            raise UNetInputError(
                f"cond['guidance'] must be a real scalar or shape ({b},), got {w.dtype} {tuple(w.shape)}")
        return w.float()

    def _condition(self, cond, b: int, device: torch.device, dtype: torch.dtype):
        """(context (B, L, D) | None, mask (B, L) bool | None, pooled (B, D) | None) from the cond dict."""
        if cond is None:
            return None, None, None
        if not isinstance(cond, Mapping):
            raise UNetInputError(f"cond must be None or a dict with {', '.join(COND_KEYS)}; got {type(cond).__name__}")
        unknown = sorted(set(cond) - set(COND_KEYS))
        if unknown:
            raise UNetInputError(f"unknown cond key(s): {', '.join(unknown)}; expected {', '.join(COND_KEYS)}")
        if "guidance" in cond and not self.config.guidance_embedding:
            raise UNetInputError("cond['guidance'] given, but this network has no guidance embedding")
        d = self.config.cond_dim
        tokens, mask, pooled = cond.get("tokens"), cond.get("mask"), cond.get("pooled")
        if pooled is not None:
            if pooled.shape != (b, d):
                raise UNetInputError(f"cond['pooled'] must be ({b}, {d}), got {tuple(pooled.shape)}")
            pooled = pooled.to(device=device, dtype=dtype)
        if tokens is None:
            if mask is not None:
                raise UNetInputError("cond['mask'] given without cond['tokens']")
            return None, None, pooled
        if tokens.ndim != 3 or tokens.shape[0] != b or tokens.shape[2] != d:
            raise UNetInputError(f"cond['tokens'] must be ({b}, L, {d}), got {tuple(tokens.shape)}")
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
        elif mask.dtype != torch.bool or mask.shape != tokens.shape[:2]:
            raise UNetInputError(
                f"cond['mask'] must be bool {tuple(tokens.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )
        return tokens.to(device=device, dtype=dtype), mask.to(device), pooled

    # ---- weights on disk: config.json + model.safetensors (no pickles) ----

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write config.json and model.safetensors (cast to dtype, e.g. torch.float16, if given).

        A new directory appears all at once (built in a temporary sibling, then renamed); into an
        existing directory each file is written to a temporary name and os.replace'd, weights first.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        state = {k: v.detach().to("cpu", dtype=dtype or v.dtype).contiguous() for k, v in self.state_dict().items()}
        config_text = json.dumps(self.config.to_dict(), indent=2) + "\n"
        if directory.is_dir():
            atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
            atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(config_text))
            return directory
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_name(directory)  # .NAME.tmp-PID-N: swept by atomic.clean_debris if this process dies
        tmp.mkdir()
        try:
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            (tmp / CONFIG_NAME).write_text(config_text)
            os.chmod(tmp, 0o755)  # safetensors writes 0600: a model directory is shared and shipped
            for f in (WEIGHTS_NAME, CONFIG_NAME):
                os.chmod(tmp / f, 0o644)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> UNet:
        """Load a directory written by `save_pretrained`; weights are cast to dtype (default float32)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise UNetFileError(f"{directory / name} not found (not a UNet directory?)")
        try:
            config = UNetConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
        except json.JSONDecodeError as e:
            raise UNetConfigError(f"{directory / CONFIG_NAME} is not valid JSON: {e}") from e
        model = cls(config)
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except SafetensorError as e:  # truncated, empty, random bytes, a header length past the file …
            raise WeightsFileError(f"{directory / WEIGHTS_NAME} is not a readable safetensors file ({e})") from e
        missing = sorted(set(model.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(model.state_dict()))
        if missing or unexpected:
            raise UNetConfigError(
                f"{directory / WEIGHTS_NAME} does not match its config: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        try:
            model.load_state_dict(state)  # copies (and casts) into the float32 parameters
        except RuntimeError as e:
            raise UNetConfigError(f"{directory / WEIGHTS_NAME} does not match its config: {e}") from e
        return model.to(dtype=dtype or torch.float32)

