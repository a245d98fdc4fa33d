"""The lab's learned reverse: a real Painter streams every sampler step through /api/generate."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from test_lab_api import assert_json_error, decode_png, sse_events

from unnoise import schedules
from unnoise.lab.app import create_app
from unnoise.lab.learned import PainterFactory
from unnoise.modeldir import save_model_dir
from unnoise.models import UNet, UNetConfig

STUDENT_DEFAULTS = {"steps": 4, "guidance": 2.0, "sampler": "ddim", "spacing": "log_snr_trailing"}


def tiny_model_dirs(tmp_path_factory, *, student: bool = False) -> dict[str, str]:
    """Two exported, untrained tiny models: "colour" (3 channels) and "grey" (1), 16×16; with student=True
    also "student", grey with a guidance input (w ∈ [1, 6]) and a distilled student's defaults.

    The layers a UNet starts at zero (residual and attention outputs, the guidance embedding) get small
    random weights, so the prompt and w reach the picture, as in a trained model."""
    torch.manual_seed(0)  # the untrained weights only; sampling is seeded per request
    dirs = {}
    for name, channels in (("colour", 3), ("grey", 1), *((("student", 1),) if student else ())):
        config = UNetConfig.tiny().replace(image_size=16, in_channels=channels, out_channels=channels,
                                           guidance_embedding=name == "student")
        net = UNet(config)
        with torch.no_grad():
            for param in net.parameters():
                if not param.any():
                    param.normal_(0.0, 0.05)
        meta = SimpleNamespace(channels=channels, image_size=16, name=name, example_prompts=["a square"])
        extra = {} if name != "student" else {"defaults": STUDENT_DEFAULTS, "training": {
            "distilled_from": "grey", "method": "trajectory", "config": {"guidance_min": 1.0, "guidance_max": 6.0}}}
        dirs[name] = save_model_dir(tmp_path_factory.mktemp(name) / "model", net, schedule=schedules.get("linear"),
                                    prediction_type="v_prediction", dataset=meta, text_encoder="test", **extra)
    return dirs


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(generate=PainterFactory(tiny_model_dirs(tmp_path_factory)))) as c:
        yield c


@pytest.mark.parametrize("model", ["grey", "colour"])
def test_every_step_streams_x_t_eps_and_x0(client, model):
    r = client.get("/api/generate", params={"prompt": "a square", "model": model, "steps": 5, "seed": 3, "guidance": 2})
    events = sse_events(r.text)
    assert [k for k, _ in events] == ["start"] + ["step"] * 5 + ["done"]
    start, steps, done = events[0][1], [e for k, e in events if k == "step"], events[-1][1]
    assert start["width"] == 16 and start["model"] == model
    ts = [s["t"] for s in steps]
    assert ts == sorted(ts, reverse=True) and ts[0] > 900  # from static down towards t = 0
    for s in steps:
        assert decode_png(s["x_t"]).shape == (16, 16, 3)
    assert decode_png(done["image"]).shape == (16, 16, 3)
    # the same request paints the same picture (seeded per image)
    again = sse_events(client.get("/api/generate", params={"prompt": "a square", "model": model, "steps": 5,
                                                           "seed": 3, "guidance": 2}).text)
    assert np.array_equal(decode_png(again[-1][1]["image"]), decode_png(done["image"]))


def test_unknown_model_and_sampler_are_422(client):
    assert "model" in assert_json_error(client.get("/api/generate", params={"model": "flowers"}), 422)
    assert "sampler" in assert_json_error(client.get("/api/generate", params={"model": "grey", "sampler": "zig"}), 422)


# --- the page contract's paint, served: POST /api/paint ---------------------------------------------------
def _rgba(body: dict) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(body["data"]), np.uint8).reshape(body["height"], body["width"], 4)


def painted(model_dir, **fields) -> np.ndarray:
    """The Python Painter's (H, W, 3) picture of "a square" with these parameters (noise: flat C·H·W values)."""
    from unnoise.images import to_pil
    from unnoise.pipeline import Painter

    painter = Painter.from_pretrained(model_dir)
    noise = fields.pop("noise", None)
    x = painter.paint_tensor(painter.params("a square", **fields), 1,
                             noise=None if noise is None else torch.tensor(noise).view(1, *painter.shape))[0]
    return np.asarray(to_pil(x).convert("RGB"))


@pytest.mark.parametrize("model", ["grey", "colour"])
def test_paint_answers_the_contract_with_the_painters_picture(client, model):
    """RGBA bytes at the model's size (grey shown as grey, opaque), the calls the sampler makes, the values
    used; the same picture as the Painter's, from the seed or from the caller's start noise."""
    r = client.post("/api/paint", json={"prompt": "a square", "model": model, "seed": 3, "steps": 3, "sampler": "heun"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"], body["calls"], body["seed"], body["steps"]) == (16, 16, 5, 3, 3)
    rgba = _rgba(body)
    dirs = client.app.state.generate.models
    assert (rgba[..., 3] == 255).all() and np.array_equal(rgba[..., :3], painted(dirs[model], seed=3, steps=3,
                                                                                  sampler="heun"))
    noise = torch.randn(3 if model == "colour" else 1, 16, 16, generator=torch.Generator().manual_seed(9))
    r = client.post("/api/paint", json={"prompt": "a square", "model": model, "seed": 3, "steps": 2,
                                        "noise": noise.flatten().tolist()})
    own = painted(dirs[model], seed=3, steps=2, noise=noise.flatten().tolist())
    assert np.array_equal(_rgba(r.json())[..., :3], own)
    assert not np.array_equal(own, painted(dirs[model], seed=3, steps=2))  # the noise, not the seed, started it


@pytest.mark.parametrize("body, words", [
    ({"prompt": "  "}, "prompt is empty"),
    ({"prompt": "a square", "model": "grey", "noise": [0.0] * 5}, "noise must hold 256 values"),
    ({"prompt": "a square", "model": "grey", "noise": [1e300] * 256}, "noise must be finite"),
    ({"prompt": "a square", "model": "flowers"}, "model"),
    ({"prompt": "a square", "model": "grey", "sampler": "zig"}, "sampler"),
    ({"prompt": "a square", "model": "grey", "steps": 5000}, "steps"),
    ({"prompt": "a square", "colour": "red"}, "colour"),
    ({"prompt": "a square", "model": "grey", "seed": False}, "seed"),  # JSON false is not seed 0
    ({"prompt": "a square", "model": "grey", "steps": "3"}, "steps"),
])
def test_paint_refuses_bad_requests_in_one_line(client, body, words):
    assert words in assert_json_error(client.post("/api/paint", json=body), 422)


def test_paint_without_a_model_is_404():
    with TestClient(create_app()) as c:
        assert "no trained model" in assert_json_error(c.post("/api/paint", json={"prompt": "cat face"}), 404)


# --- part 5: image to image --------------------------------------------------------------------------------
def test_img2img_streams_the_painters_own_sdedit(client, tmp_path_factory):
    from PIL import Image

    from unnoise.lab.uploads import the_cat

    params = {"prompt": "a square", "model": "colour", "steps": 10, "strength": 0.4, "seed": 5, "guidance": 2}
    events = sse_events(client.get("/api/img2img", params=params).text)
    kinds = [k for k, _ in events]
    assert kinds == ["start"] + ["step"] * 4 + ["done"]  # strength 0.4 of 10 steps: the last 4 run
    start, steps = events[0][1], [e for k, e in events if k == "step"]
    assert start["kind"] == "img2img" and start["image"] == "cat" and start["strength"] == 0.4
    assert decode_png(start["init"]).shape == (16, 16, 3)  # the cat as the model sees it
    assert all(s["total"] == 4 for s in steps) and steps[0]["t"] < 500  # it starts part of the way up
    # the lab and `unnoise paint --init-image` agree: the same Painter path, the same picture
    painter = client.app.state.generate.painter("colour")
    cat = Image.fromarray(the_cat(256).pixels)
    ref = painter("a square", init_image=cat, strength=0.4, steps=10, seed=5, guidance=2, sampler="dpmpp_2m")[0]
    assert np.abs(decode_png(events[-1][1]["image"]) - np.asarray(ref, dtype=np.int16)).max() <= 1


def test_img2img_takes_an_upload_and_refuses_bad_strength(client):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="PNG")
    info = client.post("/api/images", content=buf.getvalue()).json()
    events = sse_events(client.get("/api/img2img", params={"image": info["id"], "model": "grey", "steps": 4,
                                                           "strength": 1.0}).text)
    assert [k for k, _ in events][-1] == "done" and events[0][1]["image"] == info["id"]
    assert sum(k == "step" for k, _ in events) == 4  # strength 1: every step, from pure static
    assert "strength" in assert_json_error(client.get("/api/img2img", params={"model": "grey", "strength": 0}), 422)
    assert "colour" in assert_json_error(client.get("/api/img2img", params={"model": "nope"}), 422)  # names the choices


# --- part 6: the guidance dial -----------------------------------------------------------------------------
def test_per_image_cfg_is_cfg_row_by_row():
    from unnoise.conditioning.guidance import CFGDenoiser

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, generator=g)

    def denoiser(x, sigma, cond):  # conditional and unconditional rows differ through cond
        return torch.tanh(x * weight[: x.shape[1], None, None] + cond["pooled"][:, :1, None, None] / (1 + sigma[:, None, None, None]))

    x = torch.randn(3, 4, 5, 5, generator=g)
    cond, uncond = {"pooled": torch.ones(1, 8)}, {"pooled": -torch.ones(1, 8)}
    scales = [0.0, 1.0, 7.5]
    sigma = torch.full((3,), 2.0)
    out = CFGDenoiser(denoiser, cond, uncond, scales)(x, sigma)  # one scale per row, one call of 2B rows
    for b, w in enumerate(scales):
        one = CFGDenoiser(denoiser, cond, uncond, w)(x[b : b + 1], sigma[b : b + 1])
        torch.testing.assert_close(out[b : b + 1], one)


def test_the_dial_paints_what_generate_paints_at_each_scale(client):
    params = {"prompt": "a square", "model": "colour", "steps": 4, "seed": 9, "sampler": "ddim"}
    events = sse_events(client.get("/api/guidance", params={**params, "scale": [0, 3, 12]}).text)
    assert [k for k, _ in events] == ["start"] + ["step"] * 4 + ["done"]
    steps, done = [e for k, e in events if k == "step"], events[-1][1]
    assert all(len(s["tiles"]) == 3 and [t["tile"] for t in s["tiles"]] == [0, 1, 2] for s in steps)
    assert done["scales"] == [0, 3, 12] and len(done["images"]) == 3
    for w, image in zip(done["scales"], done["images"]):  # one batch, yet each scale as if painted alone
        alone = sse_events(client.get("/api/generate", params={**params, "guidance": w}).text)[-1][1]["image"]
        assert np.abs(decode_png(image) - decode_png(alone)).max() <= 2, w
    assert len({img for img in done["images"]}) == 3


# --- part 7: where the steps go ----------------------------------------------------------------------------
def test_spacings_stream_each_run_then_the_reference_and_compare(client):
    params = [("prompt", "a square"), ("model", "grey"), ("steps", 3), ("seed", 1),
              ("spacing", "leading"), ("spacing", "trailing")]
    events = sse_events(client.get("/api/spacings/run", params=params).text)
    start, done = events[0][1], events[-1][1]
    assert start["spacings"] == ["leading", "trailing"] and start["reference_steps"] == 50
    assert [r["spacing"] for r in start["chart"]["spacings"]] == ["leading", "trailing"]
    steps = [e for k, e in events if k == "step"]
    assert len(steps) == 3 + 3 + 50 == start["total"]
    assert [s["tiles"][0]["tile"] for s in steps] == [0] * 3 + [1] * 3 + [2] * 50  # one run after another
    leading_ts = [s["tiles"][0]["t"] for s in steps[:3]]
    assert leading_ts == pytest.approx(start["chart"]["spacings"][0]["ts"], abs=1e-3)  # σ passes through float32
    assert len(done["images"]) == 2 and decode_png(done["reference"]).shape == (16, 16, 3)
    for m in done["metrics"]:
        assert m["shape_error"] >= 0 and m["detail_ratio"] > 0 and m["error"] > 0


def test_reference_comparison_separates_shapes_from_detail():
    from unnoise.lab.sweeps import coarse, compare_to_reference

    g = torch.Generator().manual_seed(0)
    ref = (torch.rand(3, 32, 32, generator=g) * 2 - 1) * 0.5 + coarse(torch.rand(3, 32, 32, generator=g) * 2 - 1).float()
    same = compare_to_reference(ref, ref)
    assert same["shape_error"] == 0 and same["detail_ratio"] == pytest.approx(1) and same["error"] == 0
    mushy = compare_to_reference(coarse(ref).float() * 0.7 + ref * 0.3, ref)
    assert mushy["detail_ratio"] == pytest.approx(0.3, rel=1e-6) and mushy["shape_error"] < 1e-6
    moved = compare_to_reference(ref.flip(-1), ref)
    assert moved["shape_error"] > 0.1


def test_a_leaving_client_stops_a_spacing_comparison(tmp_path_factory):
    """The comparison is several runs in a row: a page that leaves must stop the whole of it."""
    import httpx
    from conftest import wait_until

    from unnoise.lab import LabConfig, serving

    app = create_app(LabConfig(max_jobs=1), generate=PainterFactory(tiny_model_dirs(tmp_path_factory)))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        with c.stream("GET", "/api/spacings/run", params={"model": "grey", "steps": 100}) as r:
            lines = r.iter_lines()
            assert next(lines) == "event: start"
            assert wait_until(lambda: app.state.gate.running == 1)
        assert wait_until(lambda: app.state.gate.running == 0, timeout=5)  # 5×100 + 200 steps would take far longer


# --- a distilled student in the lab -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def student_client(tmp_path_factory):
    with TestClient(create_app(generate=PainterFactory(tiny_model_dirs(tmp_path_factory, student=True)))) as c:
        yield c


def test_status_tells_each_models_defaults_and_a_students_guidance_range(student_client):
    status = student_client.get("/api/status").json()
    assert status["models"] == ["colour", "grey", "student"]
    d = status["model_defaults"]
    assert d["student"] == {**STUDENT_DEFAULTS, "guidance_range": [1.0, 6.0]}
    assert d["grey"] == {"steps": 20, "guidance": 3.0, "sampler": "dpmpp_2m", "spacing": schedules.DEFAULT_SPACING}


def test_generate_and_img2img_left_to_the_model_paint_with_its_own_defaults(student_client):
    """Sampler, steps and guidance left out are each model's own (a student's ddim at 4 steps, its w), the
    start event says so, and the picture is the one those parameters paint when named."""
    for model, d in (("student", STUDENT_DEFAULTS), ("grey", {"sampler": "dpmpp_2m", "steps": 20, "guidance": 3.0})):
        events = sse_events(student_client.get("/api/generate", params={"prompt": "a square", "model": model,
                                                                         "seed": 1}).text)
        start = events[0][1]
        assert {k: start[k] for k in ("sampler", "steps", "guidance")} == {k: d[k] for k in ("sampler", "steps", "guidance")}
        assert [k for k, _ in events].count("step") == d["steps"]
        named = sse_events(student_client.get("/api/generate", params={
            "prompt": "a square", "model": model, "seed": 1, **{k: d[k] for k in ("sampler", "steps", "guidance")}}).text)
        assert named[-1][1]["image"] == events[-1][1]["image"]
    start = sse_events(student_client.get("/api/img2img", params={"model": "student", "strength": 1}).text)[0][1]
    assert (start["sampler"], start["steps"], start["guidance"]) == ("ddim", 4, 2.0)


def test_a_students_dial_feeds_each_scale_as_its_input_in_one_batch(student_client):
    """w is the student's input: one call of B rows per step (no unconditional half), and each row is what
    /api/generate paints at that w alone."""
    params = {"prompt": "a square", "model": "student", "steps": 4, "seed": 2, "sampler": "ddim"}
    events = sse_events(student_client.get("/api/guidance", params={**params, "scale": [1, 3.5, 6]}).text)
    assert [k for k, _ in events] == ["start"] + ["step"] * 4 + ["done"]
    done = events[-1][1]
    for w, image in zip(done["scales"], done["images"]):
        alone = sse_events(student_client.get("/api/generate", params={**params, "guidance": w}).text)[-1][1]["image"]
        assert np.abs(decode_png(image) - decode_png(alone)).max() <= 2, w
    assert len(set(done["images"])) == 3


def test_per_image_guidance_input_is_the_students_own_call_row_by_row():
    from unnoise.conditioning.guidance import GuidanceInput

    seen = {}

    def denoiser(x, sigma, cond):
        seen.update(cond)
        return x * cond["guidance"].view(-1, 1, 1, 1) + cond["tokens"].mean()

    cond = {"tokens": torch.ones(1, 3, 4)}
    x = torch.randn(3, 1, 2, 2)
    out = GuidanceInput(denoiser, cond, [1.0, 2.0, 4.0])(x, torch.tensor(1.0))
    assert seen["tokens"].shape == (3, 3, 4) and seen["guidance"].tolist() == [1.0, 2.0, 4.0]
    assert torch.allclose(out, x * torch.tensor([1.0, 2.0, 4.0]).view(-1, 1, 1, 1) + 1)
    with pytest.raises(ValueError, match="needs 2 guidance scales"):
        GuidanceInput(denoiser, cond, [1.0, 2.0, 4.0])(x[:2], torch.tensor(1.0))


@pytest.mark.parametrize("model", ["grey", "colour"])
def test_the_replay_with_a_model_starts_from_img2imgs_very_static(client, model):
    """Part 4: /api/replay?model= and /api/img2img at strength 1 (same seed, steps) start from the same noisy
    picture at the model's size and pass the same noise levels; only the replay lands on the picture."""
    common = {"model": model, "seed": 5, "steps": 6}
    replay = sse_events(client.get("/api/replay", params=common).text)
    learned = sse_events(client.get("/api/img2img", params={**common, "strength": 1, "prompt": "a square"}).text)
    (_, r_start), *r_steps, (_, r_done) = replay
    (_, l_start), *l_steps, _ = learned
    assert (r_start["width"], r_start["height"], r_start["steps"]) == (16, 16, 6) and len(r_steps) == len(l_steps) == 6
    assert [s["t"] for _, s in r_steps] == pytest.approx([s["t"] for _, s in l_steps], abs=1e-6)
    first_r, first_l = decode_png(r_steps[0][1]["x_t"]), decode_png(l_steps[0][1]["x_t"])
    assert np.abs(first_r.astype(int) - first_l.astype(int)).max() <= 1  # the very same static (8-bit rounding)
    assert r_steps[0][1]["signal"] == pytest.approx(l_steps[0][1]["signal"])
    assert r_steps[0][1]["signal"] < 0.01
    init = decode_png(l_start["init"])
    assert np.abs(decode_png(r_done["image"]).astype(int) - init.astype(int)).max() <= 1  # it cheats: exactly back
    other = sse_events(client.get("/api/replay", params={**common, "seed": 6}).text)
    assert np.abs(decode_png(other[1][1]["x_t"]).astype(int) - first_r.astype(int)).mean() > 10  # the seed is the static


def test_the_strength_ladder_repaints_at_each_strength_in_turn(client):
    r = client.get("/api/img2img/ladder", params={"model": "colour", "steps": 10, "strength": [0.2, 0.5, 1]})
    events = sse_events(r.text)
    start, steps, done = events[0][1], [e for k, e in events if k == "step"], events[-1][1]
    assert start["runs"] == [2, 5, 10] and start["total"] == len(steps) == 17
    assert [t["tile"] for s in steps for t in s["tiles"]] == [0] * 2 + [1] * 5 + [2] * 10
    assert done["strengths"] == [0.2, 0.5, 1] and len(done["images"]) == 3
    single = sse_events(client.get("/api/img2img", params={"model": "colour", "steps": 10, "strength": 0.5}).text)
    assert decode_png(done["images"][1]).tolist() == decode_png(single[-1][1]["image"]).tolist()  # img2img's own path
    assert "at most 6" in assert_json_error(client.get("/api/img2img/ladder", params={"strength": [0.1] * 7}), 422)
