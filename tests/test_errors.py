"""Errors at the edges (issues 28 and 29): an `UnnoiseError` is one line naming the value or file and exit
code 2 (a 4xx in the lab); anything else is a bug and says so (exit code 1 with its traceback; a logged 500
whose body names only the exception's type)."""

from __future__ import annotations

import json
import logging
import shutil
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from unnoise import schedules
from unnoise.lab import create_app
from unnoise.modeldir import bundled_root, save_model_dir
from unnoise.models import UNet, UNetConfig
from unnoise.pipeline import PaintError, PaintParams


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small untrained model directory (the plumbing is under test, not the pictures)."""
    torch.manual_seed(0)
    meta = SimpleNamespace(channels=3, image_size=16, name="test", example_prompts=["a red square"])
    out = tmp_path_factory.mktemp("m") / "model"
    return save_model_dir(out, UNet(UNetConfig.tiny().replace(image_size=16)), schedule=schedules.get("linear"),
                          prediction_type="epsilon", dataset=meta, text_encoder="test",
                          defaults={"steps": 3, "guidance": 2.0, "sampler": "dpmpp_2m"})


def one_line_exit_2(result, *needles: str) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


# --- the command line's mapping ------------------------------------------------------------------------
def test_a_bug_is_reported_as_one_with_its_traceback_and_exit_code_1(cli, monkeypatch, tmp_path):
    """An exception that is not an UnnoiseError is the program's fault: it must not pass for the user's."""
    def broken(name, num_steps=1000):
        raise KeyError("alphas")  # stands in for any programming error inside a command

    monkeypatch.setattr(schedules, "get", broken)
    r = cli(["schedule", "--out", str(tmp_path / "s.png")])
    lines = r.err.strip().splitlines()
    assert r.code == 1 and "Traceback (most recent call last)" in r.err
    assert lines[-1].startswith("unnoise crashed (bug): KeyError: 'alphas'") and "please report" in lines[-1]


def test_a_full_disk_or_a_denied_permission_is_not_called_a_bug(cli, monkeypatch, tmp_path):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.png"))

    monkeypatch.setattr("unnoise.visualize.plot_schedules", full)
    one_line_exit_2(cli(["schedule", "--out", str(tmp_path / "s.png")]), "No space left on device")


def test_usage_errors_keep_exit_code_2(cli):
    r = cli(["paint", "x", "--steps", "many"])
    assert r.code == 2 and "crashed" not in r.err


def test_unnoise_json_holding_a_list_or_a_null_guidance(cli, model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    meta = broken / "unnoise.json"
    good = json.loads(meta.read_text())
    out = str(tmp_path / "o.png")
    meta.write_text(json.dumps([good]))
    one_line_exit_2(cli(["paint", "x", "--model", str(broken), "--out", out]), str(meta), "JSON object", "list")
    meta.write_text(json.dumps({**good, "defaults": {**good["defaults"], "guidance": None}}))
    one_line_exit_2(cli(["paint", "x", "--model", str(broken), "--out", out]), str(meta), "defaults.guidance", "null")


def test_train_out_a_file_and_threads_0(cli, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_exit_2(cli(["train", "--data", "digits", "--out", str(f), "--max-steps", "1"]), str(f), "is a file")
    one_line_exit_2(cli(["distill", "--teacher", "digits", "--out", str(f), "--dry-run"]), str(f), "is a file")
    one_line_exit_2(cli(["train", "--data", "digits", "--out", str(tmp_path / "r"), "--threads", "0", "--dry-run"]),
                    "threads", "0")
    one_line_exit_2(cli(["train", "--data", "digits", "--out", str(tmp_path / "r"), "--max-steps", "0", "--dry-run"]),
                    "max_steps")


def test_strength_without_an_init_image_is_refused(cli, model_dir, tmp_path):
    r = cli(["paint", "x", "--model", str(model_dir), "--strength", "0.5", "--out", str(tmp_path / "o.png")])
    one_line_exit_2(r, "--strength", "--init-image")
    assert not (tmp_path / "o.png").exists()


def test_noise_refuses_a_negative_seed_like_paint(cli, model_dir, tmp_path):
    one_line_exit_2(cli(["noise", "--seed", "-1", "--out", str(tmp_path / "n.gif")]), "seed", "-1")
    one_line_exit_2(cli(["paint", "x", "--model", str(model_dir), "--seed", "-1", "--out", str(tmp_path / "o.png")]),
                    "seed", "-1")
    one_line_exit_2(cli(["noise", "--frames", "1", "--out", str(tmp_path / "n.gif")]), "--frames", "1")


def test_export_notes_that_do_not_exist(cli, tmp_path):
    r = cli(["export", str(tmp_path), "--out", str(tmp_path / "m"), "--notes", str(tmp_path / "missing.md")])
    assert r.code == 2 and "missing.md" in r.err and "crashed" not in r.err


def test_paint_from_a_png_opens_only_the_paths_named_on_the_command_line(cli, model_dir, tmp_path):
    """A PNG from someone else names paths of their machine (or, crafted, of this one): `--from` takes its
    settings but opens no model folder or picture it names; bundled model names are fine."""
    init = tmp_path / "init.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(init)
    painted = tmp_path / "p.png"
    args = ["--model", str(model_dir), "--steps", "2", "--size", "0"]
    assert cli(["paint", "a", *args, "--init-image", str(init), "--strength", "0.5", "--out", str(painted)]).code == 0
    stored = PaintParams.from_png(painted)
    assert stored.init_image == str(init) and stored.model == str(model_dir)

    again = tmp_path / "again.png"
    r = cli(["paint", "--from", str(painted), "--out", str(again)])
    one_line_exit_2(r, repr(str(model_dir)), f"--model {model_dir}")
    r = cli(["paint", "--from", str(painted), "--model", str(model_dir), "--out", str(again)])
    one_line_exit_2(r, repr(str(init)), "--init-image")
    assert not again.exists()
    # named on the command line: painted again, with the stored strength
    r = cli(["paint", "--from", str(painted), "--model", str(model_dir), "--init-image", str(init), "--out", str(again)])
    assert r.code == 0, r.err
    assert PaintParams.from_png(again).strength == 0.5

    # a bundled name is not a path: it is taken as stored (the crafted PNG's steps = 0 then stop the painting
    # at the next check, before any model loads, which keeps this test fast)
    stored = json.loads(Image.open(painted).text["unnoise"])
    crafted = tmp_path / "crafted.png"
    info = PaintParams(**{**stored, "model": "digits", "init_image": None, "strength": None, "steps": 0}).to_png_info()
    Image.new("RGB", (4, 4)).save(crafted, pnginfo=info)
    one_line_exit_2(cli(["paint", "--from", str(crafted), "--out", str(tmp_path / "d.png")]), "steps must be")


# --- the lab's mapping ------------------------------------------------------------------------------------
def test_lab_answers_an_unnoise_error_with_422_and_a_bug_with_a_logged_bare_500(caplog):
    def factory(req):
        if req.prompt == "refused":
            raise PaintError("steps must be an integer from 1 to 1000, got 0")
        if req.prompt == "bug":
            raise ValueError("not the user's fault: /srv/secret/path")  # a plain ValueError is a bug now

        def source(emit):
            raise PaintError("guidance must be a finite number from 0 to 100, got nan")

        return source, {}

    with TestClient(create_app(generate=factory), raise_server_exceptions=False) as c:
        r = c.get("/api/generate", params={"prompt": "refused"})
        assert r.status_code == 422 and r.json() == {"error": "steps must be an integer from 1 to 1000, got 0"}

        with caplog.at_level(logging.ERROR, logger="unnoise.lab"):
            r = c.get("/api/generate", params={"prompt": "bug"})
        assert r.status_code == 500 and r.json() == {"error": "internal error: ValueError"}
        assert "Traceback" not in r.text and "secret" not in r.text
        logged = [rec for rec in caplog.records if rec.name == "unnoise.lab" and rec.exc_info]
        assert logged and "secret" in str(logged[-1].exc_info[1])  # the log keeps what the answer leaves out

        text = c.get("/api/generate", params={"prompt": "in the run"}).text  # an UnnoiseError inside the run
        assert "event: error" in text and "guidance must be a finite number" in text


def test_a_painter_factorys_unknown_model_is_an_unnoise_error():
    """The lab answers it with 422 (not a bug's 500) when a request names a model the factory lacks."""
    from unnoise import UnnoiseError
    from unnoise.lab.learned import PainterFactory

    with pytest.raises(UnnoiseError, match="unknown model 'flowers'"):
        PainterFactory({"digits": bundled_root() / "digits"}).painter("flowers")


def test_broken_run_and_model_files_are_one_line(cli, model_dir, tmp_path):
    """Files a user can break by hand: a distillation run's config.json, a model's config.json.  (A training
    run's config.json on --resume and export is the crash-consistency work's: tests/test_crash.py.)"""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{")
    resume = ["distill", "--teacher", "digits", "--out", str(run), "--resume", "--dry-run"]
    one_line_exit_2(cli(resume), str(run / "config.json"), "not valid JSON")
    (run / "config.json").write_text("[1]")
    one_line_exit_2(cli(resume), str(run / "config.json"), "JSON object")
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "config.json").unlink()
    one_line_exit_2(cli(["paint", "x", "--model", str(broken), "--out", str(tmp_path / "o.png")]),
                    str(broken / "config.json"), "not found")
