"""diffusers pipeline folders as unnoise models, checked against diffusers itself (a test-only oracle).

Small UNet2DModel pipelines are built and saved by diffusers here (DDPMPipeline.save_pretrained), then painted
by unnoise's Painter and by diffusers' own DDIMScheduler loop (exactly what DDIMPipeline runs; one test checks
that) from the same start and the same DDIM timesteps.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")

from unnoise.diffusers_folder import DiffusersFolderError, load_unet  # noqa: E402
from unnoise.modeldir import ModelDirError, load_info, model_schedule  # noqa: E402
from unnoise.pipeline import Painter, PaintError, PaintParams  # noqa: E402

STEPS, SEED = 10, 3


def build(path, num_classes=None, **scheduler):
    """A small random UNet2DModel pipeline folder, as diffusers writes it."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8, num_class_embeds=num_classes)
    with torch.no_grad():  # away from the init, so every layer matters
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(**scheduler)).save_pretrained(path)
    return path


CASES = {
    "epsilon": (None, {}),
    "epsilon_unclipped": (None, {"clip_sample": False}),
    "v_prediction": (None, {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2", "clip_sample": False}),
    "class_conditional": (4, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
}


@pytest.fixture(scope="module", params=list(CASES))
def folder(request, tmp_path_factory):
    num_classes, scheduler = CASES[request.param]
    return build(tmp_path_factory.mktemp(request.param) / "pipe", num_classes, **scheduler)


def diffusers_ddim(folder, start, class_label=None):
    """diffusers' DDIM (η = 0) from x_T = start: per step its clipped x̂0, and the final sample."""
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    sched = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    sched.set_timesteps(STEPS)
    x, x0s = start, []
    labels = None if class_label is None else torch.tensor([class_label])
    with torch.no_grad():
        for t in sched.timesteps:
            out = sched.step(unet(x, t, class_labels=labels).sample, t, x, eta=0.0, use_clipped_model_output=True)
            x = out.prev_sample
            x0s.append(out.pred_original_sample)
    return x, x0s, sched


def test_the_network_is_diffusers_unet2d_exactly(folder):
    ours = load_unet(folder)
    theirs = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([981.0, 2.5])
    labels = torch.tensor([1, 3]) if theirs.config.num_class_embeds else None
    with torch.no_grad():
        a = theirs(x, t, class_labels=labels).sample
        b = ours(x, t, None if labels is None else {"class_labels": labels})
    assert torch.equal(a, b)


def test_painter_agrees_with_diffusers_ddim(folder):
    painter = Painter.from_pretrained(folder)
    info = painter.info
    label = 2 if info.num_classes else None
    p = painter.params("", seed=SEED, steps=STEPS, sampler="ddim", spacing="leading", class_label=label)
    steps = []
    ours = painter.paint_tensor(p, 1, callback=lambda s: steps.append(s.denoised.clone()))
    # unnoise starts at x = noise·σ_0, i.e. x_t = noise·sqrt(1 − ᾱ_t0); diffusers' DDIMPipeline starts at
    # x_t = noise itself, so its loop is given unnoise's start (the same seed's noise, scaled)
    noise = torch.randn((1, *painter.shape), generator=torch.Generator().manual_seed(SEED))
    t0 = int(painter.schedule.timesteps(STEPS, "leading")[0])
    theirs, x0s, sched = diffusers_ddim(folder, (noise * (1 - sched_alpha(folder, t0)).sqrt()).float(), label)
    assert sched.timesteps.tolist() == painter.schedule.timesteps(STEPS, "leading").tolist()
    scale = theirs.abs().max().item()
    assert (ours - theirs).abs().max().item() <= 1e-4 * max(scale, 1.0)
    for mine, ref in zip(steps, x0s):
        assert (mine - ref).abs().max().item() <= 1e-4 * max(ref.abs().max().item(), 1.0)
    if info.clip_sample is None:
        assert scale > 1.5  # not clipped: the painting leaves [−1, 1] as diffusers' does
    else:
        assert scale <= 1.0
    print(f"{info.prediction_type}, clip {info.clip_sample}: max |unnoise − diffusers| "
          f"{(ours - theirs).abs().max().item():.2e}, |x| ≤ {scale:.3g}, {(theirs.abs() >= 1).float().mean():.0%} at ±1")


def sched_alpha(folder, t):
    return diffusers.DDIMScheduler.from_pretrained(folder / "scheduler").alphas_cumprod[t].double()


def test_the_folder_reads_its_configs(folder):
    info, _ = load_info(folder)
    raw = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert info.prediction_type == raw["prediction_type"]
    assert info.clip_sample == (1.0 if raw["clip_sample"] else None)
    theirs = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler").alphas_cumprod.double()
    assert torch.allclose(model_schedule(info).alphas_cumprod, theirs, rtol=5e-5, atol=0)  # diffusers: float32 (cosine 1.3e-5)


def test_diffusers_ddim_pipeline_is_the_loop_compared_against(tmp_path):
    folder = build(tmp_path / "pipe")
    pipe = diffusers.DDIMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(generator=torch.Generator().manual_seed(SEED), num_inference_steps=STEPS, eta=0.0,
                  use_clipped_model_output=True, output_type="np").images
    noise = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(SEED))
    x, _, _ = diffusers_ddim(folder, noise)
    assert torch.equal(torch.from_numpy(images[0]).permute(2, 0, 1), (x[0] / 2 + 0.5).clamp(0, 1))


def test_class_label_changes_the_picture_and_is_checked(tmp_path):
    painter = Painter.from_pretrained(build(tmp_path / "pipe", num_classes=4))
    a = painter.paint_tensor(painter.params("", seed=1, steps=4, class_label=0))
    b = painter.paint_tensor(painter.params("", seed=1, steps=4, class_label=3))
    assert (a - b).abs().max() > 1e-3
    assert painter.params("2", seed=1).class_label == 2  # a class number as the prompt
    with pytest.raises(PaintError, match="class_label must be an integer from 0 to 3"):
        painter.params("", class_label=4)


def test_unconditional_folder_ignores_the_prompt_and_refuses_a_class(tmp_path):
    painter = Painter.from_pretrained(build(tmp_path / "pipe"))
    a = painter.paint_tensor(painter.params("a cat", seed=1, steps=3, guidance=7.0))
    b = painter.paint_tensor(painter.params("", seed=1, steps=3))
    assert torch.equal(a, b)
    assert painter.params("a cat", guidance=7.0).guidance == 1.0  # no text, so no guidance: what ran is stored
    with pytest.raises(PaintError, match="unconditional"):
        painter.params("", class_label=1)


def test_cli_paints_a_folder_with_a_note(tmp_path, cli):
    folder = build(tmp_path / "pipe", num_classes=4)
    out = tmp_path / "x.png"
    r = cli(["paint", "a cat", "--model", str(folder), "--steps", "3", "--seed", "1", "--class-label", "2",
             "--out", str(out)])
    assert r.code == 0, r.err
    assert out.exists()
    notes = [line for line in r.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "class-conditional (4 classes)" in notes[0] and "class 2" in notes[0]
    again = tmp_path / "again.png"
    # the class comes back; the folder is a stored path, opened only when the user names it too
    assert cli(["paint", "--from", str(out), "--model", str(folder), "--out", str(again)]).code == 0
    assert PaintParams.from_png(again).class_label == 2
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


@pytest.mark.parametrize("edit, file, message", [
    (("scheduler/scheduler_config.json", "thresholding", True), "scheduler_config.json", "thresholding"),
    (("model_index.json", "scheduler", ["diffusers", "LCMScheduler"]), "model_index.json", "LCMScheduler"),
    (("model_index.json", "unet", ["diffusers", "UNet2DConditionModel"]), "model_index.json", "UNet2DModel only"),
    (("unet/config.json", "down_block_types", ["CrossAttnDownBlock2D", "DownBlock2D"]), "config.json",
     "CrossAttnDownBlock2D"),
])
def test_unsupported_configs_are_refused_in_one_line(tmp_path, edit, file, message):
    folder = build(tmp_path / "pipe")
    name, key, value = edit
    data = json.loads((folder / name).read_text())
    data[key] = value
    (folder / name).write_text(json.dumps(data))
    with pytest.raises(DiffusersFolderError) as e:
        Painter.from_pretrained(folder)
    assert file in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_a_folder_without_model_index_is_no_model(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelDirError, match="nor a diffusers pipeline folder"):
        load_info(tmp_path)


def test_the_lab_lists_a_folder_streams_its_reverse_and_shows_its_schedule(tmp_path):
    from fastapi.testclient import TestClient
    from test_lab_api import sse_events

    from unnoise.lab.app import create_app
    from unnoise.lab.learned import PainterFactory

    folder = build(tmp_path / "pipe", num_classes=4, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    with TestClient(create_app(generate=PainterFactory({"pipe": folder}))) as client:
        assert client.get("/api/status").json()["models"] == ["pipe"]
        events = sse_events(client.get("/api/generate", params={"prompt": "3", "model": "pipe", "steps": 4, "seed": 1}).text)
        assert [k for k, _ in events] == ["start"] + ["step"] * 4 + ["done"]
        assert events[0][1]["sampler"] == "ddpm" and events[0][1]["guidance"] == 1.0
        curves = {s["name"]: s for s in client.get("/api/schedules").json()["schedules"]}
        theirs = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler").alphas_cumprod.double()
        assert torch.allclose(torch.tensor(curves["pipe (model)"]["alphas_cumprod"], dtype=torch.float64), theirs, rtol=5e-5)
        r = client.get("/api/replay", params={"schedule": "pipe (model)", "steps": 3})
        assert [k for k, _ in sse_events(r.text)][-1] == "done"
        r = client.get("/api/guidance", params={"prompt": "3", "model": "pipe", "steps": 2})
        assert r.status_code == 422 and "no guidance to dial" in r.text


def test_cli_lab_refuses_a_folder_that_is_no_model_in_one_line(tmp_path, cli):
    r = cli(["lab", "--model", str(tmp_path)])
    assert r.code == 2 and "nor a diffusers pipeline folder" in r.err


def test_eval_and_distill_refuse_a_folder_in_one_line(tmp_path, cli):
    folder = build(tmp_path / "pipe")
    r = cli(["eval", "quality", "--model", str(folder), "-n", "2"])
    assert r.code == 2 and "a diffusers pipeline folder: unnoise eval scores digits and emoji models only" in r.err
    r = cli(["distill", "--teacher", str(folder), "--out", str(tmp_path / "run")])
    assert r.code == 2 and "a diffusers pipeline folder: unnoise distill teaches from" in r.err


def test_fp16_variant_weights_load_and_bin_pickles_are_refused(tmp_path):
    folder = build(tmp_path / "pipe")
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    unet.save_pretrained(folder / "unet", variant="fp16", safe_serialization=True)
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    load_unet(folder)
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    with pytest.raises(DiffusersFolderError, match="safetensors weights only"):
        Painter.from_pretrained(folder)
