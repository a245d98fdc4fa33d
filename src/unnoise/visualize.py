"""The two pictures: the schedule's signal and noise curves, and an image dissolving into static."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import diffusion, images
from .schedules import Schedule


def plot_schedules(schedules: list[Schedule], out: str | Path, log_snr: bool = True) -> Path:
    """Signal sqrt(ᾱ_t) and noise sqrt(1−ᾱ_t) over t, one panel per schedule, their crossing marked;
    optionally a shared log-SNR panel underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(schedules)
    rows = 2 if log_snr else 1
    fig = plt.figure(figsize=(4.2 * n, 3.4 * rows), layout="constrained")
    gs = fig.add_gridspec(rows, n)
    for i, s in enumerate(schedules):
        ax = fig.add_subplot(gs[0, i])
        t = np.arange(s.num_steps)
        ax.plot(t, s.signal.numpy(), color="#1f77b4", lw=2, label="signal  √ᾱₜ")
        ax.plot(t, s.noise.numpy(), color="#d62728", lw=2, label="noise  √(1−ᾱₜ)")
        tc = s.crossing_step()
        ax.axvline(tc, color="0.5", ls="--", lw=1)
        ax.plot([tc], [np.sqrt(0.5)], "ko", ms=5)
        ax.annotate(f"cross at t≈{tc:.0f}", (tc, np.sqrt(0.5)), xytext=(8, -18), textcoords="offset points", fontsize=9)
        ax.set_title(s.name)
        ax.set_xlabel("step t")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, s.num_steps - 1)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("share of x_t")
            ax.legend(loc="center right", fontsize=8)
    if log_snr:
        ax = fig.add_subplot(gs[1, :])
        for s in schedules:
            lsnr = s.log_snr.numpy()
            finite = np.isfinite(lsnr)
            ax.plot(np.arange(s.num_steps)[finite], lsnr[finite], lw=2, label=s.name)
        ax.axhline(0, color="0.5", ls="--", lw=1)
        ax.set_xlabel("step t")
        ax.set_ylabel("log SNR = log(ᾱ/(1−ᾱ))")
        ax.set_title("log signal-to-noise ratio (0 = the crossing)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib (a dependency) ships: it has σ, ᾱ and the combining hat of x̂ that
    Pillow's built-in font draws as empty boxes; that one only if matplotlib's copy is missing."""
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _captioned(frame: Image.Image, lines: list[str]) -> Image.Image:
    """The frame with a white band underneath holding the lines of text."""
    size = max(11, frame.width // 18)
    font = _font(size)
    band = (size + 4) * len(lines) + 6
    out = Image.new("RGB", (frame.width, frame.height + band), "white")
    out.paste(frame.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((6, frame.height + 4 + k * (size + 4)), line, fill="black", font=font)
    return out


def noise_frames(
    schedule: Schedule,
    image: Image.Image,
    num_frames: int = 10,
    *,
    seed: int = 0,
    max_side: int = 256,
) -> list[Image.Image]:
    """An image dissolving into static under one fixed noise draw, captioned with t and the shares."""
    if not 2 <= num_frames <= 1000:
        raise ValueError(f"frames must be between 2 and 1000, got {num_frames}")
    x0 = images.to_tensor(images.limit_size(image.convert("RGB"), max_side))  # (3, H, W)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=generator)
    ts = torch.from_numpy(np.linspace(0, schedule.num_steps - 1, num_frames).round().astype(np.int64))
    xs = diffusion.trajectory(schedule, x0, noise, ts)  # (K, 3, H, W)
    frames = []
    for t, x in zip(ts.tolist(), xs):
        ab = float(schedule.alphas_cumprod[t])
        lines = [f"t = {t} / {schedule.num_steps - 1}   ({schedule.name})",
                 f"signal {ab ** 0.5:.3f}   noise {(1 - ab) ** 0.5:.3f}"]
        frames.append(_captioned(images.to_pil(x), lines))
    return frames


def save_frames(frames: list[Image.Image], out: str | Path, duration_ms: int = 120) -> Path:
    """A .gif animation (holding the first and last frame a little longer) or a .png strip."""
    out = Path(out)
    if out.suffix.lower() == ".gif":
        durations = [duration_ms] * len(frames)
        durations[0] = durations[-1] = duration_ms * 8
        frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False)
    else:
        images.grid(frames, cols=len(frames), pad=4).save(out)
    return out


def denoising_frames(
    steps: list[tuple[float, torch.Tensor, torch.Tensor]], final: torch.Tensor, size: int = 128
) -> list[Image.Image]:
    """Frames of a reverse run for the first image: x_t (shown as the DDPM x_t = x/sqrt(1+σ²), the
    static-and-signal mix of the forward pictures) beside the predicted clean image x̂0."""

    def tile(x: torch.Tensor) -> Image.Image:
        return images.to_pil(x).resize((size, size), Image.Resampling.NEAREST).convert("RGB")

    frames = []
    n = len(steps)
    for i, (sigma, x, denoised) in enumerate(steps):
        pair = images.grid([tile(x[0] / (1 + sigma**2) ** 0.5), tile(denoised[0])], cols=2, pad=4)
        ab = 1 / (1 + sigma**2)
        frames.append(_captioned(pair, [f"step {i + 1}/{n}  σ = {sigma:.3g}", f"x_t (signal {ab ** 0.5:.2f})  |  x̂0"]))
    done = images.grid([tile(final[0]), tile(final[0])], cols=2, pad=4)
    frames.append(_captioned(done, ["done: σ = 0", "x_0  |  x_0"]))
    return frames
