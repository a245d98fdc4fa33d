"""Exponential moving average of weights, the network that is actually sampled from."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ with d = min(decay, (1 + n)/(10 + n)) after n updates.

    The warm-up (used by diffusers' EMAModel and in Karras et al. 2023's "power" EMA in spirit) keeps
    the average from dragging the random initialisation along for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.lerp_(v.detach().float(), 1.0 - d)
            else:
                s.copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, tensors: dict[str, torch.Tensor], num_updates: int) -> None:
        missing = set(self.shadow) - set(tensors)
        if missing:
            raise ValueError(f"EMA checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
        self.shadow = {k: tensors[k].clone().float() for k in self.shadow}
        self.num_updates = num_updates

    def copy_to(self, model: nn.Module) -> None:
        target = model.state_dict()
        model.load_state_dict({k: v.to(target[k].dtype) for k, v in self.shadow.items()})
