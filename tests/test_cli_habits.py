"""Habits diffusers and AUTOMATIC1111 users bring (issue 30): --version, sampler names, A1111 `parameters`
text, output formats, prompt files, --device, --help.  Paints with the real bundled models."""

import json
import re
import struct
from importlib.metadata import version

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import unnoise
from unnoise.pipeline import Painter, PaintError, PaintParams
from unnoise.sampling import SAMPLERS
from unnoise.sampling.names import resolve_sampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny images: one thread is fastest

def test_version_is_the_package_version(cli):
    code, out, err = cli(["--version"])
    assert code == 0, err
    assert out.strip() == f"unnoise {unnoise.__version__}" == f"unnoise {version('unnoise')}"


# --- sampler names people already use -------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return Painter.from_pretrained("digits")


@pytest.mark.parametrize("name,expected", [
    ("Euler a", ("euler_ancestral", None)), ("euler_a", ("euler_ancestral", None)),
    ("k_euler", ("euler", None)), ("k_euler_a", ("euler_ancestral", None)), ("EULER", ("euler", None)),
    ("DPM++ 2M", ("dpmpp_2m", None)), ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
    ("DPM++ 2M SDE", ("dpmpp_2m_sde", None)), ("DPM++ 2M SDE Karras", ("dpmpp_2m_sde", "karras")),
    ("DPM++ 3M SDE", ("dpmpp_3m_sde", None)), ("DPM++ 3M SDE Exponential", ("dpmpp_3m_sde", "log_snr")),
    ("UniPC", ("unipc", None)), ("uni_pc", ("unipc", None)), ("DDIM", ("ddim", None)), ("Heun", ("heun", None)),
    ("sample_heun", ("heun", None)), ("DDPM", ("ddpm", None)), ("LCM", ("consistency", None)),
    ("dpmpp_2m", ("dpmpp_2m", None)),
])
def test_a1111_comfyui_and_k_diffusion_names(name, expected):
    assert resolve_sampler(name) == expected


def test_an_a1111_name_paints_what_our_name_and_spacing_paint(digits):
    ours = digits("a handwritten seven", sampler="dpmpp_2m", spacing="karras", steps=3, seed=4)[0]
    theirs = digits("a handwritten seven", sampler="DPM++ 2M Karras", steps=3, seed=4)[0]
    assert (theirs.unnoise_params.sampler, theirs.unnoise_params.spacing) == ("dpmpp_2m", "karras")
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    default = digits("a handwritten seven", sampler="dpmpp_2m", steps=3, seed=4)[0]
    assert not np.array_equal(np.asarray(ours), np.asarray(default))  # the spacing was not dropped
    assert digits.params("x", sampler="euler a", spacing="Exponential").spacing == "log_snr"
    with pytest.raises(PaintError, match="karras spacing"):
        digits.params("x", sampler="DPM++ 2M Karras", spacing="log_snr")


@pytest.mark.parametrize("argv,message", [
    (["--sampler", "dpmpp2m"], "did you mean 'dpmpp_2m'?"),
    (["--model", "emoj"], "did you mean 'emoji'?"),
    (["--spacing", "karas"], "did you mean 'karras'?"),
])
def test_a_misspelled_name_gets_did_you_mean(tmp_path, cli, argv, message):
    code, _, err = cli(["paint", "x", *argv, "--out", str(tmp_path / "x.png")])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_samplers_lists_names_order_and_calls(cli):
    code, out, _ = cli(["samplers"])
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert set(SAMPLERS) <= set(rows)
    assert '"DPM++ 2M"' in rows["dpmpp_2m"] and "order 2, 1 call a step" in rows["dpmpp_2m"]
    assert '"Euler a"' in rows["euler_ancestral"] and "order 2, 2 calls a step" in rows["heun"]
    assert "LCM" in rows["consistency"] and "uni_pc" in rows["unipc"]


# --- the `parameters` text, as AUTOMATIC1111 writes and reads it ------------------------------------------


def a1111_parse(text):
    """A reader written to A1111's rules (modules/infotext_utils.py, parse_generation_parameters): prompt
    lines, then every line from `Negative prompt:` on is negative prompt, except a last line with ≥ 3
    `Key: value` pairs, the settings; quoted values are JSON; `WxH` values split into key-1, key-2."""
    re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
    res, prompt, negative, done_with_prompt = {}, "", "", False
    *lines, lastline = text.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt, line = True, line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"], res["Negative prompt"] = prompt, negative
    for k, v in re_param.findall(lastline):
        if v[:1] == '"' and v[-1:] == '"':
            v = json.loads(v)
        m = re.match(r"^(\d+)x(\d+)$", v)
        if m:
            res[f"{k}-1"], res[f"{k}-2"] = m.group(1), m.group(2)
        else:
            res[k] = v
    return res


@pytest.fixture(scope="module")
def emoji():
    return Painter.from_pretrained("emoji")


def test_parameters_read_as_a1111_writes_them(emoji, tmp_path, cli):
    out, init = tmp_path / "heart.png", tmp_path / "red, round: 1.png"  # a value with `,` and `:` is quoted
    Image.new("RGB", (32, 32), "red").save(init)
    code, _, err = cli(["paint", "a red heart shape", "--model", "emoji", "--seed", "7", "--steps", "3",
                        "--sampler", "DPM++ 2M Karras", "--negative-prompt", "blurry, dark", "--out", str(out),
                        "--init-image", str(init), "--strength", "1"])
    assert code == 0, err
    snapped = emoji.params("a red heart shape").conditioned_on
    got = a1111_parse(Image.open(out).text["parameters"])
    assert got["Prompt"] == "a red heart shape" and got["Negative prompt"] == "blurry, dark"
    assert snapped and got["Conditioned on"] == snapped
    assert got["Init image"] == str(init) and got["Denoising strength"] == "1.0"
    assert (got["Steps"], got["Sampler"], got["CFG scale"], got["Seed"]) == ("3", "DPM++ 2M Karras", "3.0", "7")
    assert (got["Size-1"], got["Size-2"], got["Model"]) == ("32", "32", "emoji")
    assert (got["unnoise sampler"], got["Spacing"], got["Prompt snapping"]) == ("dpmpp_2m", "karras", "on")


def test_parameters_text_alone_reads_back_exactly(emoji):
    im = emoji("a red heart shape", steps=2, seed=11, negative_prompt='say "no": twice\nplease',
               init_image=Image.new("RGB", (8, 8), "red"), strength=0.5, guidance_rescale=0.25)[0]
    text = im.info["parameters"]
    assert a1111_parse(text)["Denoising strength"] == "0.5"
    assert PaintParams.from_parameters(text) == im.unnoise_params == PaintParams(**json.loads(im.info["unnoise"]))


def test_from_reads_old_pngs_and_pngs_with_only_the_text(emoji, tmp_path, cli):
    im = emoji("cat face", steps=2, seed=5)[0]
    p = im.unnoise_params
    old = PngImagePlugin.PngInfo()  # as unnoise 0.1 wrote it: JSON without `size`, its own text layout
    old.add_text("unnoise", json.dumps({k: v for k, v in json.loads(im.info["unnoise"]).items() if k != "size"}))
    old.add_text("parameters", "cat face\nNegative prompt: \nSteps: 2, Sampler: dpmpp_2m, CFG scale: 3.0, Seed: 5, "
                               "Model: emoji, unnoise 0.1.0")
    im.save(tmp_path / "old.png", pnginfo=old)
    assert PaintParams.from_png(tmp_path / "old.png") == p.replace(size=None)
    text_only = PngImagePlugin.PngInfo()
    text_only.add_text("parameters", im.info["parameters"])
    im.save(tmp_path / "text.png", pnginfo=text_only)
    assert PaintParams.from_png(tmp_path / "text.png") == p
    for name in ("old.png", "text.png"):
        again = tmp_path / f"again-{name}"
        code, _, err = cli(["paint", "--from", str(tmp_path / name), "--out", str(again), "--size", "0"])
        assert code == 0, err
        assert np.array_equal(np.asarray(Image.open(again)), np.asarray(im))


# --- output formats, grids, animations --------------------------------------------------------------------


def exif_user_comment(path):
    """A JPEG's or WebP's EXIF UserComment, found by walking the TIFF structure by hand and decoded as
    piexif.helper.UserComment.load does (A1111 reads it so): b"UNICODE\\0" + UTF-16-BE."""
    data = path.read_bytes()
    start = data.index(b"Exif\x00\x00") + 6 if data[:2] == b"\xff\xd8" else data.index(b"EXIF") + 8
    tiff = data[start + 6:] if data[start:start + 6] == b"Exif\x00\x00" else data[start:]
    e = "<" if tiff[:2] == b"II" else ">"

    def entries(offset):
        (n,) = struct.unpack(e + "H", tiff[offset:offset + 2])
        return [struct.unpack(e + "HHI4s", tiff[offset + 2 + 12 * k:offset + 14 + 12 * k]) for k in range(n)]

    (ifd0,) = struct.unpack(e + "I", tiff[4:8])
    (sub,) = next(struct.unpack(e + "I", v) for tag, _, _, v in entries(ifd0) if tag == 0x8769)
    _, kind, count, value = next(x for x in entries(sub) if x[0] == 0x9286)
    assert kind == 7  # UNDEFINED, as the EXIF standard types UserComment
    raw = tiff[struct.unpack(e + "I", value)[0]:][:count] if count > 4 else value[:count]
    assert raw[:8] == b"UNICODE\x00"
    return raw[8:].decode("utf_16_be")


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_jpeg_and_webp_keep_the_parameters_and_from_reads_them(tmp_path, cli, suffix):
    args = ["paint", "cat face", "--model", "digits-fast", "--seed", "3", "--negative-prompt", "ünïcode, σ"]
    png, other = tmp_path / "a.png", tmp_path / f"a{suffix}"
    assert cli([*args, "--out", str(png)]).code == 0
    code, out, err = cli([*args, "--out", str(other)])
    assert code == 0 and str(other) in out, err
    text = exif_user_comment(other)
    assert text == Image.open(png).text["parameters"]
    got = a1111_parse(text)
    assert got["Negative prompt"] == "ünïcode, σ" and got["Seed"] == "3" and got["Model"] == "digits-fast"
    assert PaintParams.from_png(other) == PaintParams.from_png(png)
    again = tmp_path / "again.png"
    assert cli(["paint", "--from", str(other), "--out", str(again)]).code == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(png)))


def test_grid_is_the_out_file_and_carries_the_parameters(tmp_path, cli):
    out = tmp_path / "sevens.png"
    code, _, err = cli(["paint", "a handwritten seven", "--model", "digits-1step", "-k", "3", "--grid",
                        "--seed", "5", "--out", str(out)])
    assert code == 0, err
    assert Image.open(out).size == (2 * 256 + 3 * 2, 2 * 256 + 3 * 2)  # 2 × 2 tiles, 2 px apart
    assert PaintParams.from_png(out).seed == 5 and a1111_parse(Image.open(out).text["parameters"])["Seed"] == "5"
    assert [PaintParams.from_png(tmp_path / f"sevens-{i}.png").seed for i in (1, 2, 3)] == [5, 6, 7]
    assert not (tmp_path / "sevens-grid.png").exists()


def test_animation_says_where_it_went_and_its_captions_have_their_letters(tmp_path, cli):
    from PIL import ImageDraw

    from unnoise.visualize import _font

    gif = tmp_path / "steps.gif"
    code, out, err = cli(["paint", "a handwritten seven", "--model", "digits-fast", "--out", str(tmp_path / "x.png"),
                          "--animate", str(gif)])
    assert code == 0 and f"wrote {gif}" in out, err

    def ink(text):
        im = Image.new("L", (60, 30))
        ImageDraw.Draw(im).text((2, 2), text, fill=255, font=_font(20))
        return np.asarray(im)

    missing = ink("\ue000")  # a private-use code point: no font has it, it draws the "missing" box
    for text in ("σ", "x̂", "ᾱ"):
        assert ink(text).any() and not np.array_equal(ink(text), missing), text


# --- batches: prompt files, prompt lists, diffusers' keyword names, images that keep their parameters ---


@pytest.fixture(scope="module")
def digits_fast():
    return Painter.from_pretrained("digits-fast")


def same(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_prompts_file_paints_each_line(tmp_path, cli):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a handwritten seven\n\n  a handwritten three  \n", encoding="utf-8")
    code, _, err = cli(["paint", "--prompts-file", str(prompts), "--model", "digits-fast", "-k", "2", "--seed", "4",
                          "--out", str(tmp_path / "d.webp")])
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.glob("d*"))
    assert names == ["d-1-1.webp", "d-1-2.webp", "d-3-1.webp", "d-3-2.webp"]  # STEM-LINE-i, the blank line skipped
    got = {n: PaintParams.from_png(tmp_path / n) for n in names}
    assert [(got[n].prompt, got[n].seed) for n in names] == [
        ("a handwritten seven", 4), ("a handwritten seven", 5), ("a handwritten three", 4), ("a handwritten three", 5)]


@pytest.mark.parametrize("argv,message", [
    (["x", "--prompts-file", "{tmp}/p.txt"], "not both"),
    (["--prompts-file", "{tmp}/missing.txt"], "prompts file not found"),
    (["--prompts-file", "{tmp}/blank.txt"], "holds no prompt"),
])
def test_prompts_file_errors_are_one_line(tmp_path, cli, argv, message):
    (tmp_path / "p.txt").write_text("a cat\n")
    (tmp_path / "blank.txt").write_text("\n  \n")
    argv = ["paint", *[a.format(tmp=tmp_path) for a in argv], "--model", "digits-1step", "--out", str(tmp_path / "o.png")]
    code, _, err = cli(argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_list_of_prompts_and_diffusers_keyword_names(digits_fast):
    ours = digits_fast("a handwritten two", num_images=2, seed=3, steps=4, guidance=2.0)
    theirs = digits_fast(["a handwritten seven", "a handwritten two"], num_images_per_prompt=2, num_inference_steps=4,
                         guidance_scale=2.0, generator=torch.Generator().manual_seed(3), negative_prompt=["", ""])
    assert [(im.unnoise_params.prompt, im.unnoise_params.seed) for im in theirs] == [
        ("a handwritten seven", 3), ("a handwritten seven", 4), ("a handwritten two", 3), ("a handwritten two", 4)]
    assert same(theirs[2], ours[0]) and same(theirs[3], ours[1])
    one_each = digits_fast(["a handwritten seven", "a handwritten two"], num_images=2,
                           generator=[torch.Generator().manual_seed(s) for s in (3, 4, 3, 4)])
    assert all(same(a, b) for a, b in zip(one_each, theirs))
    with pytest.raises(PaintError, match="not both"):
        digits_fast("x", seed=1, generator=torch.Generator().manual_seed(1))
    with pytest.raises(PaintError, match="num_inference_steps"):
        digits_fast("x", steps=3, num_inference_steps=4)
    with pytest.raises(PaintError, match="one per image"):
        digits_fast(["x", "y"], generator=[torch.Generator()])
    with pytest.raises(PaintError, match="one per prompt"):
        digits_fast(["x", "y"], negative_prompt=["z"])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_every_image_carries_its_parameters_and_save_image_keeps_them(digits_fast, tmp_path, suffix):
    images = digits_fast(["a handwritten one", "a handwritten nine"], num_images=2, seed=8)
    for im in images:
        assert PaintParams.from_parameters(im.info["parameters"]) == im.unnoise_params
    big = images[3].resize((128, 128), Image.Resampling.NEAREST).copy()  # a user's own edits keep .info
    path = unnoise.save_image(big, tmp_path / f"nine{suffix}")
    assert PaintParams.from_png(path) == images[3].unnoise_params
    assert (images[3].unnoise_params.prompt, images[3].unnoise_params.seed) == ("a handwritten nine", 9)


# --- --device -----------------------------------------------------------------------------------------------

AVAILABLE = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}


@pytest.mark.parametrize("command", [["paint", "x"], ["train", "--data", "digits", "--out", "{tmp}/run"], ["lab"]])
@pytest.mark.parametrize("device", ["cuda", "mps", "gpu"])
def test_an_unavailable_device_is_one_clear_line(tmp_path, cli, command, device):
    if AVAILABLE.get(device):
        pytest.skip(f"{device} is available here")
    code, _, err = cli([*(a.format(tmp=tmp_path) for a in command), "--device", device])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("not available" in err) if device != "gpu" else "did you mean 'cuda'?" in err
    assert not (tmp_path / "run").exists()


def test_device_cpu_paints_what_the_default_paints(tmp_path, cli):
    for name, extra in (("a.png", []), ("b.png", ["--device", "CPU"])):
        assert cli(["paint", "a handwritten two", "--model", "digits-1step", "--seed", "2", "--out",
                    str(tmp_path / name), *extra]).code == 0
    assert same(Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_paints_what_the_cpu_paints(tmp_path, cli):
    init = Image.new("RGB", (32, 32), "red")
    for model in ("digits", "emoji-fast"):
        for kw in ({}, {"init_image": init, "strength": 0.5}):
            cpu = Painter.from_pretrained(model)("a handwritten two", seed=2, steps=4, **kw)[0]
            gpu = Painter.from_pretrained(model, device="cuda")("a handwritten two", seed=2, steps=4, **kw)[0]
            assert np.abs(np.asarray(cpu, np.int16) - np.asarray(gpu, np.int16)).max() <= 8, (model, kw)
    code, _, err = cli(["paint", "red heart", "--device", "cuda", "-k", "2", "--seed", "1", "--out", str(tmp_path / "h.jpg")])
    assert code == 0, err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_lab_paints_on_cuda():
    from fastapi.testclient import TestClient
    from test_lab_api import decode_png, sse_events

    from unnoise.lab.app import create_app
    from unnoise.lab.learned import PainterFactory
    from unnoise.modeldir import resolve

    query = {"prompt": "a handwritten two", "model": "digits-fast", "seed": 3}
    done = {}
    for device in ("cpu", "cuda"):
        with TestClient(create_app(generate=PainterFactory({"digits-fast": resolve("digits-fast")}, device))) as c:
            done[device] = decode_png(sse_events(c.get("/api/generate", params=query).text)[-1][1]["image"])
    assert np.abs(done["cpu"].astype(np.int16) - done["cuda"].astype(np.int16)).max() <= 8


# --- --help ---------------------------------------------------------------------------------------------------


def help_text(cli, *command):
    code, out, err = cli([*command, "--help"])
    assert code == 0, err
    return " ".join(out.replace("│", " ").split())  # one line, whatever the terminal's width


def test_help_defaults_are_each_models_own(cli):
    from unnoise.cli_help import bundled_defaults
    from unnoise.modeldir import BUNDLED, load_info, paint_defaults

    assert bundled_defaults() == {name: paint_defaults(load_info(name)[0]) for name in BUNDLED}
    text = help_text(cli, "paint")
    assert "20 for emoji and digits, 4 for emoji-fast and digits-fast, 1 for digits-1step" in text
    assert "dpmpp_2m for emoji and digits, ddim for emoji-fast, digits-fast and digits-1step" in text
    assert "dpmpp_2m)" not in text and "the model's, 20" not in text  # the old, wrong-for-students wording


@pytest.mark.parametrize("command", [[], ["paint"], ["train"], ["lab"], ["noise"], ["schedule"], ["eval", "quality"]])
def test_flags_are_not_labelled_bool(cli, command):
    text = help_text(cli, *command)
    assert "--help" in text and "<bool>" not in text


def test_seed_wording_agrees_between_paint_and_eval(cli):
    from unnoise.cli_help import SEED_HELP

    for command in (["paint"], ["eval", "quality"], ["eval", "sweep"]):
        assert " ".join(SEED_HELP.split()) in help_text(cli, *command), command


# --- train says what it is doing; eval checks its optional packages first ---------------------------------


def test_train_says_what_it_is_doing_before_the_first_step(tmp_path, cli):
    code, out, err = cli(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--max-steps", "1",
                          "--batch-size", "4", "--model-size", "tiny", "--sample-every", "0", "--threads", "1"])
    assert code == 0, err
    said = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    stages = ["unnoise train: starting the run in", "loading the data: digits", "60,000 images of 32×32",
              "encoding the captions", "captions ready", "building the network (tiny) on cpu", "M parameters"]
    where = [next(i for i, line in enumerate(said) if stage in line) for stage in stages]
    assert where == sorted(where), said
    assert "done: model in" in out


def test_train_logged_to_a_file_writes_plain_progress_lines_not_a_bar(tmp_path, cli, monkeypatch):
    """`nohup unnoise train … > log`: stderr is not a terminal, so no carriage-return bar fills the log; a plain
    progress line is written at most every PROGRESS_LINE_S seconds and always at the last step."""
    from unnoise.training import harness

    argv = ["train", "--data", "digits", "--model-size", "tiny", "--batch-size", "4", "--sample-every", "0",
            "--threads", "1", "--log-every", "1"]
    code, _, err = cli([*argv, "--out", str(tmp_path / "a"), "--max-steps", "3"])
    assert code == 0, err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert len(lines) == 1 and lines[0].startswith("step 3/3 (100%) · loss ") and lines[0].endswith(" left"), lines
    monkeypatch.setattr(harness, "PROGRESS_LINE_S", 0.0)
    code, _, err = cli([*argv, "--out", str(tmp_path / "b"), "--max-steps", "3"])
    assert code == 0, err
    assert [line.split(" (")[0] for line in err.splitlines() if line.startswith("step ")] == [
        "step 1/3", "step 2/3", "step 3/3"]


def test_a_progress_line_says_the_rate_and_the_time_left():
    from unnoise.training.harness import progress_line

    assert progress_line(19_550, 80_000, 0.01123, 103.2, 1.61) == (
        "step 19,550/80,000 (24%) · loss 0.01123 · 1.61 step/s · 103 img/s · 10 h 25 min left")
    assert progress_line(10, 20, 0.5, 40.0, 1.0).endswith("· 10 s left")
    assert progress_line(0, 20, 0.5, 0.0, 0.0).endswith("· ? left")


def test_eval_checks_its_optional_packages_before_painting(tmp_path, cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # Python's way of "not installed"
    code, _, err = cli(["eval", "quality", "--model", "digits-1step", "-n", "2", "--out", str(tmp_path / "q")])
    assert code == 2 and "efficientnet-lite-pytorch" in err and "nothing was painted" in err
    assert err.count("\n") == 1 and "\r" not in err  # one line, and no painting progress bar before it
    assert not (tmp_path / "q").exists()


def test_eval_sweep_takes_the_other_sampler_names(tmp_path, cli):
    code, _, err = cli(["eval", "sweep", "--model", "digits-1step", "-n", "2", "--steps", "1",
                          "--samplers", "Euler a,DPM++ 2M Karras", "--out", str(tmp_path)])
    assert code == 0, err
    rows = [line.split(" | ")[:4] for line in (tmp_path / "results.md").read_text().splitlines() if line[:2] == "| "]
    assert [r[0].strip("| ") for r in rows[1:]] == ["euler_ancestral", "dpmpp_2m"]
    assert [r[3] for r in rows[1:]] == ["log_snr_trailing", "karras"]  # the model's own spacing, or the name's


def test_parameters_too_long_for_a_jpeg_are_a_clear_error_and_leave_no_file(tmp_path):
    from unnoise.infotext import InfotextError

    im = Image.new("RGB", (8, 8))
    im.info["parameters"] = "a very long prompt " * 2000  # 38 000 characters: 76 kB in UTF-16, over one APP1
    with pytest.raises(InfotextError, match="too long for a JPEG's EXIF; save it as .png or .webp"):
        unnoise.save_image(im, tmp_path / "long.jpg")
    assert list(tmp_path.iterdir()) == []
    unnoise.save_image(im, tmp_path / "long.webp")  # WebP's EXIF chunk has room
    assert exif_user_comment(tmp_path / "long.webp") == im.info["parameters"]


def test_prompts_file_with_from_takes_the_settings_and_the_files_prompts(tmp_path, cli):
    first = tmp_path / "first.png"
    assert cli(["paint", "a handwritten one", "--model", "digits-fast", "--seed", "6", "--steps", "2",
                "--out", str(first)]).code == 0
    (tmp_path / "p.txt").write_text("a handwritten eight\n")
    code, _, err = cli(["paint", "--from", str(first), "--prompts-file", str(tmp_path / "p.txt"),
                        "--out", str(tmp_path / "b.png")])
    assert code == 0, err
    got = PaintParams.from_png(tmp_path / "b-1-1.png")
    assert (got.prompt, got.seed, got.steps, got.model) == ("a handwritten eight", 6, 2, "digits-fast")


@pytest.mark.parametrize("command, config", [("train", "unnoise.training.config:TrainConfig"),
                                              ("distill", "unnoise.distill.config:DistillConfig")])
def test_train_and_distill_options_take_their_defaults_from_the_config(command, config):
    """Each setting is written once: every option of `unnoise train`/`distill` that is a config field has that
    field's default (the command builds the config from its options by field name)."""
    import dataclasses
    import importlib

    from typer.main import get_command

    from unnoise.cli import CONFIG_FIELD, app

    module, name = config.split(":")
    fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    checked = 0
    for option in get_command(app).commands[command].params:
        field = fields.get(CONFIG_FIELD.get(option.name, option.name))
        if field is None or field.default is dataclasses.MISSING:
            continue  # a command-only option (--resume, --dry-run, --device) or a required one (--out)
        assert option.default == field.default, f"--{option.name}: {option.default!r} ≠ {name}.{field.name} = {field.default!r}"
        checked += 1
    assert checked >= 15  # train checks 19 options, distill 29
