"""The `unnoise` command.  Heavy imports happen inside the commands so `--help` stays instant."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from .cli_help import SEED_HELP, hide_flag_types, model_default
from .errors import UnnoiseError
from .limits import DEFAULT_STRENGTH

app = typer.Typer(
    name="unnoise",
    help="Paint images out of pure noise — and watch how it's done.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


from .evaluation.cli import app as _eval_app  # noqa: E402  (light: typer only)

hide_flag_types()

app.add_typer(_eval_app, name="eval")


class CLIError(UnnoiseError):
    """A user-facing error: printed as one line, exit code 2."""


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"unnoise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the package version and exit."),
) -> None:
    """Paint images out of pure noise — and watch how it's done."""


@app.command()
def schedule(
    name: list[str] = typer.Option(
        ["linear", "cosine"], "--name", "-n",
        help="Schedule(s) to draw side by side: linear, cosine, sigmoid, optionally with +ztsnr.",
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
    image: Path | None = typer.Argument(None, help="Image to dissolve (default: the cat from scikit-image)."),
    out: Path = typer.Option(Path("noise.gif"), "--out", "-o", help="Output: .gif animation or .png strip."),
    schedule_name: str = typer.Option("linear", "--schedule", "-s", help="Noise schedule."),
    frames: int | None = typer.Option(None, "--frames", "-k",
        help="Number of frames, 2 … 1000 (default: 40 for .gif, 8 for .png)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the one noise draw used for every frame."),
    num_steps: int = typer.Option(1000, "--num-steps", help="Training steps T of the schedule."),
) -> None:
    """Show the forward process: an image dissolving into static, step by step."""
    from . import images, schedules, visualize

    out = images.check_writable(out, (".gif", ".png"))
    if not 0 <= seed < 2**63:  # as paint refuses it (torch would take −1 and wrap it around)
        raise CLIError(f"seed must be a non-negative integer, got {seed}")
    sched = schedules.get(schedule_name, num_steps)
    picture = images.load_image(image) if image is not None else images.default_cat()
    k = frames if frames is not None else (40 if out.suffix.lower() == ".gif" else 8)
    if not 2 <= k <= 1000:
        raise CLIError(f"--frames must be from 2 to 1000, got {k}")
    visualize.save_frames(visualize.noise_frames(sched, picture, k, seed=seed), out)
    typer.echo(f"wrote {out} ({k} frames, t = 0 … {sched.num_steps - 1}, {sched.name} schedule)")


@app.command()
def paint(
    ctx: typer.Context,
    prompt: str | None = typer.Argument(None, help='What to paint, e.g. "a cat face". Empty: unconditional.'),
    model: str = typer.Option("emoji", "--model", "-m",
        help="Bundled model (emoji, emoji-fast, digits, digits-fast, digits-1step) or a model directory."),
    steps: int | None = typer.Option(None, "--steps", help=f"Sampler steps ({model_default('steps')})."),
    guidance: float | None = typer.Option(None, "--guidance", "-g", help="Classifier-free guidance scale "
                                             f"({model_default('guidance')})."),
    sampler: str | None = typer.Option(None, "--sampler", help="Sampler, by our name or A1111's, e.g. "
                                          f"\"DPM++ 2M Karras\" (`unnoise samplers`) ({model_default('sampler')})."),
    seed: int | None = typer.Option(None, "--seed", help=f"{SEED_HELP} (default: random)."),
    num_images: int = typer.Option(1, "--num-images", "-k", help="How many images to paint."),
    out: Path = typer.Option(Path("painting.png"), "--out", "-o", help="Output .png, .jpg or .webp, each with the "
                             "parameters; with -k > 1: STEM-1.png … STEM-k.png (and with --grid, OUT is the grid)."),
    negative_prompt: str = typer.Option("", "--negative-prompt", help="What to steer away from."),
    guidance_rescale: float = typer.Option(0.0, "--guidance-rescale",
        help="Guidance rescale φ (Lin et al. 2023), 0 … 1."),
    spacing: str | None = typer.Option(None, "--spacing", help="Noise-level spacing: karras, log_snr, "
                                          "log_snr_trailing, trailing, leading, linspace, or log_snr@S (log-SNR steps "
                                          f"down to a last call at σ = S) ({model_default('spacing')})."),
    grid: bool = typer.Option(False, "--grid",
        help="With -k > 1: --out is all images as one grid, beside STEM-1 … STEM-k."),
    init_image: Path | None = typer.Option(None, "--init-image",
        help="Image-to-image (SDEdit): start from this picture."),
    strength: float | None = typer.Option(None, "--strength",
        help=f"How far to noise --init-image, (0, 1] (default: {DEFAULT_STRENGTH:g})."),
    animate: Path | None = typer.Option(None, "--animate",
        help="Also write a GIF of the denoising: x_t beside x̂0 per step."),
    from_png: Path | None = typer.Option(None, "--from", help="Repeat the painting stored in an unnoise .png, .jpg "
                                            "or .webp (options given here override it)."),
    size: int = typer.Option(256, "--size",
        help="Upscale the saved images to this side (nearest neighbour); 0: native."),
    snap: bool | None = typer.Option(None, "--snap/--no-snap", help="Condition an unknown prompt on the most similar "
                                        "training caption, if the model has a vocabulary (default: on)."),
    prompts_file: Path | None = typer.Option(None, "--prompts-file", help="Paint each line of this text file "
                                                "instead of PROMPT: -k images a line, named STEM-LINE-i.EXT."),
    device: str = typer.Option("cpu", "--device", help="Where to paint: cpu, cuda (cuda:N) or mps."),
    class_label: int | None = typer.Option(None, "--class-label", help="The class a class-conditional diffusers "
                                              "model paints, 0 … N−1 (default: the prompt if it is a number, else 0)."),
) -> None:
    """Paint images from a prompt (or a file of prompts) with a bundled or trained model, or a diffusers
    pipeline folder."""
    from . import images, infotext
    from .paint_cli import notes, paint_all, read_prompts_file
    from .pipeline import Painter, PaintParams, check_paint_args

    out = images.check_writable(out, tuple(infotext.FORMATS))
    if animate is not None:
        images.check_writable(animate, (".gif",))
    if from_png is not None:
        given = {k: v for k, v in ctx.params.items() if _given(ctx, k)}
        if prompts_file is not None:
            given["prompt"] = None  # the file's lines are the prompts
        merged = _with_stored(PaintParams.from_png(from_png), from_png, given)
        (prompt, negative_prompt, steps, guidance, sampler, seed, spacing, guidance_rescale, snap, model, strength,
         class_label) = (merged[k] for k in STORED_PAINT_OPTIONS)
    if strength is not None and init_image is None:
        raise CLIError("--strength needs --init-image: it says how far to noise that picture")
    if prompts_file is not None and prompt is not None:
        raise CLIError("give a PROMPT or --prompts-file, not both")
    jobs = [(None, prompt or "")] if prompts_file is None else read_prompts_file(prompts_file)
    check_paint_args(jobs[0][1], negative_prompt, num_images, steps or 1, 0.0 if guidance is None else guidance,
                     strength, guidance_rescale)
    if not 0 <= size <= 2048:
        raise CLIError(f"--size must be from 0 to 2048, got {size}")
    init = images.load_image(init_image) if init_image is not None else None
    painter = Painter.from_pretrained(model, device=device)
    strength = (DEFAULT_STRENGTH if strength is None else strength) if init is not None else None
    params = [painter.params(text, negative_prompt=negative_prompt, seed=seed, steps=steps, sampler=sampler,
                             guidance=guidance, guidance_rescale=guidance_rescale, spacing=spacing,
                             init_image=str(init_image) if init_image else None, strength=strength, snap=snap,
                             class_label=class_label)
              for _, text in jobs]
    params = [q.replace(seed=params[0].seed) for q in params]  # one random seed: image i of each prompt, seed + i
    for line in (line for q in params for line in notes(painter, q)):
        typer.echo(line, err=True)
    for line in paint_all(painter, jobs, params, init, out=out, num_images=num_images, size=size, grid=grid,
                          animate=animate):
        typer.echo(line)


# the options `paint --from` takes from the picture unless given
STORED_PAINT_OPTIONS = ("prompt", "negative_prompt", "steps", "guidance", "sampler", "seed", "spacing",
                        "guidance_rescale", "snap", "model", "strength", "class_label")
# CLI option name → config field, where they differ (typer reserves `compile`; `schedule` reads as a verb)
CONFIG_FIELD = {"schedule_name": "schedule", "compile_model": "compile"}


def _config_values(ctx: typer.Context, config_class: type, **converted: Any) -> tuple[dict, dict]:
    """The command's options that are fields of `config_class` (TrainConfig, DistillConfig), by field name —
    each setting and its default is written once, in the config dataclass; tests/test_cli_habits.py checks the
    options' defaults against it — and the subset the user typed (what --resume may change).  `converted`
    replaces options whose value the command has parsed (a path as str, a comma list as a tuple)."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    names, explicit = {}, {}
    for option, value in ctx.params.items():
        field = CONFIG_FIELD.get(option, option)
        if field in fields:
            names[field] = converted.get(field, value)
            if _given(ctx, option):
                explicit[field] = names[field]
    return names, explicit


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed this option (or set it in the environment), rather than it taking its default."""
    # by name: typer ≥ 0.29 vendors click, so click.core.ParameterSource is not the enum it returns
    return getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")


def _with_stored(stored, png: Path, given: dict) -> dict:
    """`paint --from`: the stored painting's settings, each overridden by an option the user typed — even one
    typed with its default value (--model emoji, --negative-prompt "", --guidance-rescale 0)."""
    merged = {k: getattr(stored, k) for k in ("prompt", "negative_prompt", "steps", "guidance", "sampler", "seed",
                                              "spacing", "guidance_rescale", "snap", "class_label")}
    merged["model"] = given["model"] if "model" in given else _stored_model(png, stored.model)
    merged["strength"] = stored.strength if stored.init_image else None
    if stored.init_image and "init_image" not in given:  # a path from someone else's file is never opened unasked
        raise CLIError(f"{png} was painted from the picture {stored.init_image!r} (image to image); pass "
                       "--init-image PATH to paint from it again (a PNG's stored paths are not opened)")
    merged.update((k, v) for k, v in given.items() if k in merged)
    return merged


def _stored_model(png: Path, stored: str) -> str:
    """The model a PNG names, if it is a bundled one; a stored directory path is refused (it could point
    anywhere on this machine), with the line to pass it explicitly."""
    from .modeldir import BUNDLED

    if stored in BUNDLED:
        return stored
    raise CLIError(f"{png} was painted with the model {stored!r}, not a bundled one; pass --model {stored} to use "
                   "it (a PNG's stored paths are not opened)")


@app.command()
def lab(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(7860, "--port", help="Port to serve on."),
    device: str = typer.Option("cpu", "--device", help="Where the models paint: cpu, cuda (cuda:N) or mps."),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Also offer this model directory or diffusers "
                                              "pipeline folder, listed by its folder name (repeatable); with "
                                              "--export: only these models (default: every bundled one)."),
    export: Path | None = typer.Option(None, "--export", help="Write the lab as a static site into this folder "
                                       "(new, empty or an earlier export) instead of serving it; the page paints "
                                       "in the browser: python -m http.server -d DIR."),
) -> None:
    """Open the lab: watch the forward process, the schedule and the real learned reverse in the browser."""
    from .devices import check_device
    from .lab.app import run
    from .lab.learned import PainterFactory
    from .modeldir import BUNDLED, resolve

    if export is not None:
        from .lab.export import export_site, site_bytes

        out = export_site(export, model or None)  # ExportError / ModelDirError: one line
        typer.echo(f"wrote the static lab to {out} ({site_bytes(out) / 1e6:.1f} MB); serve it with: "
                   f"python -m http.server -d {out}")
        return
    if not 1 <= port <= 65535:
        raise CLIError(f"--port must be from 1 to 65535, got {port}")
    factory = PainterFactory.bundled(str(check_device(device)))
    models = dict(factory.models) if factory else {}
    for m in model or []:
        path = resolve(m)  # ModelDirError (one line) for a name or folder that is neither
        models[m if m in BUNDLED else path.resolve().name] = path
    run(host=host, port=port, generate=PainterFactory(models, str(check_device(device))) if models else None)


@app.command()
def samplers() -> None:
    """List the samplers: their other names (A1111, ComfyUI, k-diffusion), order, calls per step."""
    from .sampling.names import listing

    for line in listing():
        typer.echo(line)


@app.command()
def train(
    ctx: typer.Context,
    data: str | None = typer.Option(None, "--data", help="digits, emoji, emoji-styles, or a folder of images with "
                                    "metadata.jsonl (file_name, text); --resume reads the run's own."),
    out: Path = typer.Option(..., "--out",
        help="Run directory (config.json, metrics.jsonl, samples/, checkpoints/, model/)."),
    max_steps: int = typer.Option(20_000, "--max-steps", help="Optimiser steps in total."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Stop, checkpoint and export after this "
                                             "many minutes of each invocation (kept by --resume; it may change it)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Global batch size (split over torchrun processes)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data order, timesteps, noise and initialisation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    lr: float = typer.Option(3e-4, "--lr",
        help="AdamW peak learning rate. May change on --resume (recorded; reached over --warmup-steps)."),
    model_size: str = typer.Option("default", "--model-size", help="UNet preset: tiny, small, default."),
    image_size: int | None = typer.Option(None, "--image-size",
        help="Resize images to this (default: the data's, 32)."),
    prediction_type: str = typer.Option("epsilon", "--prediction-type", help="epsilon, v_prediction or sample."),
    schedule_name: str = typer.Option("linear", "--schedule", help="Noise schedule."),
    loss_weighting: str = typer.Option("min_snr", "--loss-weighting", help="uniform or min_snr (γ = 5)."),
    cond_dropout: float = typer.Option(0.1, "--cond-dropout",
        help="Share of captions dropped for classifier-free guidance."),
    balance: str = typer.Option("items", "--balance", help="items: draw every item equally often; families: every "
                                "family of near-duplicates (emoji skin tones) as one. May change on --resume "
                                "(recorded)."),
    caption_draw: str = typer.Option("uniform", "--caption-draw", help="uniform: each of an item's captions equally "
                                     "often; names: its names 3/4 of the time, its keywords 1/4, plain and "
                                     "style-tagged alike (emoji-styles). May change on --resume (recorded)."),
    precision: str = typer.Option("fp32", "--precision",
        help="fp32, or bf16 autocast (only pays on CPUs with native bf16)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    warmup_steps: int = typer.Option(500, "--warmup-steps", help="Learning-rate warm-up steps."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="EMA decay."),
    log_every: int = typer.Option(50, "--log-every", help="Steps between metrics lines."),
    sample_every: int = typer.Option(1000, "--sample-every", help="Steps between sample grids (0: never)."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Steps between checkpoints."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    init: str | None = typer.Option(None, "--init", help="Start a new run from this network instead of random "
                                    "weights: a model directory, or a run directory (its newest checkpoint's EMA). "
                                    "The network is its (so no --model-size)."),
    init_widen: bool = typer.Option(False, "--widen", help="With --init: double its width by Net2Net duplication "
                                    "(the same function at the start, about 4× the compute per step)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda or mps (default: cuda if there is one, "
                                         "else cpu; under torchrun each process takes GPU LOCAL_RANK)."),
) -> None:
    """Train a text-conditioned denoiser.  Multi-process: torchrun --nproc_per_node N -m unnoise train …"""

    from .devices import check_device
    from .training import checkpoint
    from .training.config import TrainConfig
    from .training.loop import RUN_CONFIG, resume_config
    from .training.loop import train as run_training

    if device is not None and check_device(device).index is not None:
        raise CLIError(f"--device {device}: train takes cuda without an index (each torchrun process uses GPU "
                       "LOCAL_RANK; CUDA_VISIBLE_DEVICES picks the GPUs)")

    names, explicit = _config_values(ctx, TrainConfig, out=str(out),
                                     init=None if init is None else str(Path(init).resolve()))
    _check_run_dir(out)
    if init is not None and "model_size" in explicit:
        raise CLIError(f"--init {init} brings its own network; drop --model-size {model_size}")
    if resume and not (out / RUN_CONFIG).exists() and checkpoint.latest_path(out) is None:
        typer.echo(f"--resume: nothing was saved in {out} yet; starting over", err=True)  # killed at once
        resume = False
    if not resume and data is None:
        raise CLIError("--data is needed to start a run: digits, emoji, emoji-styles or a folder of images "
                       "(--resume reads the run's own)")
    cfg = resume_config(out, explicit) if resume else TrainConfig(**names)
    if dry_run:
        typer.echo(json.dumps(cfg.to_dict(), indent=2))
        return
    if not resume and checkpoint.latest_path(out) is not None:  # only a complete checkpoint makes a run
        raise CLIError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"unnoise train: {'resuming' if resume else 'starting'} the run in {out}", err=True)
    model_dir = run_training(cfg, resume=resume, device=device)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"done: model in {model_dir}  (paint with: unnoise paint \"…\" --model {model_dir})")


@app.command()
def distill(
    ctx: typer.Context,
    teacher: str = typer.Option(..., "--teacher", help="The teacher: emoji, digits or a model directory; "
                                 "or a ddim student (e.g. digits-fast) to teach a student of fewer calls "
                                 "(trajectory)."),
    steps: int = typer.Option(4, "--steps", help="Student sampler steps K: 1, 2 or 4 (the model's default)."),
    method: str = typer.Option("consistency", "--method", help="consistency (1–4 calls; its own sampler), guidance "
                               "(w as an input only; paints with dpmpp_2m, one single-batch call per step) or "
                               "trajectory (each of K DDIM steps learns the teacher's fine solve of its interval)."),
    out: Path = typer.Option(..., "--out", help="Run directory (config.json, metrics.jsonl, checkpoints/, model/)."),
    data: str | None = typer.Option(None, "--data", help="digits, emoji or a folder (default: the teacher's data)."),
    max_steps: int = typer.Option(4000, "--max-steps", help="Optimiser steps in total."),
    max_minutes: float | None = typer.Option(None, "--max-minutes",
        help="Stop, checkpoint and export after this long."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per step."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW peak learning rate."),
    lr_decay: str = typer.Option("constant", "--lr-decay", help="After warm-up: constant or cosine (to 10 % of --lr)."),
    warmup_steps: int = typer.Option(100, "--warmup-steps", help="Linear learning-rate warm-up steps."),
    ema_decay: float = typer.Option(0.95, "--ema-decay",
        help="EMA μ of the exported student (and the consistency target)."),
    init: str | None = typer.Option(None, "--init", help="Start from this student model directory (same teacher) "
                                       "instead of the teacher, e.g. to go on with other settings."),
    sigma_sampling: str = typer.Option("log_uniform", "--sigma-sampling", help="guidance: log_uniform (σ over the "
                                       "whole schedule) or grid (the K σs of the student's own sampler)."),
    weighting: str = typer.Option("truncated_snr", "--weighting", help="Scale of each sample's x̂0 error (guidance, "
                                  "trajectory): truncated_snr, max(1/σ, 1); sqrt_truncated_snr, its √; or uniform, "
                                  "1 (favours the high-noise steps; docs/distill.md)."),
    interval_weights: str | None = typer.Option(None, "--interval-weights", help="trajectory: K comma-separated "
                                                   "factors on the loss of each student interval, noisiest first "
                                                   "(e.g. 1,1,1,100)."),
    last_target: str = typer.Option("ode", "--last-target", help="trajectory, the last interval (to 0): ode, the "
                                    "teacher's fine solve; or x0, its guided x̂0 at the last σ (a final denoising "
                                    "step)."),
    reuse: int = typer.Option(1, "--reuse", help="trajectory, guidance: each teacher target serves R consecutive steps "
                              "(batch-size/R fresh samples a step; ~R× fewer teacher calls per step)."),
    student_states: float = typer.Option(0.0, "--student-states", help="trajectory: the share of samples that start "
                                         "each interval where the student's own painting is (its steps from noise) "
                                         "instead of on noised data (0–1; docs/distill.md)."),
    student_width: int = typer.Option(1, "--student-width", help="1: the student is the teacher's network; 2: twice "
                                      "as wide (~4× the compute a call), started as exactly the teacher "
                                      "(docs/distill.md)."),
    spacing: str | None = typer.Option(None, "--spacing", help="The student's σ grid (and the teacher's inside it): "
                                          "log_snr_trailing never calls at σ_min, log_snr@S ends its calls at σ = S "
                                          "(default: the teacher's spacing)."),
    ode_steps: int = typer.Option(32, "--ode-steps", help="N: the teacher's ODE grid (consistency); trajectory: the "
                                  "teacher solves each of the K intervals in ⌈N/K⌉ steps (a student teacher: its own "
                                  "calls)."),
    guidance_min: float = typer.Option(1.0, "--guidance-min", help="Smallest guidance scale w distilled."),
    guidance_max: float = typer.Option(6.0, "--guidance-max", help="Largest guidance scale w distilled."),
    guidance: float | None = typer.Option(None, "--guidance", help="The student's default w (default: the teacher's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data order, w, grid points and noise."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    checkpoint_every: int = typer.Option(250, "--checkpoint-every", help="Steps between checkpoints."),
    log_every: int = typer.Option(50, "--log-every", help="Steps between metrics lines."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Distil a teacher into a 1–4 call student (consistency, guidance or trajectory distillation, w as an input;
    docs/distill.md)."""

    from .distill.config import DistillConfig, resume_config
    from .distill.loop import distill as run_distill
    from .distill.loop import resolve
    from .training import checkpoint

    weights = None if interval_weights is None else _numbers("--interval-weights", interval_weights)
    names, explicit = _config_values(ctx, DistillConfig, out=str(out), interval_weights=weights)
    if method not in ("consistency", "guidance", "trajectory"):  # progressive stays a Python-API experiment
        raise CLIError(f"--method must be consistency, guidance or trajectory, got {method!r}")
    _check_run_dir(out)
    cfg = resume_config(out, explicit) if resume else DistillConfig(**names)
    if dry_run:
        typer.echo(json.dumps(resolve(cfg).to_dict(), indent=2))
        return
    if not resume and checkpoint.latest_path(out) is not None:  # only a complete checkpoint makes a run
        raise CLIError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    model_dir = run_distill(cfg, resume=resume)
    typer.echo(f"done: student in {model_dir}  (paint with: unnoise paint \"…\" --model {model_dir})")


def _numbers(option: str, text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers, as an option gives it."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CLIError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _check_run_dir(out: Path) -> None:
    """--out of train or distill: a run directory, existing or to be made (not a file)."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; a run needs a directory (an existing run's, or a new one)")


@app.command()
def export(
    run: Path = typer.Argument(...,
        help="A training run directory (from `unnoise train --out` or `unnoise distill --out`)."),
    out: Path = typer.Option(..., "--out", "-o",
        help="Model directory to write (config.json, model.safetensors, unnoise.json)."),
    steps: int | None = typer.Option(None, "--steps", help="The model's default sampler steps."),
    guidance: float | None = typer.Option(None, "--guidance", help="The model's default guidance scale."),
    sampler: str | None = typer.Option(None, "--sampler", help="The model's default sampler."),
    spacing: str | None = typer.Option(None, "--spacing", help="The model's default noise-level spacing."),
    fp32: bool = typer.Option(False, "--fp32", help="Keep float32 weights (default: float16, half the size)."),
    card: str | None = typer.Option(None, "--card", help="Also write MODEL.md + loss.png for a model of this name."),
    notes: Path | None = typer.Option(None, "--notes", exists=True, dir_okay=False, readable=True,
                                         help="A Markdown file appended to MODEL.md (e.g. evaluation)."),
    vocabulary: bool = typer.Option(False, "--vocabulary", help="Also build the prompt-snapping vocabulary from "
                                    "the run's training data (a student always gets its teacher's)."),
) -> None:
    """Export a run's latest checkpoint (EMA weights) as a model directory, e.g. to bundle it.  A distillation
    run (from `unnoise distill --out`) exports its student, with the teacher's vocabulary and a student's card."""
    import torch

    from . import schedules
    from .pipeline import check_paint_args
    from .sampling.names import resolve_sampler, resolve_spacing
    from .training.loop import export_run

    given = (("steps", steps), ("guidance", guidance), ("sampler", sampler), ("spacing", spacing))
    defaults = {k: v for k, v in given if v is not None}
    dtype = torch.float32 if fp32 else torch.float16
    note_text = notes.read_text() if notes is not None else ""
    if _is_distill_run(run):
        from .distill.card import write_distill_card
        from .distill.loop import export_distill_run

        if defaults:
            raise CLIError("a student's defaults (steps, guidance, sampler, spacing) are those it was distilled for; "
                           "drop --steps/--guidance/--sampler/--spacing")
        path = export_distill_run(run, out, dtype=dtype)
        if card:
            write_distill_card(run, path, card, note_text)
        size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        typer.echo(f"exported the student of {run} → {path} ({size:.1f} MiB)")
        return
    check_paint_args("", "", 1, defaults.get("steps", 20), defaults.get("guidance", 3.0))
    if sampler is not None:  # A1111's, ComfyUI's names too: the registry's is stored, "… Karras" sets the spacing
        defaults["sampler"], named = resolve_sampler(sampler)
        if named is not None and spacing is not None and resolve_spacing(spacing) != named:
            raise CLIError(f"--sampler {sampler!r} asks for the {named} spacing, but --spacing is {spacing!r}")
        spacing = spacing if named is None else named
    if spacing is not None:
        spacing = defaults["spacing"] = resolve_spacing(spacing)
        try:
            schedules.check_spacing(spacing)
        except schedules.ScheduleError as e:
            raise CLIError(str(e)) from None
    path = export_run(run, out, dtype=dtype, defaults=defaults or None)
    if vocabulary:
        from .conditioning.vocabulary import write_vocabulary

        try:
            write_vocabulary(path, json.loads((path / "unnoise.json").read_text())["training"]["config"]["data"])
        except ValueError as e:
            raise CLIError(f"--vocabulary: {e}") from None
    if card:
        from .training.card import write_card

        write_card(run, path, card, note_text)
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    typer.echo(f"exported {run} → {path} ({size:.1f} MiB)")


def _is_distill_run(run: Path) -> bool:
    """A run directory made by `unnoise distill` (its config.json names a teacher) rather than `unnoise train`."""
    try:
        return "teacher" in json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError, TypeError):
        return False  # export_run reports a missing or broken run


# Errors of the user's machine rather than of unnoise: one line, like an UnnoiseError, never "please report".
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def main(argv: list[str] | None = None) -> None:
    """Entry point.  An `UnnoiseError` (the user's to fix: a bad value, a missing or broken file) becomes one
    line on stderr and exit code 2, as do usage errors (typer) and a full disk or a denied permission; anything
    else is a bug and says so: its traceback, a one-line "please report", exit code 1."""
    try:
        app(args=argv, prog_name="unnoise")
    except UnnoiseError as e:
        if os.environ.get("UNNOISE_DEBUG"):
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            _crashed(e)
        if os.environ.get("UNNOISE_DEBUG"):
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 — the one place a bug is caught, to be reported as one
        _crashed(e)


def _crashed(e: BaseException) -> None:
    """A bug: the traceback, then one line saying so (the last line a user sees), exit code 1."""
    import traceback

    traceback.print_exception(e, file=sys.stderr)
    message = str(e).splitlines()[0] if str(e) else ""
    typer.echo(f"unnoise crashed (bug): {type(e).__name__}: {message} — please report it with the command you ran",
               err=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
