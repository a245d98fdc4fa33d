"""`unnoise schedule` and `unnoise noise`: the pictures, and one-line errors for bad input."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def test_schedule_png(tmp_path, cli):
    out = tmp_path / "s.png"
    code, stdout, _ = cli(["schedule", "--name", "linear", "--name", "cosine+ztsnr", "--out", str(out)])
    assert code == 0
    assert "linear: signal = noise at t ≈ 258" in stdout
    im = Image.open(out)
    assert im.width > 600 and im.height > 300


def test_noise_gif_dissolves_the_cat(tmp_path, cli):
    out = tmp_path / "n.gif"
    code, _, _ = cli(["noise", "--out", str(out), "--frames", "6"])
    assert code == 0
    im = Image.open(out)
    assert im.n_frames == 6
    frames = []
    for k in range(6):
        im.seek(k)
        frames.append(np.asarray(im.convert("RGB"), dtype=np.float32))
    # the first frame is the cat; the last is static: the high-frequency energy (neighbour differences) grows
    roughness = [np.abs(np.diff(f[: f.shape[0] * 3 // 4], axis=1)).mean() for f in frames]
    assert roughness[-1] > 3 * roughness[0]
    assert all(b >= a * 0.95 for a, b in zip(roughness, roughness[1:]))


def test_noise_png_strip_of_a_user_image(tmp_path, cli):
    src = tmp_path / "in.png"
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(src)
    out = tmp_path / "strip.png"
    code, stdout, _ = cli(["noise", str(src), "--out", str(out), "--frames", "4", "--schedule", "cosine"])
    assert code == 0 and "4 frames" in stdout
    assert Image.open(out).width > 4 * 60


@pytest.mark.parametrize(
    "argv,message",
    [
        (["noise", "missing.png", "--out", "{tmp}/x.gif"], "image not found"),
        (["noise", "{tmp}/text.png", "--out", "{tmp}/x.gif"], "not an image"),
        (["noise", "{tmp}/trunc.png", "--out", "{tmp}/x.gif"], "corrupt or truncated"),
        (["noise", "--out", "{tmp}/x.txt"], "must end in"),
        (["noise", "--out", "{tmp}/nowhere/x.gif"], "does not exist"),
        (["noise", "--frames", "1", "--out", "{tmp}/x.gif"], "frames"),
        (["schedule", "--name", "wobbly", "--out", "{tmp}/s.png"], "unknown schedule"),
        (["schedule", "--num-steps", "-3", "--out", "{tmp}/s.png"], "num_steps"),
        (["schedule", "--num-steps", "1000000000", "--out", "{tmp}/s.png"], "num_steps"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, argv, message, cli):
    (tmp_path / "text.png").write_text("not a picture")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, _, err = cli(argv)
    assert code != 0
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_and_help():
    res = subprocess.run([sys.executable, "-m", "unnoise", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for command in ("schedule", "noise"):
        assert command in res.stdout
