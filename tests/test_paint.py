"""Painter and `unnoise paint`: seeds, PNG parameters and --from, image-to-image, animation, bad input.

These use a small *untrained* model directory written by the project's own exporter: the plumbing is
what is tested here; whether trained models paint well is test_training.py's and the evaluation's job.
"""


import numpy as np
import pytest
import torch
from PIL import Image

from unnoise.modeldir import ModelDirError
from unnoise.pipeline import Painter, PaintError, PaintParams, save_png


@pytest.fixture(scope="module")
def painter(model_dir):
    return Painter.from_pretrained(model_dir)


def arr(im):
    return np.asarray(im, dtype=np.int16)


def test_paints_images_of_the_model_shape(painter):
    ims = painter("a red square", num_images=3, seed=5)
    assert len(ims) == 3 and all(im.size == (16, 16) and im.mode == "RGB" for im in ims)
    assert [im.unnoise_params.seed for im in ims] == [5, 6, 7]


def test_seed_k_gives_the_same_image_whatever_the_batch(painter):
    batch = painter("a cat", num_images=3, seed=10, steps=4)
    alone = painter("a cat", num_images=1, seed=11, steps=4)
    assert np.abs(arr(batch[1]) - arr(alone[0])).max() <= 1
    other = painter("a cat", num_images=1, seed=12, steps=4)
    assert np.abs(arr(other[0]) - arr(alone[0])).max() > 10


def test_generate_honours_a_given_grid(painter):
    """generate(sigmas=…) paints on that grid, from each seed's own noise, also without x_init: the grid
    of `steps` is the same images bit for bit, another grid other ones (a given grid was once ignored)."""
    from unnoise.generation import generate

    cond, uncond = painter.encoder.encode(["a cat"] * 2), painter.encoder.encode([""] * 2)
    kw = dict(shape=painter.shape, seeds=[3, 4], guidance=2.0, sampler="dpmpp_2m")
    args = (painter.model, painter.schedule, painter.info.prediction_type, cond, uncond)
    by_steps = generate(*args, steps=4, **kw)
    torch.testing.assert_close(generate(*args, sigmas=painter.schedule.sigmas(4), **kw), by_steps, rtol=0, atol=0)
    karras, seen = painter.schedule.sigmas(3, "karras"), []
    generate(*args, sigmas=karras, callback=lambda info: seen.append(info.sigma), **kw)
    assert seen == karras[:-1].tolist()  # (this untrained model's clamped images cannot tell grids apart)
    with pytest.raises(ValueError, match="x_init needs the sigmas"):
        generate(*args, x_init=torch.zeros(2, *painter.shape), **kw)


def test_png_carries_parameters_and_from_reproduces(painter, model_dir, tmp_path, cli):
    out = tmp_path / "p.png"
    code, _, err = cli(["paint", "a blue square", "--model", str(model_dir), "--seed", "3", "--steps", "5",
                        "--out", str(out), "--size", "0", "--negative-prompt", "red"])
    assert code == 0, err
    params = PaintParams.from_png(out)
    assert (params.prompt, params.seed, params.steps, params.negative_prompt) == ("a blue square", 3, 5, "red")
    assert params.model == str(model_dir) and params.sampler == "dpmpp_2m"
    again = tmp_path / "again.png"
    # the PNG names a model directory: a path stored in a file is not opened until the user names it too
    refused = cli(["paint", "--from", str(out), "--out", str(again), "--size", "0"])
    assert refused.code == 2 and f"pass --model {model_dir}" in refused.err and not again.exists()
    assert cli(["paint", "--from", str(out), "--model", str(model_dir), "--out", str(again), "--size", "0"]).code == 0
    assert np.array_equal(arr(Image.open(out)), arr(Image.open(again)))


def test_from_lets_typed_options_win_even_at_their_defaults(model_dir, tmp_path, cli):
    """--from fills in what the user did not type; what they typed wins, also a default value that clears a
    stored one (--negative-prompt "", --guidance-rescale 0) and an explicit bundled --model."""
    out = tmp_path / "p.png"
    code, _, err = cli(["paint", "a blue square", "--model", str(model_dir), "--seed", "3", "--steps", "3",
                        "--out", str(out), "--size", "0", "--negative-prompt", "red", "--guidance-rescale", "0.5"])
    assert code == 0, err
    again = tmp_path / "again.png"
    code, _, err = cli(["paint", "--from", str(out), "--model", str(model_dir), "--negative-prompt", "",
                        "--guidance-rescale", "0", "--out", str(again), "--size", "0"])
    assert code == 0, err
    cleared = PaintParams.from_png(again)
    assert (cleared.negative_prompt, cleared.guidance_rescale, cleared.seed, cleared.steps) == ("", 0.0, 3, 3)
    kept = tmp_path / "kept.png"
    assert cli(["paint", "--from", str(out), "--model", str(model_dir), "--out", str(kept), "--size", "0"]).code == 0
    assert (PaintParams.from_png(kept).negative_prompt, PaintParams.from_png(kept).guidance_rescale) == ("red", 0.5)
    bundled = tmp_path / "bundled.png"  # an explicit --model emoji beats the stored directory (no refusal)
    code, _, err = cli(["paint", "--from", str(out), "--model", "emoji", "--steps", "1", "--out", str(bundled),
                        "--size", "0"])
    assert code == 0, err
    assert PaintParams.from_png(bundled).model == "emoji"


def test_multiple_images_grid_and_animation(model_dir, tmp_path, cli):
    out = tmp_path / "many.png"
    gif = tmp_path / "steps.gif"
    code, _, err = cli(["paint", "x", "--model", str(model_dir), "-k", "3", "--grid", "--steps", "4", "--seed", "1",
                        "--out", str(out), "--animate", str(gif)])
    assert code == 0, err
    for i in (1, 2, 3):
        assert Image.open(tmp_path / f"many-{i}.png").size == (256, 256)
    assert Image.open(out).size == (2 * 256 + 3 * 2,) * 2  # --out is the grid (2 × 2 tiles)
    assert Image.open(gif).n_frames == 5  # 4 steps + the finished image


def test_image_to_image_strength(painter, tmp_path):
    src = tmp_path / "init.png"
    Image.fromarray(np.tile(np.array([200, 40, 40], np.uint8), (16, 16, 1))).save(src)
    target = arr(Image.open(src))
    light = painter("a square", init_image=src, strength=0.05, steps=20, seed=0)[0]
    heavy = painter("a square", init_image=src, strength=1.0, steps=20, seed=0)[0]
    assert np.abs(arr(light) - target).mean() < 12
    assert np.abs(arr(heavy) - target).mean() > np.abs(arr(light) - target).mean() + 10
    assert light.unnoise_params.strength == 0.05 and light.unnoise_params.init_image == str(src)


def test_empty_prompt_is_unconditional_and_long_prompt_is_truncated(painter, model_dir, tmp_path, cli):
    assert len(painter("", seed=0)) == 1
    code, _, err = cli(["paint", "cat " * 2500, "--model", str(model_dir), "--out", str(tmp_path / "l.png")])
    assert code == 0 and "the prompt is longer than" in err


@pytest.mark.parametrize(
    "kwargs",
    [dict(steps=0), dict(steps=10**9), dict(guidance=float("nan")), dict(guidance=-1.0), dict(num_images=0),
     dict(sampler="nope"), dict(seed=-4), dict(spacing="weird"), dict(strength=0.0, init_image="x")],
)
def test_bad_arguments_raise_clear_errors(painter, kwargs):
    with pytest.raises(ValueError):
        painter("a cat", **kwargs)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["paint", "x", "--steps", "0"], "steps"),
        (["paint", "x", "--steps", "1000000000"], "steps"),
        (["paint", "x", "--guidance", "nan"], "guidance"),
        (["paint", "x", "--model", "no-such-model"], "unknown model"),
        (["paint", "x", "--init-image", "{tmp}/missing.png"], "image not found"),
        (["paint", "x", "--init-image", "{tmp}/corrupt.png"], "not an image"),
        (["paint", "x", "--sampler", "zigzag"], "sampler"),
        (["paint", "--from", "{tmp}/plain.png"], "no unnoise parameters"),
        (["paint", "x", "--out", "{tmp}/x.gif"], "must end in .png or .jpg or .jpeg or .webp"),
    ],
)
def test_cli_bad_input_is_one_line(model_dir, tmp_path, argv, message, cli):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(model_dir)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o.png")]
    code, _, err = cli(argv)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_unknown_model_directory(tmp_path):
    with pytest.raises(ModelDirError, match="not an unnoise model directory"):
        Painter.from_pretrained(tmp_path)


def test_save_png_without_params_is_a_plain_png(tmp_path):
    path = save_png(Image.new("RGB", (4, 4)), tmp_path / "plain.png")
    with pytest.raises(PaintError):
        PaintParams.from_png(path)



def test_every_deliberate_error_class_has_the_unnoise_root():
    """Every error class the package defines for users derives from `unnoise.UnnoiseError` (DESIGN v2)."""
    import importlib
    import pkgutil

    import unnoise
    from unnoise import UnnoiseError

    found = []
    for mod in pkgutil.walk_packages(unnoise.__path__, "unnoise."):
        if mod.name.startswith("unnoise.lab") or mod.name.endswith("__main__"):
            continue  # the lab's control-flow exceptions (Busy, Cancelled) are not errors; its UploadError is below
        module = importlib.import_module(mod.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == mod.name and obj.__name__.endswith("Error"):
                found.append(obj)
    from unnoise.lab.uploads import UploadError

    found.append(UploadError)
    assert len(found) >= 18
    assert [c.__name__ for c in found if not issubclass(c, UnnoiseError)] == []
