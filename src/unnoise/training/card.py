"""A model card (MODEL.md) and loss curve written next to an exported model, from the run's own records.

The card states what a user needs to trust or reproduce the model: the data, the network, the exact
`unnoise train` command (rebuilt from the run's config.json: every setting that differs from the
defaults), how many steps it got and how long they took (summed from metrics.jsonl, so pauses
between resumed sessions do not count), and the machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path

from ..limits import PAINT_DEFAULTS
from .config import TrainConfig

# CLI option of each TrainConfig field that `unnoise train` exposes.
_FLAGS = {
    "data": "--data", "out": "--out", "max_steps": "--max-steps", "batch_size": "--batch-size", "seed": "--seed",
    "lr": "--lr", "model_size": "--model-size", "image_size": "--image-size", "prediction_type": "--prediction-type",
    "schedule": "--schedule", "loss_weighting": "--loss-weighting", "cond_dropout": "--cond-dropout",
    "precision": "--precision", "compile": "--compile", "warmup_steps": "--warmup-steps", "ema_decay": "--ema-decay",
    "log_every": "--log-every", "sample_every": "--sample-every", "checkpoint_every": "--checkpoint-every",
    "threads": "--threads", "balance": "--balance", "caption_draw": "--caption-draw", "init": "--init",
    "init_widen": "--widen",
}


def train_commands(cfg: TrainConfig) -> list[str]:
    """The commands that made the run: the first `unnoise train …`, then one `--resume` per recipe change."""
    history = cfg.extra.get("history", [])
    first = cfg.replace(**{k: old for h in reversed(history) for k, (old, _) in h["changes"].items()})
    out = [train_command(first)]
    for h in history:
        flags = " ".join(f"{_FLAGS[k]} {new}" for k, (_, new) in h["changes"].items())
        out.append(f"unnoise train --data {cfg.data} --out {cfg.out} --resume {flags}   # from step {h['step']}")
    return out


def train_command(cfg: TrainConfig) -> str:
    """The `unnoise train …` command that reproduces cfg (non-default settings only)."""
    default = TrainConfig(data=cfg.data, out=cfg.out)
    parts = ["unnoise train", f"--data {cfg.data}", f"--out {cfg.out}"]
    for f in dataclasses.fields(cfg):
        name, value = f.name, getattr(cfg, f.name)
        if name in ("data", "out") or name not in _FLAGS or value == getattr(default, name):
            continue
        if name == "model_size" and cfg.init is not None:  # --init brings its network
            continue
        parts.append(_FLAGS[name] if value is True else f"{_FLAGS[name]} {value}")
    return " ".join(parts)


def read_metrics(path: Path, upto: int | None = None) -> list[dict]:
    """The rows of metrics.jsonl that made the run, each step once, oldest first (up to step `upto`).

    A run killed and resumed from step k redid the steps after k: a file written before resumes trimmed it
    holds those steps twice (the steps go backwards where the resume began); the later rows are the ones
    that count.  A line cut short by a kill is skipped."""
    rows: list[dict] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        while rows and rows[-1]["step"] >= step:
            rows.pop()
        rows.append(row)
    return [r for r in rows if upto is None or r["step"] <= upto]


def run_record(run: Path) -> dict:
    """Steps, summed compute time, seconds per 1k steps and the loss curve from metrics.jsonl."""
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    rows = read_metrics(run / "metrics.jsonl")
    seconds, prev = 0.0, 0
    for r in rows:  # each row covers the steps since the previous one at its measured images/s
        seconds += (r["step"] - prev) * cfg.batch_size / max(r["images_per_s"], 1e-9)
        prev = r["step"]
    last = rows[-1] if rows else {"step": 0, "loss": float("nan"), "images_per_s": float("nan")}
    return {"cfg": cfg, "rows": rows, "steps": last["step"], "seconds": seconds,
            "s_per_1k": 1000 * seconds / max(last["step"], 1), "final_loss": last["loss"]}


def plot_loss(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over 50 steps)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    from ..atomic import atomic_write

    atomic_write(out, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return out


def machine() -> str:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return f"{cpu}, {os.cpu_count()} logical CPUs visible, torch {torch.__version__} ({capability})"


def vocabulary_section(model_dir: Path, data: str) -> list[str]:
    """What the model's vocabulary.safetensors holds and the command that made it (or how to add one)."""
    from ..conditioning.vocabulary import FILE, Vocabulary, VocabularyError

    command = f"    python -m unnoise.conditioning.vocabulary --model {model_dir} --data {data}"
    try:
        vocab = Vocabulary.load(model_dir)
    except VocabularyError as e:
        return ["## Vocabulary (prompt snapping)", "", f"**Broken:** {e}. Rebuild it with", "", command, ""]
    if vocab is None:
        return ["## Vocabulary (prompt snapping)", "", "None: prompts are painted as typed. Add one (the training "
                "captions and their MiniLM sentence vectors) with", "", command, ""]
    size = (model_dir / FILE).stat().st_size / 2**20
    return [
        "## Vocabulary (prompt snapping)", "",
        f"`{FILE}` ({size:.1f} MiB): {len(vocab.captions):,} training captions with their MiniLM sentence vectors "
        "(fp16), made by", "", command, "",
        f"A prompt that is not a training caption is painted as its nearest caption (cosine ≥ {vocab.threshold:g}); "
        "`--no-snap` turns it off (README, \"Prompt snapping\").", "",
    ]


def write_card(run: str | os.PathLike, model_dir: str | os.PathLike, name: str, notes: str = "") -> Path:
    """MODEL.md + loss.png in model_dir, from run's config.json and metrics.jsonl."""
    run, model_dir = Path(run), Path(model_dir)
    rec = run_record(run)
    cfg: TrainConfig = rec["cfg"]
    info = json.loads((model_dir / "unnoise.json").read_text())
    net = json.loads((model_dir / "config.json").read_text())
    size = (model_dir / "model.safetensors").stat().st_size / 2**20
    plot_loss(rec["rows"], model_dir / "loss.png")
    defaults = {**PAINT_DEFAULTS, **info.get("defaults", {})}
    lines = [
        f"# `{name}` — unnoise model card", "",
        f"Text-to-image diffusion model trained on **{cfg.data}** ({info['channels']} × {info['image_size']} × "
        f"{info['image_size']}), conditioned on MiniLM-L6 sentence-encoder token states "
        f"(`{info['text_encoder']}`).", "",
        "## Training", "",
        "```bash", *train_commands(cfg), "```", "",
        f"* steps: **{rec['steps']}** of {cfg.max_steps} planned (batch {cfg.batch_size}; the weights are the EMA, "
        f"decay {cfg.ema_decay})",
        f"* compute time: **{rec['seconds'] / 3600:.2f} h** ({rec['s_per_1k']:.0f} s per 1 000 steps, summed from "
        "metrics.jsonl)",
        f"* machine: {machine()}",
        f"* final training loss (mean of the last 50 steps): {rec['final_loss']:.4f} — curve in `loss.png`",
        f"* prediction: {cfg.prediction_type}, schedule {cfg.schedule} (T = {cfg.num_train_steps}), loss weighting "
        f"{cfg.loss_weighting}, caption dropout {cfg.cond_dropout:g}, lr {cfg.lr:g} (warm-up {cfg.warmup_steps}), "
        f"items drawn by {cfg.balance}, captions drawn {'by names' if cfg.caption_draw == 'names' else 'uniformly'}",
        "",
        "## Network", "",
        (f"UNet from `{cfg.init}`{', doubled in width by Net2Net' if cfg.init_widen else ''}" if cfg.init is not None
         else f"UNet preset `{cfg.model_size}`") + f": patch {net.get('patch_size')}, widths "
        f"{[net['base_channels'] * m for m in net['channel_mults']]}, self-attention at levels "
        f"{net.get('attention_levels')}, cross-attention at {net.get('cross_attention_levels')}; weights "
        f"{size:.1f} MiB ({info.get('dtype', 'float16')}).", "",
        "## Defaults", "",
        f"`unnoise paint` uses {defaults['sampler']}, {defaults['steps']} steps, guidance "
        f"{defaults['guidance']:g}.", "",
    ]
    lines += vocabulary_section(model_dir, cfg.data)
    if notes:
        lines += [notes.rstrip(), ""]
    from ..atomic import write_text_atomic

    return write_text_atomic(model_dir / "MODEL.md", "\n".join(lines))
