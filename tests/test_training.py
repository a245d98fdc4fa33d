"""Training: the loss falls and samples follow their captions, exact resume, crash-safe checkpoints,
NaN stops, Ctrl-C saves, and torchrun with 2 processes reproduces 1 process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SQUARE_COLOURS
from safetensors.torch import load_file

from unnoise.training import checkpoint
from unnoise.training.config import TrainConfig
from unnoise.training.ema import EMA
from unnoise.training.loop import Trainer, TrainingError, resume_config, train

COLOURS = SQUARE_COLOURS


def config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data), out=str(out), image_size=16, model_size="tiny", max_steps=20, batch_size=8,
        warmup_steps=5, lr=1e-3, log_every=5, sample_every=0, checkpoint_every=10, seed=3, threads=1,
    )
    return TrainConfig(**{**base, **kw})


def test_config_validation_and_round_trip(tmp_path):
    cfg = config(tmp_path, tmp_path / "run")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in [dict(prediction_type="score"), dict(batch_size=0), dict(schedule="zig"), dict(cond_dropout=1.5)]:
        with pytest.raises(ValueError):
            config(tmp_path, tmp_path / "run", **bad)
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 1})


def test_max_minutes_stops_with_a_checkpoint_and_a_model_and_resume_goes_on(squares, tmp_path, capsys):
    """A time-boxed run (a GPU lease, a laptop's evening) stops at the first step past its deadline, saves and
    exports like a finished run, and --resume continues it exactly."""
    run = tmp_path / "run"
    train(config(squares, run, max_steps=10_000, max_minutes=1e-6, checkpoint_every=10_000), quiet=False)
    assert "--max-minutes 1e-06 reached at step 1; continue with --resume" in capsys.readouterr().err
    assert checkpoint.load(checkpoint.latest_path(run)).step == 1 and (run / "model" / "unnoise.json").exists()
    train(resume_config(run, {"max_steps": 3, "max_minutes": 60.0}), resume=True, quiet=True)
    assert checkpoint.load(checkpoint.latest_path(run)).step == 3
    train(config(squares, tmp_path / "straight", max_steps=3), quiet=True)
    a, b = _weights(run), _weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_minutes"):
            config(squares, run, max_minutes=bad)


def test_a_run_directory_given_as_a_model_says_what_to_give_instead(squares, tmp_path):
    from unnoise import Painter
    from unnoise.modeldir import ModelDirError

    run = tmp_path / "run"
    train(config(squares, run, max_steps=2), quiet=True)
    with pytest.raises(ModelDirError, match=f"training run, not a model; it has finished: use {run / 'model'}"):
        Painter.from_pretrained(run)
    shutil.rmtree(run / "model")  # as while it trains
    with pytest.raises(ModelDirError, match=f"while it trains: unnoise export {run} --out DIR, then --model DIR"):
        Painter.from_pretrained(run)


def test_ema_warmup_and_average():
    net = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(net, decay=0.9)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0)/(10 + 0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(200):
        ema.update(net)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.shadow["weight"], torch.ones(1, 2), atol=1e-6)


def test_checkpoint_cut_mid_write_keeps_last_good(tmp_path, monkeypatch):
    model = {"w": torch.arange(4.0)}
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    checkpoint.save(tmp_path, 10, model, model, opt, {"ema_updates": 10})
    real = checkpoint.save_file
    calls = {"n": 0}

    def dies_on_second_file(tensors, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filename).write_bytes(b"half a file")
            raise OSError("simulated power cut")
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(checkpoint, "save_file", dies_on_second_file)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 20, {"w": torch.zeros(4)}, model, opt, {"ema_updates": 20})
    monkeypatch.setattr(checkpoint, "save_file", real)
    latest = checkpoint.latest_path(tmp_path)
    assert latest.name == "step-00000010"
    ck = checkpoint.load(latest)
    assert ck.step == 10 and torch.equal(ck.model["w"], torch.arange(4.0))
    assert ck.optimizer["state"][0]["step"].item() == 3.0 and ck.optimizer["param_groups"][0]["lr"] == 0.1
    # the next good save cleans the debris and moves `latest`
    checkpoint.save(tmp_path, 30, model, model, opt, {"ema_updates": 30})
    assert checkpoint.latest_path(tmp_path).name == "step-00000030"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp-" in p.name]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    model = {"w": torch.zeros(2)}
    path = checkpoint.save(tmp_path, 1, model, model, {"state": {}, "param_groups": []}, {"ema_updates": 1})
    (path / "ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="missing model.safetensors"):
        checkpoint.load(path)


def test_checkpoint_extra_tensors_round_trip_and_are_optional(tmp_path):
    """extra= (a loop's own tensors, e.g. distillation's window of targets) lands in extra.safetensors in the
    same atomic folder; a checkpoint without it loads with extra None; a garbled one is a clear error."""
    model, opt = {"w": torch.zeros(2)}, {"state": {}, "param_groups": []}
    assert checkpoint.load(checkpoint.save(tmp_path / "a", 1, model, model, opt, {"ema_updates": 1})).extra is None
    extra = {"0.x": torch.randn(2, 3), "0.cond.mask": torch.tensor([True, False])}
    path = checkpoint.save(tmp_path / "b", 2, model, model, opt, {"ema_updates": 2}, extra=extra)
    back = checkpoint.load(path).extra
    assert back.keys() == extra.keys() and all(torch.equal(back[k], v) for k, v in extra.items())
    (path / "extra.safetensors").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(path)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.latest_path(run) / "model.safetensors"))


def test_resume_is_exact(squares, tmp_path):
    train(config(squares, tmp_path / "straight"), quiet=True)
    train(config(squares, tmp_path / "split", max_steps=10), quiet=True)
    cfg = resume_config(tmp_path / "split", {"max_steps": 20})
    train(cfg, resume=True, quiet=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a = load_file(str(checkpoint.latest_path(tmp_path / "straight") / "ema.safetensors"))
    ema_b = load_file(str(checkpoint.latest_path(tmp_path / "split") / "ema.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    with pytest.raises(TrainingError, match="differ"):
        resume_config(tmp_path / "split", {"weight_decay": 0.5})


def test_balance_may_change_on_resume_and_the_change_is_recorded(squares, tmp_path):
    from unnoise.training.card import train_commands

    run = tmp_path / "run"
    train(config(squares, run, max_steps=10), quiet=True)
    train(resume_config(run, {"max_steps": 20, "balance": "families"}), resume=True, quiet=True)
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert saved.balance == "families"
    assert saved.extra["history"] == [{"step": 10, "changes": {"balance": ["items", "families"]}}]
    first, then = train_commands(saved)
    assert "--balance" not in first and "--max-steps 20" in first
    assert then.endswith("--resume --balance families   # from step 10")
    assert resume_config(run, {"balance": "families"}).extra["history"] == saved.extra["history"]  # unchanged: no entry
    with pytest.raises(ValueError, match="balance"):
        config(squares, run, balance="classes")


def test_lr_may_drop_on_resume_recorded_and_used_from_that_step(squares, tmp_path):
    """A constant-lr run annealed by hand: --resume --lr is recorded with its step and drives the steps after it."""
    from unnoise.training.card import train_commands

    run = tmp_path / "run"
    train(config(squares, run, max_steps=10, warmup_steps=0), quiet=True)
    train(resume_config(run, {"max_steps": 20, "lr": 1e-5}), resume=True, quiet=True)
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert saved.extra["history"] == [{"step": 10, "changes": {"lr": [config(squares, run).lr, 1e-5]}}]
    assert train_commands(saved)[1].endswith("--resume --lr 1e-05   # from step 10")
    lrs = {row["step"]: row["lr"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert lrs[10] == config(squares, run).lr and lrs[20] == 1e-5


def test_an_lr_change_on_resume_ramps_over_the_warmup_length(squares, tmp_path):
    """--resume --lr a→b goes from a to b linearly over warmup_steps from the step it resumes at (Adam's steps
    must not jump tenfold at once: a 1e-4 → 1e-3 change kicked a real run's loss from 0.012 to 0.027), then
    stays at b; and a later resume in the middle of the ramp continues it exactly."""
    from unnoise.training.harness import learning_rate

    run = tmp_path / "run"
    train(config(squares, run, max_steps=8, warmup_steps=4, log_every=1), quiet=True)
    train(resume_config(run, {"max_steps": 10, "lr": 1e-4}), resume=True, quiet=True)
    train(resume_config(run, {"max_steps": 14}), resume=True, quiet=True)
    lrs = {row["step"]: row["lr"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    # the row of step n logs the rate step n − 1 trained with; the change is at step 8
    assert lrs[8] == 1e-3
    assert [lrs[n] for n in range(9, 15)] == pytest.approx([1e-3 - 9e-4 * k / 4 for k in (1, 2, 3, 4, 4, 4)])
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    history = saved.extra["history"]
    assert learning_rate(saved, 7, history) == 1e-3 and learning_rate(saved, 8, history) == pytest.approx(7.75e-4)
    assert learning_rate(saved, 8, []) == 1e-4  # without the history: the new rate at once


def test_caption_draw_is_a_recipe_setting_and_needs_marked_captions(squares, tmp_path):
    """--caption-draw may change on resume like --balance (recorded, in the card's commands); a folder marks no
    caption kinds, so "names" is one clear error before any step."""
    from unnoise.data.base import DataError
    from unnoise.training.card import train_commands

    saved = config(squares, tmp_path / "run", max_steps=20, caption_draw="names",
                   extra={"history": [{"step": 10, "changes": {"caption_draw": ["uniform", "names"]}}]})
    first, then = train_commands(saved)
    assert "--caption-draw" not in first and then.endswith("--resume --caption-draw names   # from step 10")
    with pytest.raises(DataError, match="caption draw 'names' needs"):
        Trainer(saved, quiet=True)
    with pytest.raises(ValueError, match="caption_draw must be one of uniform, names"):
        config(squares, tmp_path / "run", caption_draw="keywords")


def test_init_starts_a_new_run_from_a_run_or_a_model_and_widen_keeps_its_function(squares, tmp_path):
    """--init: a run directory gives its newest checkpoint's EMA, a model directory its weights; --widen doubles
    the width with the same function; the new run resumes from its own checkpoints and its card says where it
    began."""
    from unnoise.models import UNet
    from unnoise.training.card import train_commands, write_card

    source = tmp_path / "source"
    train(config(squares, source, max_steps=10), quiet=True)
    ema = load_file(str(checkpoint.latest_path(source) / "ema.safetensors"))
    started = Trainer(config(squares, tmp_path / "a", init=str(source)), quiet=True)
    assert all(torch.equal(v, ema[k]) for k, v in started.model.state_dict().items())
    assert started.step == 0 and started.cfg.unet == json.loads((source / "config.json").read_text())["unet"]

    exported = UNet.from_pretrained(source / "model")
    from_model = Trainer(config(squares, tmp_path / "b", init=str(source / "model")), quiet=True)
    assert all(torch.equal(v, exported.state_dict()[k]) for k, v in from_model.model.state_dict().items())

    wide = tmp_path / "wide"
    cfg = config(squares, wide, init=str(source), init_widen=True, max_steps=10)
    widened = Trainer(cfg, quiet=True).model.eval()
    narrow = started.model.eval()
    assert widened.config.base_channels == 2 * narrow.config.base_channels
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 700.0])
    cond = {"tokens": torch.randn(2, 4, 384), "mask": torch.ones(2, 4, dtype=torch.bool), "pooled": torch.randn(2, 384)}
    with torch.no_grad():
        torch.testing.assert_close(widened(x, t, cond), narrow(x, t, cond), atol=1e-4, rtol=1e-4)
    train(cfg, quiet=True)
    train(resume_config(wide, {"max_steps": 20}), resume=True, quiet=True)  # its own weights, not --init's again
    assert checkpoint.latest_path(wide).name == "step-00000020"
    saved = TrainConfig.from_dict(json.loads((wide / "config.json").read_text()))
    assert f"--init {source} --widen" in train_commands(saved)[0] and "--model-size" not in train_commands(saved)[0]
    assert f"UNet from `{source}`, doubled in width" in write_card(wide, wide / "model", "wide").read_text()


def test_init_is_checked_against_the_run(squares, tmp_path):
    with pytest.raises(ValueError, match="init_widen widens the network of init"):
        config(squares, tmp_path / "r", init_widen=True)
    with pytest.raises(TrainingError, match="not a directory"):
        Trainer(config(squares, tmp_path / "r", init=str(tmp_path / "nowhere")), quiet=True)
    source = tmp_path / "eps"
    train(config(squares, source, max_steps=2), quiet=True)
    with pytest.raises(TrainingError, match="prediction_type 'epsilon', this run needs 'v_prediction'"):
        Trainer(config(squares, tmp_path / "r", init=str(source), prediction_type="v_prediction"), quiet=True)
    res = _cli("train", "--data", str(squares), "--out", str(tmp_path / "c"), "--init", str(source),
               "--model-size", "small", timeout=120)
    assert res.returncode != 0 and "brings its own network; drop --model-size small" in res.stderr


def test_nan_loss_stops_and_keeps_last_checkpoint(squares, tmp_path, monkeypatch):
    trainer = Trainer(config(squares, tmp_path / "run", max_steps=30), quiet=True)
    real_forward = trainer.model.forward

    def poisoned(x, t, cond=None):
        out = real_forward(x, t, cond)
        return out * float("nan") if trainer.step >= 12 else out

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    with pytest.raises(TrainingError, match="nan at step 12"):
        trainer.run()
    latest = checkpoint.latest_path(tmp_path / "run")
    assert latest.name == "step-00000010"
    ck = checkpoint.load(latest)
    assert all(torch.isfinite(v).all() for v in ck.model.values())


@pytest.mark.slow
def test_loss_falls_and_samples_follow_their_caption(squares, tmp_path):
    # v-prediction: its target at high noise is ≈ −x0, so the colour (decided there, from the caption) is
    # learned in a few hundred steps; ε-prediction learns it far more slowly (its target at high noise is
    # ≈ x_t, whatever the colour) — measured: after 300 steps ε samples ignore the caption, v's follow it.
    cfg = config(squares, tmp_path / "run", max_steps=300, batch_size=16, lr=2e-3, warmup_steps=20,
                 checkpoint_every=300, log_every=20, ema_decay=0.99, cond_dropout=0.2,
                 prediction_type="v_prediction")
    trainer = Trainer(cfg, quiet=True)
    model_dir = trainer.run()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:2])

    from unnoise.pipeline import Painter

    painter = Painter.from_pretrained(model_dir)
    for caption, rgb in COLOURS.items():
        ims = painter(caption, num_images=8, steps=20, guidance=2.0, seed=0)
        mean = np.stack([np.asarray(im, dtype=np.float32) for im in ims]).mean(axis=(0, 1, 2))
        assert np.abs(mean - np.array(rgb)).max() < 45, (caption, mean)


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "unnoise", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def test_dry_run_prints_resolved_config(squares, tmp_path):
    res = _cli("train", "--data", str(squares), "--out", str(tmp_path / "r"), "--max-steps", "7", "--dry-run",
               timeout=120)
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert cfg["max_steps"] == 7 and cfg["data"] == str(squares) and cfg["prediction_type"] == "epsilon"
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_cleanly(squares, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "unnoise", "train", "--data", str(squares), "--out", str(out), "--image-size", "16",
         "--model-size", "tiny", "--batch-size", "8", "--max-steps", "100000", "--sample-every", "0",
         "--checkpoint-every", "100000", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    latest = checkpoint.latest_path(out)
    assert latest is not None and checkpoint.load(latest).step > 0


@pytest.mark.slow
def test_torchrun_two_processes_match_one(squares, tmp_path):
    common = ["--data", str(squares), "--image-size", "16", "--model-size", "tiny", "--batch-size", "8",
              "--max-steps", "4", "--sample-every", "0", "--precision", "fp32", "--threads", "1", "--lr", "1e-3"]
    one = _cli("train", "--out", str(tmp_path / "one"), *common, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "unnoise", "train", "--out", str(tmp_path / "two"), *common],
        capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_cli_resume_takes_the_options_given_on_the_command_line(tmp_path, capsys):
    """`--resume --max-steps N` extends a run; a changed setting that would alter the run is refused.
    (Regression: typer vendors click, so comparing parameter sources by enum identity saw nothing.)"""
    from unnoise.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(TrainConfig(data="digits", out=str(run), max_steps=100).to_dict()))
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "digits", "--out", str(run), "--resume", "--max-steps", "300", "--dry-run"])
    assert e.value.code in (0, None)
    assert json.loads(capsys.readouterr().out)["max_steps"] == 300
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "digits", "--out", str(run), "--resume", "--batch-size", "32", "--dry-run"])
    assert e.value.code == 2 and "batch_size" in capsys.readouterr().err


def test_cli_resume_reads_the_runs_own_data_and_a_start_needs_data(tmp_path, capsys):
    """`unnoise train --out RUN --resume` needs no --data (the run's config.json names it); a different --data
    is refused, and starting a run without --data is one line naming the option."""
    from unnoise.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(TrainConfig(data="digits", out=str(run), max_steps=100).to_dict()))
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(run), "--resume", "--max-steps", "300", "--dry-run"])
    assert e.value.code in (0, None)
    got = json.loads(capsys.readouterr().out)
    assert (got["data"], got["max_steps"]) == ("digits", 300)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "emoji", "--out", str(run), "--resume", "--dry-run"])
    assert e.value.code == 2 and "data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "new"), "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--data is needed to start a run" in err and "Traceback" not in err
