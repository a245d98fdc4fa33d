"""Crash consistency: real `unnoise train` / `unnoise export` runs killed (SIGKILL, as `kill -9`) at every write
point by UNNOISE_FAULT_AT, each continued with `--resume` (or started over where nothing was saved), end with
weights, sample grids and metrics equal to an uninterrupted run; plus one test per defect of issue 29 (items
1, 2, 3, 5) that fails without its fix."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from unnoise.errors import UnnoiseError
from unnoise.training import checkpoint

FAULT_ENV = "UNNOISE_FAULT_AT"  # unnoise.atomic.FAULT_ENV, spelled out so the item tests run without it
TRAIN = ["train", "--data", "digits", "--image-size", "16", "--model-size", "tiny", "--batch-size", "8",
         "--max-steps", "8", "--checkpoint-every", "2", "--sample-every", "4", "--log-every", "1",
         "--warmup-steps", "2", "--seed", "1", "--threads", "1"]

# A server that pays for `import torch` once and forks one process per command; each child runs the real
# `unnoise` entry point (unnoise.cli.main, what `python -m unnoise` calls) and the server answers with its
# exit code (-9: killed).  The server itself never runs a torch op, so forking it is safe.
SERVER = r"""
import json, os, sys, traceback
import torch, torch._dynamo, torch.optim  # noqa: F401  (the slow imports, once)
import unnoise.cli, unnoise.training.loop, unnoise.conditioning.text, unnoise.data.digits  # noqa: F401
import unnoise.generation, unnoise.images, unnoise.modeldir, unnoise.models  # noqa: F401
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.pop("UNNOISE_FAULT_AT", None)
        os.environ.update(job["env"])
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1), os.dup2(fd, 2)
        code = 0
        try:
            unnoise.cli.main(job["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class Unnoise:
    """`unnoise ARGV…` in a fresh process forked from a warm server: (exit code, its output)."""

    def __init__(self, logs: Path):
        self.logs, self.n = logs, 0
        logs.mkdir(parents=True, exist_ok=True)
        self.server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)

    def __call__(self, *argv: str, fault: str | None = None) -> tuple[int, str]:
        self.n += 1
        log = self.logs / f"{self.n:02d}.log"
        env = {FAULT_ENV: fault} if fault else {}
        self.server.stdin.write(json.dumps({"argv": list(argv), "env": env, "log": str(log)}) + "\n")
        self.server.stdin.flush()
        code = int(self.server.stdout.readline())
        return code, log.read_text()

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


def debris(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


def file_bytes(run: Path) -> dict[str, bytes]:
    """What must equal the uninterrupted run bit for bit: the last checkpoint, the model, the sample grids."""
    last = checkpoint.latest_path(run)
    out = {f"ck/{f.name}": f.read_bytes() for f in last.glob("*.safetensors")}
    out["model"] = (run / "model" / "model.safetensors").read_bytes()
    out.update({f"samples/{f.name}": f.read_bytes() for f in (run / "samples").glob("*")})
    return out


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# (fault, resume): each entry is one process killed at the N-th time it reaches that point.  The comments say
# where the kill lands, counting from the checkpoint the process resumes (checkpoints every 2 steps, grids
# every 4, 8 steps in all); the test checks only that each process was killed and what the end must be.
PLAN = [
    ("metrics:1", False),  # a torn metrics line at step 1 of a fresh run
    ("checkpoint-file:1", True),  # first save, only model.safetensors in its hidden folder: --resume starts over
    ("checkpoint-file:3", False),  # first save again, mid-way: a fresh start is allowed (nothing complete)
    ("replace:1", True),  # the trim of metrics.jsonl back to step 0, before it replaces the file
    ("replace:2", True),  # config.json, before it replaces the file
    ("checkpoint-file:2", True),  # first save, model and ema written
    ("checkpoint-renamed:1", True),  # step-2 in place, `latest` not yet written
    ("metrics:1", True),  # from step 2: a torn line at step 3
    ("metrics:2", True),  # from step 2: a torn line at step 4
    ("samples:1", True),  # from step 2: grid of step 4 written, not yet in place
    ("replace:4", True),  # from 2: trim, config, grid 4's .txt, then `latest` → step 4 (the swap)
    ("checkpoint-file:1", True),  # from 4: mid-save of step 6
    ("checkpoint-file:2", True),  # from 4: mid-save of step 6, model and EMA written
    ("checkpoint-renamed:1", True),  # from 4: step-6 in place, `latest` still step-4
    ("metrics:1", True),  # from 6: a torn line at step 7
    ("checkpoint-file:3", True),  # from 6: grid 8 made, mid-save of step 8
    ("samples:1", True),  # from 6: grid of step 8 before it replaces the one the last process made
    ("replace:3", True),  # from 6: trim, config.json, grid 8's .txt
    ("checkpoint-renamed:1", True),  # from 6: step-8 in place, `latest` still step-6
    ("export:1", True),  # from 8: the model written in hiding, not yet renamed to model/
]
EXPORTS = ["export-swap:1", "export:1"]  # `unnoise export RUN --out RUN/model`, killed


@pytest.mark.slow
def test_runs_killed_at_every_write_resume_bit_exact(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    started = time.perf_counter()
    # one kill through the real `python -m unnoise` process too: killed during the very first checkpoint
    real = subprocess.run([sys.executable, "-m", "unnoise", *TRAIN, "--out", str(run)], capture_output=True,
                          check=False, text=True, env={**os.environ, FAULT_ENV: "checkpoint-file:2"}, timeout=300)
    assert real.returncode == -9, real.stderr[-2000:]
    assert debris(run) and checkpoint.latest_path(run) is None
    unnoise = Unnoise(tmp_path / "logs")
    try:
        code, log = unnoise(*TRAIN, "--out", str(ref))
        assert code == 0, log[-3000:]
        kills = 1
        for fault, resume in PLAN:
            code, log = unnoise(*TRAIN, "--out", str(run), *(["--resume"] if resume else []), fault=fault)
            assert code == -9, f"{fault}: not killed (exit {code}): {log[-3000:]}"
            kills += 1
            for ck in (run / "checkpoints").glob("step-*"):  # whatever is in place is complete and loads
                checkpoint.load(ck)
        code, log = unnoise(*TRAIN, "--out", str(run), "--resume")
        assert code == 0, log[-3000:]
        assert "falling back" not in log and "Traceback" not in log
        for fault in EXPORTS:
            code, log = unnoise("export", str(run), "--out", str(run / "model"), "--fp32", fault=fault)
            assert code == -9, f"export {fault}: not killed (exit {code}): {log[-3000:]}"
            kills += 1
        assert not (run / "model").exists()  # the first kill left it moved aside …
        code, log = unnoise(*TRAIN, "--out", str(run), "--resume")  # … which a resume puts back, then exports
        assert code == 0, log[-3000:]
    finally:
        unnoise.close()
    seconds = time.perf_counter() - started
    print(f"{kills} kills, {unnoise.n + 1} processes, {seconds:.1f} s")
    assert kills >= 20
    assert file_bytes(run) == file_bytes(ref)  # weights, optimizer, EMA, model, grids: bit for bit
    assert steps_logged(run) == steps_logged(ref) == list(range(1, 9))
    assert debris(run) == [] and debris(ref) == []
    for grid in (run / "samples").glob("*.png"):
        Image.open(grid).verify()


# --- one test per defect (issue 29 items 1, 2, 3, 5), fast, in this process ---------------------------------

TINY = {"image_size": 16, "model_size": "tiny", "batch_size": 8, "warmup_steps": 2, "log_every": 1,
        "sample_every": 0, "checkpoint_every": 2, "seed": 2, "threads": 1}


def tiny_train(out: Path, max_steps: int, resume: bool = False, **kw):
    from unnoise.training.config import TrainConfig
    from unnoise.training.loop import resume_config, train

    cfg = resume_config(out, {"max_steps": max_steps}) if resume else TrainConfig(
        data="digits", out=str(out), max_steps=max_steps, **{**TINY, **kw})
    return train(cfg, resume=resume, quiet=True)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def cli_train(out: Path, max_steps: int, *extra: str) -> list[str]:
    flags = {"--image-size": 16, "--model-size": "tiny", "--batch-size": 8, "--warmup-steps": 2, "--log-every": 1,
             "--sample-every": 0, "--checkpoint-every": 2, "--seed": 2, "--threads": 1}
    return ["train", "--data", "digits", "--out", str(out), "--max-steps", str(max_steps),
            *[str(x) for kv in flags.items() for x in kv], *extra]


def test_a_run_killed_in_its_first_save_can_resume_or_start_over(tmp_path, cli):
    """Item 1: a run whose first checkpoint never completed (a hidden half-written folder, no `latest`) is
    continued by --resume from step 0, saying so, and a fresh start on it is not refused."""
    straight = tmp_path / "straight"
    assert cli(cli_train(straight, 2)).code == 0
    for name, resume in (("resumed", ["--resume"]), ("fresh", [])):
        run = tmp_path / name
        (run / "checkpoints" / f".tmp-step-00000002-{dead_pid()}").mkdir(parents=True)  # what the issue found
        half = run / "checkpoints" / f".step-00000002.tmp-{dead_pid()}-0"
        half.mkdir()
        (half / "model.safetensors").write_bytes(b"half a file")
        saved = json.loads((straight / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(saved | {"out": str(run)}))
        row = {"step": 1, "loss": 1.0, "grad_norm": 1, "lr": 1, "images_per_s": 1, "time": 0}
        (run / "metrics.jsonl").write_text(json.dumps(row) + '\n{"st')  # and a line cut short
        res = cli(cli_train(run, 2, *resume))
        assert res.code == 0, res.err
        if resume:
            assert "no complete checkpoint" in res.err and "starting over" in res.err
        assert steps_logged(run) == [1, 2] and debris(run) == []
        for f in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
            assert (checkpoint.latest_path(run) / f).read_bytes() == (checkpoint.latest_path(straight) / f).read_bytes()
    res = cli(cli_train(tmp_path / "fresh", 2))  # now it holds a complete checkpoint: refused
    assert res.code == 2 and "already holds a run" in res.err


def test_export_reads_the_run_it_is_given(tmp_path, cli):
    """Item 2: a moved run exports; a copy exports its own checkpoint, not the original's; a run without a
    checkpoint is one line naming it, without a "--resume:" prefix."""
    from safetensors.torch import load_file

    original = tmp_path / "original"
    tiny_train(original, 2)
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(original, copy)
    tiny_train(original, 4, resume=True)  # the original goes on; the copy stays at step 2
    res = cli(["export", str(copy), "--out", str(tmp_path / "m"), "--fp32"])
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "m" / "unnoise.json").read_text())["training"]["steps"] == 2
    ema = load_file(str(copy / "checkpoints" / "step-00000002" / "ema.safetensors"))
    exported = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert all(torch.equal(exported[k], ema[k]) for k in exported)
    moved = tmp_path / "moved"
    original.rename(moved)
    assert cli(["export", str(moved), "--out", str(tmp_path / "m2")]).code == 0
    shutil.rmtree(moved / "checkpoints")
    res = cli(["export", str(moved), "--out", str(tmp_path / "m3")])
    assert res.code == 2 and res.err.strip() == f"error: export: no complete checkpoint in {moved}"


def test_export_builds_the_vocabulary_of_the_runs_data_before_the_card(tmp_path, cli):
    """--vocabulary: the snapping vocabulary of the run's data (digits: its captions) lands in the model
    directory, and the card, written after it, describes it."""
    from unnoise.conditioning.vocabulary import Vocabulary

    run = tmp_path / "run"
    tiny_train(run, 2)
    res = cli(["export", str(run), "--out", str(tmp_path / "m"), "--vocabulary", "--card", "tiny-digits"])
    assert res.code == 0, res.err
    vocab = Vocabulary.load(tmp_path / "m")
    assert "a handwritten seven" in vocab.known and vocab.suffixes == []
    assert f"{len(vocab.captions):,} training captions" in (tmp_path / "m" / "MODEL.md").read_text()


def _corruptions(raw: bytes) -> dict[str, bytes]:
    return {"truncated": raw[: len(raw) // 2], "empty": b"", "random": os.urandom(4096),
            "huge-header": struct.pack("<Q", 2**62) + raw[8:]}


@pytest.mark.parametrize("kind", ["truncated", "empty", "random", "huge-header"])
def test_corrupt_weights_are_one_line_naming_the_file(tmp_path, kind):
    """Item 3: a broken model.safetensors is an UnnoiseError (ValueError) naming the file, not a traceback."""
    from unnoise.models import UNet, UNetConfig

    d = UNet(UNetConfig.tiny()).save_pretrained(tmp_path / "net")
    (d / "model.safetensors").write_bytes(_corruptions((d / "model.safetensors").read_bytes())[kind])
    with pytest.raises(UnnoiseError) as e:
        UNet.from_pretrained(d)
    assert isinstance(e.value, ValueError) and str(d / "model.safetensors") in str(e.value) and "\n" not in str(e.value)


def test_paint_with_corrupt_weights_exits_2_in_one_line(tmp_path, cli):
    import shutil

    from unnoise.modeldir import resolve

    model = tmp_path / "digits"
    shutil.copytree(resolve("digits"), model)
    (model / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"\0" * 64)
    res = cli(["paint", "a handwritten seven", "--model", str(model), "--steps", "1", "--out", str(tmp_path / "x.png")])
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and str(model / "model.safetensors") in res.err


def test_resume_falls_back_past_a_corrupt_checkpoint_and_a_garbage_latest(tmp_path, capsys):
    """Item 3: --resume with the newest checkpoint broken resumes from the one before, says so, and ends
    exactly where an unbroken run ends; a garbage `latest` is ignored, said so."""
    tiny_train(tmp_path / "straight", 6)
    run = tmp_path / "run"
    tiny_train(run, 4)
    newest = checkpoint.latest_path(run)
    assert newest.name == "step-00000004"
    raw = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(raw[: len(raw) // 3])
    (run / "checkpoints" / "latest").write_bytes(os.urandom(40))
    capsys.readouterr()
    tiny_train(run, 6, resume=True)
    err = capsys.readouterr().err
    assert "latest" in err and "unreadable" in err
    assert f"corrupt checkpoint {newest}" in err and "falling back" in err
    for f in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        good = checkpoint.latest_path(tmp_path / "straight") / f
        assert (checkpoint.latest_path(run) / f).read_bytes() == good.read_bytes()
    assert steps_logged(run) == list(range(1, 7))


def test_resume_sweeps_debris_and_trims_history(tmp_path):
    """Item 5: what dead writers left (.latest.tmp-PID, .model.tmp-PID, a 0-byte grid from lost steps) is swept
    on resume, and metrics.jsonl is cut back to the resumed step, so each step is logged once."""
    run = tmp_path / "run"
    tiny_train(run, 4)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    # a kill after step 5's row, then an untrimmed resume from step 4 that died at once: steps go backwards
    extra = [json.dumps(json.loads(rows[-1]) | {"step": 5}), json.dumps(json.loads(rows[-1]) | {"step": 5})[:20]]
    (run / "metrics.jsonl").write_text("\n".join(rows + extra) + "\n")
    pid = dead_pid()
    (run / "checkpoints" / f".latest.tmp-{pid}").write_text('"step-00000006"')
    (run / f".model.tmp-{pid}").mkdir()
    (run / f".model.tmp-{pid}" / "model.safetensors").write_bytes(b"")
    (run / "samples").mkdir()
    (run / "samples" / "step-00000006.png").write_bytes(b"")
    live = run / "checkpoints" / f".latest.tmp-{os.getppid()}"  # a writer still running: left alone
    live.write_text("")
    tiny_train(run, 6, resume=True)
    assert steps_logged(run) == list(range(1, 7))
    assert debris(run) == [str(live.relative_to(run))]
    assert not (run / "samples" / "step-00000006.png").exists()


def test_model_card_counts_each_step_once(tmp_path):
    """Item 5: a metrics.jsonl written before resumes trimmed it (steps going backwards) gives the card the
    history that made the model: each step once, the later rows, compute time never subtracted."""
    from unnoise.training.card import run_record
    from unnoise.training.config import TrainConfig

    cfg = TrainConfig(data="digits", out=str(tmp_path), batch_size=10)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    row = {"loss": 1.0, "grad_norm": 1.0, "lr": 1e-3, "images_per_s": 10.0, "time": 0}
    steps = [10, 20, 30, 40, 50, 30, 40, 50, 60]  # killed after 50, resumed from the checkpoint at 20
    lines = [json.dumps(row | {"step": s, "loss": s / 100 if i < 5 else s / 1000}) for i, s in enumerate(steps)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 70, "lo')  # the last line cut short
    rec = run_record(tmp_path)
    assert [r["step"] for r in rec["rows"]] == [10, 20, 30, 40, 50, 60]
    assert rec["rows"][2]["loss"] == 0.03 and rec["steps"] == 60
    assert rec["seconds"] == pytest.approx(60 * 10 / 10.0)
