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

from unnoise import atomic
from unnoise.errors import UnnoiseError
from unnoise.training import checkpoint

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
        env = {atomic.FAULT_ENV: fault} if fault else {}
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
    ("metrics:2", True),  # from step 2: a torn line at step 4
    ("samples:1", True),  # from step 2: grid of step 4 written, not yet in place
    ("replace:4", True),  # from 2: trim, config, grid 4's .txt, then `latest` → step 4 (the swap)
    ("checkpoint-file:1", True),  # from 4: mid-save of step 6
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
                          text=True, env={**os.environ, atomic.FAULT_ENV: "checkpoint-file:2"}, timeout=300)
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
