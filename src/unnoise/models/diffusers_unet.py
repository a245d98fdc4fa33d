"""diffusers' `UNet2DModel`, re-implemented so that unnoise paints a diffusers pipeline folder without
diffusers installed.

The module tree and parameter names are diffusers' own (`down_blocks.0.resnets.1.conv1.weight`,
`mid_block.attentions.0.to_q.weight`, …), so the folder's `unet/diffusion_pytorch_model.safetensors`
loads by name with `strict=True`; the forward pass follows diffusers' (unet_2d.py, resnet.py,
unet_2d_blocks.py, AttnProcessor2_0) operation by operation, and tests/test_diffusers_models.py checks
that it agrees with diffusers' UNet2DModel exactly on the same inputs.

Supported: positional time embedding; `DownBlock2D`/`AttnDownBlock2D` down, `UpBlock2D`/`AttnUpBlock2D`
up, `UNetMidBlock2D` (or none) in the middle, conv down/upsampling; resnet time conditioning `default` or
`scale_shift`; unconditional or class-conditional through `num_class_embeds`.  Anything else is refused
by `check_config` in one line.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnnoiseError


class DiffusersUNetError(UnnoiseError, ValueError):
    """A UNet2DModel config this re-implementation does not support (named in the message)."""


DOWN = ("DownBlock2D", "AttnDownBlock2D")
UP = ("UpBlock2D", "AttnUpBlock2D")
DEFAULTS = {  # UNet2DModel.__init__'s defaults, for keys a config.json leaves out
    "in_channels": 3, "out_channels": 3, "center_input_sample": False, "time_embedding_type": "positional",
    "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None,
}


def check_config(raw: dict) -> dict:
    """The UNet2DModel config with defaults filled in; ValueError naming the first unsupported key."""
    cfg = {**DEFAULTS, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    wanted = {"time_embedding_type": ("positional",), "act_fn": ("silu", "swish"), "downsample_type": ("conv",),
              "upsample_type": ("conv",), "resnet_time_scale_shift": ("default", "scale_shift"),
              "class_embed_type": (None,), "mid_block_type": ("UNetMidBlock2D", None)}
    for key, allowed in wanted.items():
        if cfg[key] not in allowed:
            known = ", ".join(map(repr, allowed))
            raise DiffusersUNetError(f"{key}={cfg[key]!r} is not supported (unnoise reads {known})")
    for key, allowed in (("down_block_types", DOWN), ("up_block_types", UP)):
        bad = [b for b in cfg[key] if b not in allowed]
        if bad:
            raise DiffusersUNetError(f"{key} {bad[0]!r} is not supported (unnoise reads {', '.join(allowed)})")
    if not len(cfg["down_block_types"]) == len(cfg["up_block_types"]) == len(cfg["block_out_channels"]):
        raise DiffusersUNetError("down_block_types, up_block_types and block_out_channels must have the same length")
    return cfg


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool, shift: float) -> torch.Tensor:
    """DDPM's sinusoidal embedding of (fractional) timesteps, as diffusers' get_timestep_embedding."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - shift)
    emb = t[:, None].float() * torch.exp(exponent)[None, :]  # (B, half)
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return F.pad(emb, (0, 1, 0, 0)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(channels, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """GroupNorm–SiLU–conv twice, the time embedding added (or scale/shift) between; 1×1 shortcut when
    the width changes; the sum divided by output_scale_factor."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float, shift: str, scale: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout * (2 if shift == "scale_shift" else 1))
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.shift, self.scale = shift, scale

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        temb = self.time_emb_proj(F.silu(temb))[:, :, None, None]
        if self.shift == "scale_shift":
            scale, shift = torch.chunk(temb, 2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + temb)
        h = self.conv2(F.silu(h))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.scale


class Attention(nn.Module):
    """Spatial self-attention over the H·W positions with a residual (diffusers' deprecated attention block
    run by AttnProcessor2_0)."""

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float, scale: float = 1.0):
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = x.view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        seq = self.group_norm(seq.transpose(1, 2)).transpose(1, 2)

        def heads(y: torch.Tensor) -> torch.Tensor:  # (B, heads, HW, C/heads)
            return y.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = heads(self.to_q(seq)), heads(self.to_k(seq)), heads(self.to_v(seq))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = self.to_out[0](out.transpose(1, 2).reshape(b, -1, c))
        return (out.transpose(-1, -2).reshape(b, c, h, w) + x) / self.scale


class Resample(nn.Module):
    """Stride-2 3×3 conv down, or nearest ×2 then 3×3 conv up (diffusers' Downsample2D/Upsample2D, use_conv)."""

    def __init__(self, channels: int, up: bool, padding: int = 1):
        super().__init__()
        self.up, self.padding = up, padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1 if up else padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        elif self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(x)


class Block(nn.Module):
    """One DownBlock2D/AttnDownBlock2D (skips=False) or UpBlock2D/AttnUpBlock2D (skips=True): resnets,
    each followed by attention in the Attn kinds, then the resampler."""

    def __init__(self, kind: str, ins: list[int], cout: int, temb: int, cfg: dict, resample: bool):
        super().__init__()
        groups, eps, shift = cfg["norm_num_groups"], cfg["norm_eps"], cfg["resnet_time_scale_shift"]
        self.resnets = nn.ModuleList([ResnetBlock2D(c, cout, temb, groups, eps, shift) for c in ins])
        head_dim = cfg["attention_head_dim"] or cout
        self.attentions = (nn.ModuleList([Attention(cout, head_dim, groups, eps) for _ in ins])
                           if kind.startswith("Attn") else None)
        up = kind.endswith("UpBlock2D")
        sampler = [Resample(cout, up, cfg["downsample_padding"])] if resample else None
        if up:
            self.upsamplers = nn.ModuleList(sampler) if sampler else None
        else:
            self.downsamplers = nn.ModuleList(sampler) if sampler else None

    def run(self, x: torch.Tensor, temb: torch.Tensor, skips: list[torch.Tensor] | None = None):
        """Down: (x, the outputs it leaves for the skips).  Up: x, consuming len(resnets) skips."""
        outputs = []
        for i, resnet in enumerate(self.resnets):
            if skips is not None:
                x = torch.cat([x, skips.pop()], dim=1)
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            outputs.append(x)
        resamplers = getattr(self, "upsamplers" if skips is not None else "downsamplers")
        if resamplers is not None:
            x = resamplers[0](x)
            outputs.append(x)
        return x, outputs


class MidBlock(nn.Module):
    def __init__(self, channels: int, temb: int, cfg: dict):
        super().__init__()
        groups, eps, shift = cfg["norm_num_groups"], cfg["norm_eps"], cfg["resnet_time_scale_shift"]
        scale = cfg["mid_block_scale_factor"]
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, groups, eps, shift, scale)
                                      for _ in range(2)])
        attn_groups = cfg["attn_norm_num_groups"] or (groups if shift == "default" else None)
        if cfg["add_attention"] and attn_groups is None:
            raise DiffusersUNetError(
                "mid-block attention without groups (scale_shift and no attn_norm_num_groups) is not supported")
        head_dim = cfg["attention_head_dim"] or channels
        self.attentions = nn.ModuleList([Attention(channels, head_dim, int(attn_groups or 0), eps, scale)]
                                        if cfg["add_attention"] else [])

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class DiffusersUNet2D(nn.Module):
    """diffusers' UNet2DModel: `model(x_t, t, cond)` → the network's output (ε, v or x0), where cond is
    None or {"class_labels": int64 (B,)} for a class-conditional model."""

    def __init__(self, config: dict):
        super().__init__()
        self.config_dict = cfg = check_config(config)
        self.config = SimpleNamespace(**cfg, guidance_embedding=False)  # read like unnoise's UNet.config
        widths = list(cfg["block_out_channels"])
        temb = cfg["time_embedding_dim"] or widths[0] * 4
        self.conv_in = nn.Conv2d(cfg["in_channels"], widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        n = cfg["num_class_embeds"]
        self.class_embedding = nn.Embedding(n, temb) if n is not None else None
        layers, last = cfg["layers_per_block"], len(widths) - 1
        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg["down_block_types"]):
            ins = [widths[max(i - 1, 0)]] + [widths[i]] * (layers - 1)
            self.down_blocks.append(Block(kind, ins, widths[i], temb, cfg, resample=i < last))
        self.mid_block = MidBlock(widths[-1], temb, cfg) if cfg["mid_block_type"] else None
        rev = widths[::-1]
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg["up_block_types"]):
            prev, skip_last = rev[max(i - 1, 0)], rev[min(i + 1, last)]
            ins = [(prev if j == 0 else rev[i]) + (skip_last if j == layers else rev[i]) for j in range(layers + 1)]
            self.up_blocks.append(Block(kind, ins, rev[i], temb, cfg, resample=i < last))
        self.conv_norm_out = nn.GroupNorm(cfg["norm_num_groups"], widths[0], eps=cfg["norm_eps"])
        self.conv_out = nn.Conv2d(widths[0], cfg["out_channels"], 3, padding=1)

    @property
    def num_classes(self) -> int | None:
        return self.config_dict["num_class_embeds"]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        cfg = self.config_dict
        if cfg["center_input_sample"]:
            x = 2 * x - 1.0
        t = torch.as_tensor(t, device=x.device)
        t = (t[None] if t.ndim == 0 else t) * torch.ones(x.shape[0], dtype=t.dtype, device=x.device)
        t_emb = timestep_embedding(t, cfg["block_out_channels"][0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
        emb = self.time_embedding(t_emb.to(self.conv_in.weight.dtype))  # (B, temb)
        labels = (cond or {}).get("class_labels") if isinstance(cond, dict) else None
        if self.class_embedding is not None:
            if labels is None:
                raise DiffusersUNetError("this class-conditional UNet needs class_labels")
            emb = emb + self.class_embedding(labels.to(x.device)).to(emb.dtype)

        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, outputs = block.run(h, emb)  # type: ignore[operator]  # a block of ours, not a Tensor
            skips += outputs
        if self.mid_block is not None:
            h = self.mid_block(h, emb)
        for block in self.up_blocks:
            h, _ = block.run(h, emb, skips)  # type: ignore[operator]
        return self.conv_out(F.silu(self.conv_norm_out(h)))
