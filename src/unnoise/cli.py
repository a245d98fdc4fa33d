"""The `unnoise` command.  Heavy imports happen inside the commands so `--help` stays instant."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="unnoise",
    help="Paint images out of pure noise — and watch how it's done.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


@app.command()
def schedule(
    name: List[str] = typer.Option(
        ["linear", "cosine"], "--name", "-n", help="Schedule(s) to draw side by side: linear, cosine, sigmoid, optionally with +ztsnr."
    ),
    out: Path = typer.Option(Path("schedule.png"), "--out", "-o", help="Output PNG file."),
    num_steps: int = typer.Option(1000, "--num-steps", help="Training steps T of the schedule."),
    log_snr: bool = typer.Option(True, "--log-snr/--no-log-snr", help="Add a log-SNR panel."),
) -> None:
    """Draw the signal and noise curves of noise schedules, with their crossing marked."""
    from . import images, schedules, visualize

    out = images.check_writable(out, (".png",))
    scheds = [schedules.get(n, num_steps) for n in name]
    visualize.plot_schedules(scheds, out, log_snr=log_snr)
    for s in scheds:
        typer.echo(f"{s.name}: signal = noise at t ≈ {s.crossing_step():.1f} of {s.num_steps}")
    typer.echo(f"wrote {out}")


@app.command()
def noise(
    image: Optional[Path] = typer.Argument(None, help="Image to dissolve (default: the cat from scikit-image)."),
    out: Path = typer.Option(Path("noise.gif"), "--out", "-o", help="Output: .gif animation or .png strip."),
    schedule_name: str = typer.Option("linear", "--schedule", "-s", help="Noise schedule."),
    frames: Optional[int] = typer.Option(None, "--frames", "-k", help="Number of frames [default: 40 for .gif, 8 for .png]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the one noise draw used for every frame."),
    num_steps: int = typer.Option(1000, "--num-steps", help="Training steps T of the schedule."),
) -> None:
    """Show the forward process: an image dissolving into static, step by step."""
    from . import images, schedules, visualize

    out = images.check_writable(out, (".gif", ".png"))
    sched = schedules.get(schedule_name, num_steps)
    picture = images.load_image(image) if image is not None else images.default_cat()
    k = frames if frames is not None else (40 if out.suffix.lower() == ".gif" else 8)
    visualize.save_frames(visualize.noise_frames(sched, picture, k, seed=seed), out)
    typer.echo(f"wrote {out} ({k} frames, t = 0 … {sched.num_steps - 1}, {sched.name} schedule)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    from .images import ImageLoadError
    from .schedules import ScheduleError

    try:
        app(args=argv, prog_name="unnoise")
    except (CLIError, ScheduleError, ImageLoadError, ValueError, TypeError, OSError) as e:
        if os.environ.get("UNNOISE_DEBUG"):
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
