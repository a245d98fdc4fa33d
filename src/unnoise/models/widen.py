"""Twice as wide, the same function: a UNet widened by Net2Net duplication (Chen et al. 2016, "Net2Net").

Every activation of the wide network is its narrow one with each channel twice, side by side (channel c
becomes 2c and 2c+1).  A layer that reads such an activation splits each narrow weight between the two
copies at random fractions a and 1 − a, so its output is unchanged while the copies' gradients differ (plain
halving would keep them twins forever); a layer that writes one repeats each narrow row.  The norms see the
same statistics because the copies sit side by side: GroupNorm keeps its group count (each group is a narrow
group twice over) and LayerNorm's mean and variance over [x, x] are those over x.  An attention head of 2·D
channels is a narrow head twice over, so q·k doubles while √(2D) grows by √2: q is scaled by 1/√2 to keep
every attention weight.  The sinusoidal time (and guidance) features of the wider table contain the narrow
ones (frequency i of D/2 is frequency 2i of D), so the first embedding layer reads those and starts at zero
on the new ones.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import nn

from .layers import AttentionBlock, CrossAttention, Downsample, ResBlock, SelfAttention, Upsample
from .unet import UNet, UNetConfig, UNetConfigError

Weighted = nn.Linear | nn.Conv2d  # the layers `_Copier.linear` copies
Norm = nn.GroupNorm | nn.LayerNorm
C = TypeVar("C", bound=nn.Module)


def widened_config(config: UNetConfig) -> UNetConfig:
    """The config of `widen(net)`: base channels and attention head width doubled, everything else kept."""
    if config.base_channels % 2:
        raise UNetConfigError(f"widening needs an even base_channels, got {config.base_channels}")
    return config.replace(base_channels=2 * config.base_channels, attention_head_dim=2 * config.attention_head_dim)


def _dup(n: int) -> torch.Tensor:
    """Wide index → narrow index for a duplicated axis of narrow size n: [0, 0, 1, 1, …]."""
    return torch.arange(n).repeat_interleave(2)


def _split(shape, generator) -> torch.Tensor:
    """Fractions a of a narrow weight for the first copy of each input channel (the second gets 1 − a)."""
    return torch.rand(shape, generator=generator, dtype=torch.float64)


class _Copier:
    """Copies each kind of layer from the narrow net into the wide one, drawing split fractions from one generator."""

    def __init__(self, generator: torch.Generator):
        self.g = generator

    def linear(self, wide: Weighted, narrow: Weighted, out_map: torch.Tensor, in_map: torch.Tensor | None,
               out_scale: float | torch.Tensor = 1.0) -> None:
        """Copy a Linear/Conv: rows by out_map (wide row → narrow row), columns by in_map (None: duplicated input,
        split at random fractions; a LongTensor: wide column → narrow column, −1 for a column that starts at 0)."""
        w = narrow.weight.detach().double()[out_map]  # (out', in, …)
        if in_map is None:
            a = _split(w.shape, self.g)
            w = torch.stack([w * a, w * (1 - a)], dim=2).flatten(1, 2)  # columns 2c, 2c+1 from c
        else:
            cols = torch.zeros((w.shape[0], len(in_map)) + w.shape[2:], dtype=w.dtype)
            real = in_map >= 0
            cols[:, real] = w[:, in_map[real]]
            w = cols
        scale = torch.as_tensor(out_scale, dtype=torch.float64)
        with torch.no_grad():
            wide.weight.copy_(w * scale.reshape((-1,) + (1,) * (w.ndim - 1)) if scale.ndim else w * scale)
            if narrow.bias is not None and wide.bias is not None:
                wide.bias.copy_(narrow.bias.detach().double()[out_map] * scale)

    @staticmethod
    def norm(wide: Norm, narrow: Norm) -> None:
        if narrow.weight is None:
            return
        with torch.no_grad():
            wide.weight.copy_(narrow.weight[_dup(narrow.weight.shape[0])])
            wide.bias.copy_(narrow.bias[_dup(narrow.bias.shape[0])])

    def conv_dup(self, wide: Weighted, narrow: Weighted) -> None:
        self.linear(wide, narrow, _dup(narrow.weight.shape[0]), None)

    def res(self, wide: ResBlock, narrow: ResBlock) -> None:
        self.norm(wide.norm1, narrow.norm1)
        self.conv_dup(wide.conv1, narrow.conv1)
        out = narrow.conv1.weight.shape[0]  # emb_proj rows are [scale | shift], each duplicated
        rows = torch.cat([_dup(out), out + _dup(out)])
        self.linear(wide.emb_proj, narrow.emb_proj, rows, None)
        self.conv_dup(wide.conv2, narrow.conv2)
        if isinstance(narrow.skip, nn.Conv2d) and isinstance(wide.skip, nn.Conv2d):
            self.conv_dup(wide.skip, narrow.skip)

    def attention(self, wide: AttentionBlock, narrow: AttentionBlock) -> None:
        q_scale = 1 / math.sqrt(2)  # a head is twice as wide: q·k doubles, √d grows by √2
        if narrow.self_attn is not None and wide.self_attn is not None:
            ws, ns = wide.self_attn, narrow.self_attn
            self._check_heads(ws, ns)
            self.norm(ws.norm, ns.norm)
            c = ns.out.weight.shape[0]
            rows = torch.cat([_dup(c), c + _dup(c), 2 * c + _dup(c)])  # [q | k | v], each duplicated
            scale = torch.cat([torch.full((2 * c,), q_scale, dtype=torch.float64),
                               torch.ones(4 * c, dtype=torch.float64)])
            self.linear(ws.qkv, ns.qkv, rows, None, scale)
            self.conv_dup(ws.out, ns.out)
        if narrow.cross_attn is not None and wide.cross_attn is not None:
            wc, nc = wide.cross_attn, narrow.cross_attn
            self._check_heads(wc, nc)
            self.norm(wc.norm, nc.norm)
            c = nc.q.weight.shape[0]
            self.linear(wc.q, nc.q, _dup(c), None, q_scale)
            self.linear(wc.kv, nc.kv, torch.cat([_dup(c), c + _dup(c)]), torch.arange(nc.kv.weight.shape[1]))
            self.conv_dup(wc.out, nc.out)

    @staticmethod
    def _check_heads(wide: SelfAttention | CrossAttention, narrow: SelfAttention | CrossAttention) -> None:
        if wide.heads != narrow.heads:  # head width doubles, so the count stays
            raise UNetConfigError(f"widening changed the number of attention heads ({narrow.heads} → {wide.heads})")


def _embedding_columns(base: int) -> torch.Tensor:
    """Columns of the 2·base-wide sinusoidal table (−1: a new frequency) holding the base-wide table's features.

    [cos | sin] halves; frequency i of base/2 is exp(−ln P · i/(base/2)) = frequency 2i of base."""
    half = base // 2
    cols = torch.full((2 * base,), -1, dtype=torch.long)
    i = torch.arange(half)
    cols[2 * i] = i  # cos
    cols[2 * half + 2 * i] = half + i  # sin
    return cols


def _child(module: nn.Module, name: str, kind: type[C]) -> C:
    """module.<name>, checked to be a `kind`."""
    child = getattr(module, name)
    if not isinstance(child, kind):
        raise UNetConfigError(f"widening expected a {kind.__name__} at {name}, got {type(child).__name__}")
    return child


@torch.no_grad()
def widen(net: UNet, *, generator: torch.Generator | None = None) -> UNet:
    """A UNet with `widened_config(net.config)` that computes the same function as `net` (to rounding).

    The result is float32 and in training mode is up to the caller; its random fractions come from `generator`
    (or torch's default generator), so a seeded widening is reproducible.
    """
    if not isinstance(net, UNet):
        raise UNetConfigError(f"widen needs a UNet, got {type(net).__name__}")
    if net.config.base_channels % 2:
        raise UNetConfigError(f"widening needs an even base_channels, got {net.config.base_channels}")
    g = generator if generator is not None else torch.default_generator
    wide = UNet(widened_config(net.config))
    narrow = net
    c = _Copier(g)
    emb = narrow.pooled_proj.weight.shape[0]  # the embedding width (time_mlp's and pooled_proj's rows)
    base = net.config.base_channels
    for name in ("time_mlp", "guidance_mlp"):
        if not hasattr(narrow, name):
            continue
        w, n = getattr(wide, name), getattr(narrow, name)
        c.linear(w[0], n[0], _dup(emb), _embedding_columns(base))
        c.linear(w[2], n[2], _dup(emb), None)
    c.linear(wide.pooled_proj, narrow.pooled_proj, _dup(emb), torch.arange(narrow.pooled_proj.weight.shape[1]))
    c.linear(wide.conv_in, narrow.conv_in, _dup(narrow.conv_in.weight.shape[0]),
             torch.arange(narrow.conv_in.weight.shape[1]))
    stages = (list(wide.down) + list(wide.mid) + list(wide.up), list(narrow.down) + list(narrow.mid) + list(narrow.up))
    for w, n in zip(*stages):
        if isinstance(n, (Downsample, Upsample)) and isinstance(w, (Downsample, Upsample)):
            c.conv_dup(w.conv, n.conv)
        else:  # a stage: a ResBlock and perhaps an AttentionBlock
            c.res(_child(w, "res", ResBlock), _child(n, "res", ResBlock))
            if n.attn is not None:
                c.attention(_child(w, "attn", AttentionBlock), _child(n, "attn", AttentionBlock))
    c.norm(wide.norm_out, narrow.norm_out)
    out = narrow.conv_out.weight.shape[0]
    c.linear(wide.conv_out, narrow.conv_out, torch.arange(out), None)
    return wide
