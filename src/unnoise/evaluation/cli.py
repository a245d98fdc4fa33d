"""`unnoise eval …`: quality, sweeps and the digit classifier.  Heavy imports stay inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..cli_help import SEED_HELP, model_default
from ..errors import UnnoiseError

app = typer.Typer(
    help="Measure a model: Fréchet distances (FD-ENL0, FD-digits), prompt adherence, NFE and guidance sweeps.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class EvalError(UnnoiseError, ValueError):
    """Bad evaluation settings (one-line error)."""


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EvalError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(not 1 <= v <= 1000 for v in values):
        raise EvalError(f"{what} must be integers from 1 to 1000, got {text!r}")
    return values


def _floats(text: str, what: str) -> list[float]:
    import math

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EvalError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or not 0 <= v <= 50 for v in values):
        raise EvalError(f"{what} must be numbers from 0 to 50, got {text!r}")
    return values


def _setup(model: str, threads: Optional[int], num_images: int):
    import torch

    from ..modeldir import load_info
    from ..pipeline import Painter

    if not 2 <= num_images <= 100_000:
        raise EvalError(f"--num-images must be from 2 to 100000, got {num_images}")
    if threads is not None:
        if not 1 <= threads <= 256:
            raise EvalError(f"--threads must be from 1 to 256, got {threads}")
        torch.set_num_threads(threads)
    info, path = load_info(model)
    if info.dataset not in ("digits", "emoji", "emoji-styles"):
        # the judges (a digit classifier, emoji retrieval, FD against the training set) know only those data
        kind = "a diffusers pipeline folder" if info.scheduler else f"trained on {info.dataset!r}"
        raise EvalError(f"{path} is {kind}: unnoise eval scores digits and emoji models only")
    return Painter.from_pretrained(model)


def _check_dependencies(judge) -> None:
    """The optional packages this judge needs, checked before anything is painted (not after minutes of it)."""
    from .features import check_enl0
    from .quality import EmojiJudge

    if isinstance(judge, EmojiJudge) or getattr(judge, "fd_enl0", False):
        check_enl0()


@app.command()
def quality(
    model: str = typer.Option("emoji", "--model", "-m", help="Bundled model (emoji, emoji-fast, digits, digits-fast, digits-1step) or a model directory."),
    num_images: int = typer.Option(500, "--num-images", "-n", help="Images to generate (prompts cycle over the judge's list)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=f"Sampler ({model_default('sampler')})."),
    steps: Optional[int] = typer.Option(None, "--steps", help=f"Steps ({model_default('steps')})."),
    guidance: Optional[float] = typer.Option(None, "--guidance", "-g", help=f"Guidance scale ({model_default('guidance')})."),
    seed: int = typer.Option(0, "--seed", help=f"{SEED_HELP}."),
    out: Path = typer.Option(Path("evals/quality"), "--out", "-o", help="Directory for results.json / results.md."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads."),
) -> None:
    """FD and prompt adherence at one setting (the model's defaults unless given)."""
    from .quality import EmojiJudge, Setting, evaluate, judge_for, paraphrase_report, write_table

    painter = _setup(model, threads, num_images)
    p = painter.params("", seed=0, steps=steps, sampler=sampler, guidance=guidance)
    setting = Setting(p.sampler, p.steps, p.guidance, p.spacing)
    judge = judge_for(painter)
    _check_dependencies(judge)
    report = evaluate(painter, judge, setting, num_images, seed=seed)
    rows = [report.row()]
    write_table(rows, out, f"unnoise eval quality — {model}")
    typer.echo(json.dumps(rows[0], indent=2))
    if isinstance(judge, EmojiJudge):
        for snap in (False, True) if painter.vocabulary is not None else (False,):
            para = paraphrase_report(painter, judge, setting, seed=seed, snap=snap)
            name = "paraphrases-snapped.json" if snap else "paraphrases.json"
            (out / name).write_text(json.dumps(para, indent=2) + "\n")
            how = "snapped to the vocabulary" if snap else "as typed"
            typer.echo(f"paraphrases ({how}): top-5 {para['top5']:.1%}; "
                       f"{para['prompts_mostly_right']}/{para['num_prompts']} prompts right for most seeds")
    typer.echo(f"wrote {out / 'results.md'}")


@app.command()
def styles(
    model: str = typer.Option("emoji", "--model", "-m", help="emoji, emoji-fast or a model directory trained on emoji or emoji-styles."),
    num_prompts: Optional[int] = typer.Option(None, "--num-prompts", "-n", help="At most this many names, paraphrases and held-out emoji each, evenly spaced (default: all: 60, 20, 96)."),
    seeds: int = typer.Option(4, "--seeds", help="Seeds per prompt for the retrieval goals and FD-ENL0."),
    diversity_seeds: int = typer.Option(8, "--diversity-seeds", help="Seeds per untagged name for the diversity goal."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=f"Sampler ({model_default('sampler')})."),
    steps: Optional[int] = typer.Option(None, "--steps", help=f"Steps ({model_default('steps')})."),
    guidance: Optional[float] = typer.Option(None, "--guidance", "-g", help=f"Guidance scale ({model_default('guidance')})."),
    seed: int = typer.Option(0, "--seed", help=f"{SEED_HELP}; seed + s for every prompt's s-th picture."),
    out: Path = typer.Option(Path("evals/styles"), "--out", "-o", help="Directory for results.json / results.md."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads."),
) -> None:
    """Issue 27's goals: tagged names, paraphrases as typed, held-out Noto pairs, style diversity, FD-ENL0 per style."""
    from ..atomic import write_text_atomic
    from .features import check_enl0
    from .quality import Setting
    from .style_classifier import STYLE_ASSET
    from .styles import evaluate_styles, report_lines

    if num_prompts is not None and not 1 <= num_prompts <= 1000:
        raise EvalError(f"--num-prompts must be from 1 to 1000, got {num_prompts}")
    for flag, v in (("--seeds", seeds), ("--diversity-seeds", diversity_seeds)):
        if not 2 <= v <= 100:
            raise EvalError(f"{flag} must be from 2 to 100, got {v}")
    painter = _setup(model, threads, 2)
    if painter.info.dataset not in ("emoji", "emoji-styles") or tuple(painter.shape) != (3, 32, 32):
        raise EvalError(f"{painter.path}: eval styles scores 32×32 emoji models only (this one: {painter.info.dataset!r})")
    check_enl0()
    p = painter.params("", seed=0, steps=steps, sampler=sampler, guidance=guidance)
    result = evaluate_styles(painter, Setting(p.sampler, p.steps, p.guidance, p.spacing), num_prompts=num_prompts,
                             seeds=seeds, diversity_seeds=diversity_seeds, seed=seed, echo=typer.echo)
    accuracy = json.loads((STYLE_ASSET / "config.json").read_text())["test_accuracy"]
    result["style_classifier_accuracy"] = accuracy
    lines = report_lines(result, accuracy)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(out / "results.md", f"# unnoise eval styles — {model}\n\n" + "\n".join(lines) + "\n")
    typer.echo("\n".join(lines))
    typer.echo(f"wrote {out / 'results.json'} and {out / 'results.md'}")


@app.command()
def sweep(
    model: str = typer.Option("emoji", "--model", "-m", help="Bundled model (emoji, emoji-fast, digits, digits-fast, digits-1step) or a model directory."),
    over: str = typer.Option("nfe", "--over", help="nfe (every sampler × step counts) or guidance (scales)."),
    samplers: Optional[str] = typer.Option(None, "--samplers", help="Comma-separated samplers (default: all)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Step counts for --over nfe (default: 5,10,20,50); for guidance one count (default: the model's)."),
    scales: str = typer.Option("0,1,2,3,5,7,12", "--scales", help="Guidance scales for --over guidance."),
    num_images: int = typer.Option(200, "--num-images", "-n", help="Images per point."),
    seed: int = typer.Option(0, "--seed", help=f"{SEED_HELP}, at every point."),
    out: Path = typer.Option(Path("evals/sweep"), "--out", "-o", help="Directory for results and plot.png."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads."),
) -> None:
    """Quality against network calls (every sampler) or against the guidance scale: a table and a plot."""
    from ..sampling import SAMPLERS
    from ..sampling.names import resolve_sampler
    from .plots import plot_sweep
    from .quality import DigitsJudge, Setting, evaluate, judge_for, write_table

    if over not in ("nfe", "guidance"):
        raise EvalError(f"--over must be nfe or guidance, got {over!r}")
    names = [s.strip() for s in samplers.split(",")] if samplers else [n for n, s in SAMPLERS.items() if getattr(s, "model", "denoiser") == "denoiser"]
    resolved = [resolve_sampler(n) for n in names]  # "DPM++ 2M Karras" → dpmpp_2m on the karras spacing
    step_list = _ints(steps, "--steps") if steps else None
    painter = _setup(model, threads, num_images)
    judge = judge_for(painter, fd_enl0=False) if painter.info.dataset == "digits" else judge_for(painter)
    _check_dependencies(judge)
    d = painter.params("")
    if over == "nfe":
        settings = [Setting(n, k, d.guidance, named or d.spacing) for n, named in resolved
                    for k in step_list or (5, 10, 20, 50)]
    else:
        sampler, named = resolved[0] if samplers else (d.sampler, None)
        settings = [Setting(sampler, step_list[0] if step_list else d.steps, g, named or d.spacing)
                    for g in _floats(scales, "--scales")]
    rows = []
    for s in settings:
        r = evaluate(painter, judge, s, num_images, seed=seed)
        rows.append(r.row())
        typer.echo(f"{s.label():48s} nfe {r.nfe:3d}  " + "  ".join(f"{k} {v:.4g}" for k, v in r.metrics.items()))
        write_table(rows, out, f"unnoise eval sweep --over {over} — {model}")
    plot_sweep(rows, over, judge.metric_names, out / "plot.png", title=f"{model}: {num_images} images per point"
               + (" (FD-ENL0 off for digits sweeps)" if isinstance(judge, DigitsJudge) else ""))
    typer.echo(f"wrote {out / 'results.md'} and {out / 'plot.png'}")


def _train_judge(train, out: Path, epochs: int, seed: int, threads: Optional[int]) -> dict:
    """Checks --epochs, sets the threads and runs `train(out, epochs=, seed=)` (a judge's trainer)."""
    import torch

    if not 1 <= epochs <= 100:
        raise EvalError(f"--epochs must be from 1 to 100, got {epochs}")
    if threads is not None:
        torch.set_num_threads(threads)
    return train(out, epochs=epochs, seed=seed)


_THREADS = typer.Option(None, "--threads", help="Torch CPU threads.")
_JUDGE_OUT = typer.Option(..., "--out", "-o", help="Directory for model.safetensors + config.json.")


@app.command("train-classifier")
def train_classifier_cmd(
    out: Path = _JUDGE_OUT,
    epochs: int = typer.Option(3, "--epochs", help="Passes over the 60 000 training digits."),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = _THREADS,
) -> None:
    """Train the digit classifier that judges digit adherence and FD-digits (ships in the package)."""
    from .classifier import train_classifier

    info = _train_judge(train_classifier, out, epochs, seed, threads)
    typer.echo(f"test accuracy {info['test_accuracy']:.4f} in {info['train_seconds']:.0f} s → {out}")


@app.command("train-style-classifier")
def train_style_classifier_cmd(
    out: Path = _JUDGE_OUT,
    epochs: int = typer.Option(30, "--epochs", help="Passes over the 8 740 training pictures of the emoji-styles atlases."),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = _THREADS,
) -> None:
    """Train the emoji style classifier (noto / twemoji / openmoji) that judges `eval styles` (ships in the package)."""
    from .style_classifier import train_style_classifier

    info = _train_judge(train_style_classifier, out, epochs, seed, threads)
    per = ", ".join(f"{s} {a:.4f}" for s, a in info["test_accuracy_per_style"].items())
    typer.echo(f"held-out accuracy {info['test_accuracy']:.4f} ({per}; split by emoji) "
               f"in {info['train_seconds']:.0f} s → {out}")


@app.command()
def distill(
    teacher: str = typer.Option(..., "--teacher", help="The teacher: emoji, digits or a model directory."),
    student: list[Path] = typer.Option(..., "--student",
                                       help="A distilled student's model directory (runs/…/model); repeat to compare several."),
    num_images: int = typer.Option(200, "--num-images", "-n", help="Images per point (prompts × seeds)."),
    teacher_nfe: str = typer.Option("4,8,20,50", "--teacher-nfe", help="The teacher's dpmpp_2m step counts."),
    student_nfe: str = typer.Option("1,2,4", "--student-nfe", help="The student's step counts."),
    teacher_spacing: Optional[str] = typer.Option(None, "--teacher-spacing",
                                                  help="The teacher's σ spacing (default: its own; students use theirs)."),
    reference_nfe: Optional[int] = typer.Option(None, "--reference-nfe", help="Each student row's adherence is compared, "
                                                "image by image, with the teacher's at this many calls (one of "
                                                "--teacher-nfe; default 20 if painted, else the most)."),
    out: Path = typer.Option(Path("evals/distill"), "--out", "-o", help="Directory for results and plot.png."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads."),
) -> None:
    """Teacher (dpmpp_2m at 4–50 calls) against its distilled students (1–4 calls): one table, one plot,
    and each student's adherence minus the teacher's (same prompts and seeds) with a 95 % interval."""
    from .. import schedules
    from ..distill import compare_samples
    from ..modeldir import load_model_dir
    from .plots import plot_sweep
    from .quality import judge_for, paired_difference, write_table

    if teacher_spacing is not None:
        try:
            schedules.check_spacing(teacher_spacing)
        except schedules.ScheduleError as e:
            raise EvalError(f"--teacher-spacing: {e}") from None
    nfes, student_nfes = _ints(teacher_nfe, "--teacher-nfe"), _ints(student_nfe, "--student-nfe")
    if reference_nfe is None:
        reference_nfe = 20 if 20 in nfes else max(nfes)
    elif reference_nfe not in nfes:
        raise EvalError(f"--reference-nfe {reference_nfe} is not one of --teacher-nfe {teacher_nfe}")
    painter = _setup(teacher, threads, num_images)
    judge = judge_for(painter, fd_enl0=False) if painter.info.dataset == "digits" else judge_for(painter)
    _check_dependencies(judge)
    prompts, targets = judge.distinct_prompts()
    per = max(1, num_images // len(prompts))
    labels = targets.repeat_interleave(per)
    rows, hits = [], []

    def score(who: str, name: str, images_by_nfe: dict) -> None:
        for nfe, images in images_by_nfe.items():
            metrics, h = judge.score_with_hits(images, labels)
            rows.append({"model": who, "sampler": name, "nfe": nfe, "num_images": len(images), **metrics})
            hits.append(h)
            typer.echo(f"{name:34s} nfe {nfe:3d}  " + "  ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if k in judge.metric_names))

    for i, path in enumerate(student):
        _, s_info, _ = load_model_dir(path)
        method = s_info.training.get("method", "?")
        samples = compare_samples(painter.path, path, prompts, list(range(per)),
                                  nfes if i == 0 else (), student_nfes,
                                  teacher_spacing=teacher_spacing)
        if i == 0:
            score("teacher", "teacher dpmpp_2m" + (f" {teacher_spacing}" if teacher_spacing else ""), samples["teacher"])
        label = f"student {method} ({s_info.defaults.get('sampler', 'consistency')}, K={s_info.defaults.get('steps')})"
        score("student", label + (f" {i + 1}" if any(r["sampler"] == label for r in rows) else ""), samples["student"])
    write_table(rows, out, f"unnoise eval distill — {teacher} vs {', '.join(map(str, student))}")
    ref = next(k for k, r in enumerate(rows) if r["model"] == "teacher" and r["nfe"] == reference_nfe)
    key, paired = judge.adherence, []
    lines = ["", f"## {key}: student − teacher at {reference_nfe} calls, image by image", "",
             f"Same prompts and seeds; 95 % interval by a bootstrap over the {len(prompts)} prompts.", "",
             "| sampler | nfe | difference (points) | 95 % interval |", "|---|---|---|---|"]
    for r, h in zip(rows, hits):
        if r["model"] != "student":
            continue
        d, lo, hi = paired_difference(h, hits[ref], len(prompts))
        paired.append({"sampler": r["sampler"], "nfe": r["nfe"], "metric": key, "reference_nfe": reference_nfe,
                       "difference": d, "low": lo, "high": hi})
        lines.append(f"| {r['sampler']} | {r['nfe']} | {100 * d:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
        typer.echo(f"{r['sampler']:34s} nfe {r['nfe']:3d}  {key} − teacher@{reference_nfe}: {100 * d:+.1f} points "
                   f"(95 % [{100 * lo:+.1f}, {100 * hi:+.1f}])")
    (out / "paired.json").write_text(json.dumps(paired, indent=2) + "\n")
    with open(out / "results.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    plot_sweep(rows, "nfe", judge.metric_names, out / "plot.png", title=f"{teacher}: teacher vs distilled student, {len(labels)} images per point")
    typer.echo(f"wrote {out / 'results.md'} and {out / 'plot.png'}")
