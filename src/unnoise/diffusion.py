"""The forward process and what training learns from it.

Destroying is easy: x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε (Ho et al. 2020, eq. 4).  This module makes
whole trajectories of one image under one fixed noise draw, "the replay" (the reverse that cheats by
subtracting the very noise it added), and the training targets and loss weights.
"""

from __future__ import annotations

import torch

from .schedules import Schedule

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 → (B, 1, 1, …) in like's dtype and device."""
    return values.to(device=like.device, dtype=like.dtype).view((-1,) + (1,) * (like.ndim - 1))


def trajectory(schedule: Schedule, x0: torch.Tensor, noise: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """One image dissolving: x_t for each t in ts under the same noise draw.

    x0, noise: (C, H, W); ts: (K,) int64 → (K, C, H, W).
    """
    ts = torch.as_tensor(ts, dtype=torch.long)
    k = ts.shape[0]
    return schedule.add_noise(x0.expand(k, *x0.shape), noise.expand(k, *noise.shape), ts)


def replay(schedule: Schedule, x_t: torch.Tensor, noise: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """The fake reverse: walk x_t back along ts (descending) by subtracting the *known* noise.

    Each step recovers x0 = (x_t − sqrt(1−ᾱ_t)·ε)/sqrt(ᾱ_t) exactly and re-noises it to the next t with
    the same ε — so it retraces the forward trajectory.  It needs the very ε that made x_t, which is
    why it can never generate anything new; a learned denoiser has to *predict* ε instead.

    x_t, noise: (C, H, W) at ts[0]; returns (K, C, H, W) for ts plus the recovered x0 as last frame.
    """
    ts = torch.as_tensor(ts, dtype=torch.long)
    if ts.numel() > 1 and not bool((ts[:-1] > ts[1:]).all()):
        raise ValueError("replay runs backwards: ts must be strictly descending")
    ab = schedule.alphas_cumprod[ts[0]]
    if ab == 0:
        raise ValueError(
            f"replay cannot start at t = {int(ts[0])}: ᾱ_t = 0 there (zero terminal SNR), x_t is pure noise and "
            "holds nothing of the image to recover; start one step earlier"
        )
    x0 = (x_t - (1 - ab).sqrt().to(x_t.dtype) * noise) / ab.sqrt().to(x_t.dtype)
    frames = trajectory(schedule, x0, noise, ts)
    return torch.cat([frames, x0[None]])


def training_target(
    schedule: Schedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the network learns to output at (x_t, t): ε, v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 (Salimans & Ho
    2022, §4), or x0 itself."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        ab = schedule.alphas_cumprod.to(x0.device)[t]
        return _per_sample(ab.sqrt(), x0) * noise - _per_sample((1 - ab).sqrt(), x0) * x0
    raise ValueError(f"unknown prediction type {prediction_type!r}; choose from {', '.join(PREDICTION_TYPES)}")


def loss_weight(
    schedule: Schedule, t: torch.Tensor, prediction_type: str, weighting: str = "uniform", gamma: float = 5.0
) -> torch.Tensor:
    """Per-sample weight (B,) float32 on the MSE to the target.

    "min_snr" is Hang et al. 2023 (Min-SNR-γ): it weights the x0-space loss by min(SNR, γ).  The same
    weight expressed on each target's own MSE is min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v,
    and min(SNR, γ) for x0.  All three are bounded: by 1, 1 and γ.
    """
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    if weighting != "min_snr":
        raise ValueError(f"unknown loss weighting {weighting!r}; choose uniform or min_snr")
    if not gamma > 0:
        raise ValueError(f"min-SNR gamma must be positive, got {gamma}")
    snr = schedule.snr.to(t.device)[t]
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        # at SNR = 0 (zero terminal SNR) ε carries all the information: weight 1
        w = torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
    elif prediction_type == "v_prediction":
        w = clipped / (snr + 1)
    elif prediction_type == "sample":
        w = clipped
    else:
        raise ValueError(f"unknown prediction type {prediction_type!r}; choose from {', '.join(PREDICTION_TYPES)}")
    return w.to(torch.float32)


def predict_x0(
    schedule_alphas_cumprod: torch.Tensor, x_t: torch.Tensor, model_output: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """x̂0 from a network output at DDPM x_t with per-sample ᾱ (B,) (may be fractional-t interpolated)."""
    ab = _per_sample(schedule_alphas_cumprod, x_t)
    if prediction_type == "epsilon":
        return (x_t - (1 - ab).sqrt() * model_output) / ab.sqrt()
    if prediction_type == "v_prediction":
        return ab.sqrt() * x_t - (1 - ab).sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unknown prediction type {prediction_type!r}; choose from {', '.join(PREDICTION_TYPES)}")
