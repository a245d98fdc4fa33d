"""A model card (MODEL.md) and loss curve for an exported student, from its distillation run's records.

Like the training card (training/card.py) it says what a user needs to trust or reproduce the model: the
teacher, the exact `unnoise distill` command (rebuilt from the run's config.json: every setting that differs
from the defaults), the steps, the wall time and the machine, and how the student paints by default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..training.card import machine, plot_loss, vocabulary_section
from .config import DistillConfig

# Fields `unnoise distill` has no option for: a non-default value is named after the command.
_NO_FLAG = ("loss", "cond_dropout", "weight_decay", "adam_betas", "grad_clip", "keep_checkpoints")


def distill_command(cfg: DistillConfig) -> str:
    """The `unnoise distill …` command that reproduces cfg (non-default settings only)."""
    default = DistillConfig(teacher=cfg.teacher, out=cfg.out)
    parts = ["unnoise distill", f"--teacher {cfg.teacher}", f"--out {cfg.out}"]
    hidden = []
    for f in dataclasses.fields(cfg):
        name, value = f.name, getattr(cfg, f.name)
        if name in ("teacher", "out") or value == getattr(default, name) or value is None:
            continue
        if name in _NO_FLAG:
            hidden.append(f"{name}={value}")
            continue
        if isinstance(value, (tuple, list)):
            value = ",".join(f"{v:g}" for v in value)
        flag = f"--{name.replace('_', '-')}"
        parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(parts) + (f"   # config.json also sets {', '.join(hidden)}" if hidden else "")


def _root(training: dict) -> str | None:
    """For a student of a student: the diffusion model at the root of the chain (by bundled name), else None."""
    from ..modeldir import ModelDirError, load_info

    try:
        teacher = load_info(training["distilled_from"])[0].training
    except (ModelDirError, OSError, KeyError):
        return None
    return teacher.get("distilled_from")


def write_distill_card(run: str | os.PathLike, model_dir: str | os.PathLike, name: str, notes: str = "") -> Path:
    """MODEL.md + loss.png in model_dir (an exported student), from run's config.json and metrics.jsonl."""
    from ..atomic import atomic_write

    run, model_dir = Path(run), Path(model_dir)
    cfg = DistillConfig.from_dict(json.loads((run / "config.json").read_text()))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    info = json.loads((model_dir / "unnoise.json").read_text())
    net = json.loads((model_dir / "config.json").read_text())
    training, defaults = info["training"], info["defaults"]
    size = (model_dir / "model.safetensors").stat().st_size / 2**20
    plot_loss(rows, model_dir / "loss.png")
    calls = defaults["steps"]
    teacher_root = _root(training)  # a student of a student: the diffusion model its chain began with
    lines = [
        f"# `{name}` — unnoise model card", "",
        f"A {calls}-call student of the `{training['distilled_from']}` model ({info['dataset']}, {info['channels']} × "
        f"{info['image_size']} × {info['image_size']}), distilled by the {training['method']} method "
        "(docs/distill.md).  The guidance scale w is a network input, so each step is one network call on "
        "a single batch (no classifier-free doubling, no negative prompt).", "",
        "## Distillation", "",
        "```bash", distill_command(cfg), "```", "",
        f"* steps: **{training['steps']}** of {cfg.max_steps} planned (batch {cfg.batch_size}; the weights are the "
        f"EMA, decay {cfg.ema_decay:g})",
        f"* compute time: **{training['wall_s'] / 60:.1f} min** of wall time"
        + (f" ({training['wall_s_total'] / 60:.1f} min with the student it started from, `{cfg.init}`)"
           if training.get("init") else "")
        + (f" ({training['wall_s_total'] / 60:.1f} min of distillation from `{teacher_root}`, with the teacher's own)"
           if teacher_root else ""),
        f"* machine: {machine()}",
        f"* final training loss (mean of the last {cfg.log_every} steps): {rows[-1]['loss']:.4f} — curve in `loss.png`"
        if rows else "* no metrics logged",
        f"* teacher weights: sha256 {training['teacher_digest']}… (a resume or `--init` checks it)",
        f"* exported with `unnoise export {run} --out {model_dir} --card {name}`"
        + (" (`--notes`: the sections after the vocabulary)" if notes else ""), "",
        "## Network", "",
        (f"The teacher's UNet twice as wide (patch {net.get('patch_size')}, widths "
         if cfg.student_width == 2 else f"The teacher's UNet (patch {net.get('patch_size')}, widths ")
        + f"{[net['base_channels'] * m for m in net['channel_mults']]})"
        + (", guidance-scale embedding included" if teacher_root else " plus a guidance-scale embedding")
        + (", widened from the teacher by Net2Net duplication (the same function at the start)"
           if cfg.student_width == 2 else ", initialised from the teacher")
        + f"; weights {size:.1f} MiB (float16).  It learned w ∈ [{cfg.guidance_min:g}, {cfg.guidance_max:g}].", "",
        "## Defaults", "",
        f"`unnoise paint --model {name}` uses {defaults['sampler']}, {calls} step{'s' * (calls != 1)} on the "
        f"{defaults.get('spacing', 'default')} spacing, guidance {defaults['guidance']:g}.", "",
    ]
    vocabulary = vocabulary_section(model_dir, cfg.data or info["dataset"])
    if (model_dir / "vocabulary.safetensors").exists():  # the export copied the teacher's
        vocabulary[2:2] = ["The teacher's, copied in by the export: the student reads prompts as its teacher does.", ""]
    lines += vocabulary
    if notes:
        lines += [notes.rstrip(), ""]
    out = model_dir / "MODEL.md"
    atomic_write(out, lambda p: p.write_text("\n".join(lines)))
    return out
