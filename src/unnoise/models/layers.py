"""Building blocks of the denoiser: time embedding, residual blocks, self- and cross-attention.

Shapes use B batch, C channels, H×W the feature map, N = H·W pixel tokens, L text tokens, E the
embedding width.  Everything works in any memory format; under `channels_last` the (B, C, H, W) ↔
(B, N, C) reshapes around attention are free views, which is one reason the trainer uses it on the CPU.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

M = TypeVar("M", bound=nn.Module)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Vaswani et al. 2017, §3.5; DDPM).

    t: (B,) float → (B, dim) float32, [cos | sin] halves; frequencies 1 … 1/max_period, geometric.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:  # odd widths get a zero column so the output is exactly dim wide
        emb = F.pad(emb, (0, 1))
    return emb


def zero_(module: M) -> M:
    """Zero a layer's parameters so its residual branch starts as the identity (ADM, Dhariwal & Nichol 2021)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3 → GroupNorm·(1+scale)+shift → SiLU → dropout → conv3×3, plus a skip.

    The scale/shift come from the time+text embedding: FiLM (Perez et al. 2018), as ADM's
    "use_scale_shift_norm" (Dhariwal & Nichol 2021, §3).  `emb` is passed in already SiLU-activated
    so the activation is computed once per forward, not once per block.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, affine=False)  # FiLM supplies the affine part
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (B, in_ch, H, W); emb: (B, E), SiLU already applied
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)  # (B, out_ch, 1, 1) each
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))
        h = self.conv2(self.dropout(h))
        return self.skip(x) + h


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads·D) → (B, heads, N, D)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the pixel tokens (Vaswani et al. 2017), residual."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_(nn.Linear(channels, channels))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (B, N, C)
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(_heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads))
        return tokens + self.out(h.transpose(1, 2).flatten(2))


class CrossAttention(nn.Module):
    """Pre-norm cross-attention from pixel tokens to text token states (Rombach et al. 2022, §3.3).

    Padded text positions (mask False) are excluded from the softmax, so their keys and values cannot
    contribute.  A row with no real token at all attends to nothing and adds exactly zero.
    """

    def __init__(self, channels: int, cond_dim: int, head_dim: int):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(cond_dim, 2 * channels)
        self.out = zero_(nn.Linear(channels, channels))

    def forward(self, tokens: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # tokens: (B, N, C); context: (B, L, cond_dim); mask: (B, L) bool, True = real token
        k, v = self.kv(context).chunk(2, dim=-1)
        q = self.q(self.norm(tokens))
        any_real = mask.any(dim=1)  # (B,)
        # An all-False row would softmax over nothing (NaN); let it attend everywhere, then zero it.
        attn_mask = (mask | ~any_real[:, None])[:, None, None, :]  # (B, 1, 1, L)
        h = F.scaled_dot_product_attention(
            _heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads), attn_mask=attn_mask
        )
        h = self.out(h.transpose(1, 2).flatten(2)) * any_real[:, None, None].to(tokens.dtype)
        return tokens + h


class AttentionBlock(nn.Module):
    """Self-attention and/or cross-attention at one resolution, sharing one reshape to tokens."""

    def __init__(self, channels: int, head_dim: int, cond_dim: int, self_attn: bool, cross_attn: bool):
        super().__init__()
        self.self_attn = SelfAttention(channels, head_dim) if self_attn else None
        self.cross_attn = CrossAttention(channels, cond_dim, head_dim) if cross_attn else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        cross = self.cross_attn if context is not None else None
        if self.self_attn is None and cross is None:
            return x  # cond=None: cross-attention contributes nothing
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C); a view under channels_last
        if self.self_attn is not None:
            tokens = self.self_attn(tokens)
        if cross is not None:
            tokens = cross(tokens, context, mask)
        out = tokens.transpose(1, 2).reshape(b, c, h, w)  # channels_last strides
        return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


class Downsample(nn.Module):
    """Halve H and W with a stride-2 conv3×3 (DDPM's learned downsampling)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then conv3×3 (avoids transposed-conv checkerboards)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
