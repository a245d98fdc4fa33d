"""Crash consistency of `unnoise distill` (issue 29, items 1, 3 and 5 as `unnoise train` has them): real tiny
distillation runs killed (SIGKILL) by UNNOISE_FAULT_AT at the first save and mid-save continue with --resume
(or start over where nothing complete was saved) and end bit for bit where an uninterrupted run ends, each step
logged once, no temporary file left; a corrupt newest checkpoint and a garbage `latest` fall back."""

import json
import os
from pathlib import Path

import pytest
from test_crash import Unnoise, dead_pid, debris, steps_logged

from unnoise.training import checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny digits teacher of 2 steps: what it paints does not matter here, only that the runs are exact."""
    from unnoise.training.config import TrainConfig
    from unnoise.training.loop import train

    out = tmp_path_factory.mktemp("teacher") / "run"
    return train(TrainConfig(data="digits", out=str(out), image_size=16, model_size="tiny", max_steps=2, batch_size=8,
                             warmup_steps=1, sample_every=0, checkpoint_every=1000, seed=3, threads=1), quiet=True)


def distill_argv(teacher: Path, out: Path, max_steps: int = 4, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--out", str(out), "--steps", "1", "--batch-size", "4",
            "--ode-steps", "8", "--max-steps", str(max_steps), "--checkpoint-every", "2", "--log-every", "1",
            "--warmup-steps", "2", "--threads", "1", *extra]


def weights(run: Path) -> dict[str, bytes]:
    """What must equal the uninterrupted run bit for bit: the last checkpoint's tensors and the student."""
    out = {f"ck/{f.name}": f.read_bytes() for f in checkpoint.latest_path(run).glob("*.safetensors")}
    out["model"] = (run / "model" / "model.safetensors").read_bytes()
    return out


# (fault, resume): each process is killed the N-th time it reaches that point (checkpoints every 2 steps of 4)
PLAN = [
    ("checkpoint-file:1", False),  # the first save, model.safetensors only: nothing complete
    ("checkpoint-file:2", False),  # a fresh start on it (not "already holds a run"), killed in its first save
    ("checkpoint-file:3", True),  # --resume with nothing complete: starts over, killed in its first save again
    ("metrics:1", True),  # still nothing complete: from step 0, a torn metrics line at step 1
    ("checkpoint-renamed:1", True),  # step-2 in place, `latest` not yet moved
    ("metrics:1", True),  # from step 2: a torn line at step 3
    ("checkpoint-file:2", True),  # from step 2: mid-save of step 4
]


@pytest.mark.slow
def test_distill_runs_killed_in_their_first_save_and_mid_save_resume_bit_exact(teacher, tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    unnoise = Unnoise(tmp_path / "logs")
    try:
        code, log = unnoise(*distill_argv(teacher, ref))
        assert code == 0, log[-3000:]
        for fault, resume in PLAN:
            code, log = unnoise(*distill_argv(teacher, run, 4, *(["--resume"] if resume else [])), fault=fault)
            assert code == -9, f"{fault}: not killed (exit {code}): {log[-3000:]}"
        assert checkpoint.latest_path(run).name == "step-00000002"
        code, log = unnoise(*distill_argv(teacher, run, 4, "--resume"))
        assert code == 0, log[-3000:]
        assert "resumed from" in log and "Traceback" not in log
    finally:
        unnoise.close()
    assert weights(run) == weights(ref)
    assert steps_logged(run) == steps_logged(ref) == [1, 2, 3, 4]
    assert debris(run) == [] and debris(ref) == []


def test_distill_resume_with_nothing_complete_starts_over_saying_so(teacher, tmp_path, cli):
    """A run whose first save never completed (a half-written hidden folder, a torn metrics line): --resume
    starts over from step 0 in one line, and a fresh start on it is not refused."""
    straight = tmp_path / "straight"
    assert cli(distill_argv(teacher, straight, 2)).code == 0
    for name, resume in (("resumed", ["--resume"]), ("fresh", [])):
        run = tmp_path / name
        half = run / "checkpoints" / f".step-00000002.tmp-{dead_pid()}-0"
        half.mkdir(parents=True)
        (half / "model.safetensors").write_bytes(b"half a file")
        saved = json.loads((straight / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(saved | {"out": str(run)}))
        (run / "metrics.jsonl").write_text((straight / "metrics.jsonl").read_text().splitlines()[0] + '\n{"st')
        res = cli(distill_argv(teacher, run, 2, *resume))
        assert res.code == 0, res.err
        if resume:
            assert f"--resume: no complete checkpoint in {run / 'checkpoints'}; starting over from step 0" in res.err
        assert steps_logged(run) == [1, 2] and debris(run) == []
        assert weights(run) == weights(straight)
    res = cli(distill_argv(teacher, tmp_path / "fresh", 2))  # now it holds a complete checkpoint: refused
    assert res.code == 2 and "already holds a run" in res.err


def test_distill_resume_falls_back_past_a_corrupt_checkpoint_and_sweeps_debris(teacher, tmp_path, cli):
    """--resume with the newest checkpoint broken and `latest` garbage resumes from the one before, says so
    in one line each, sweeps what dead writers left, trims metrics.jsonl to the resumed step, and ends where
    an unbroken run ends."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert cli(distill_argv(teacher, straight, 6)).code == 0
    assert cli(distill_argv(teacher, run, 4)).code == 0
    newest = checkpoint.latest_path(run)
    assert newest.name == "step-00000004"
    raw = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(raw[: len(raw) // 3])
    (run / "checkpoints" / "latest").write_bytes(os.urandom(40))
    pid = dead_pid()
    (run / "checkpoints" / f".latest.tmp-{pid}").write_text('"step-00000006"')
    (run / f".model.tmp-{pid}").mkdir()
    (run / f".config.json.tmp-{pid}-3").write_text("{")
    res = cli(distill_argv(teacher, run, 6, "--resume"))
    assert res.code == 0, res.err
    assert f"{run / 'checkpoints' / 'latest'} is unreadable" in res.err
    assert f"corrupt checkpoint {newest}" in res.err and "falling back to the previous checkpoint" in res.err
    assert "resumed from" in res.err and "at step 2" in res.err
    assert weights(run) == weights(straight)
    assert steps_logged(run) == list(range(1, 7))
    assert debris(run) == []


def test_distill_resume_sweeps_debris_and_trims_metrics(teacher, tmp_path, cli):
    """What dead writers left (.latest.tmp-PID, .model.tmp-PID, a hidden checkpoint folder) is swept on
    --resume, and metrics.jsonl is cut back to the resumed step (rows of lost steps, a torn line), so each step
    is logged once; a writer still running is left alone."""
    run = tmp_path / "run"
    assert cli(distill_argv(teacher, run, 2)).code == 0
    rows = (run / "metrics.jsonl").read_text().splitlines()
    lost = [json.dumps(json.loads(rows[-1]) | {"step": 3}), json.dumps(json.loads(rows[-1]) | {"step": 4})[:20]]
    (run / "metrics.jsonl").write_text("\n".join(rows + lost) + "\n")
    pid = dead_pid()
    (run / "checkpoints" / f".latest.tmp-{pid}").write_text('"step-00000004"')
    (run / "checkpoints" / f".step-00000004.tmp-{pid}-0").mkdir()
    (run / f".model.tmp-{pid}").mkdir()
    (run / f".model.tmp-{pid}" / "model.safetensors").write_bytes(b"")
    live = run / "checkpoints" / f".latest.tmp-{os.getppid()}"  # a writer still running: left alone
    live.write_text("")
    res = cli(distill_argv(teacher, run, 4, "--resume"))
    assert res.code == 0, res.err
    assert "swept" in res.err and "by a process that died mid-write" in res.err
    assert steps_logged(run) == [1, 2, 3, 4]
    assert debris(run) == [str(live.relative_to(run))]
