"""The lab's HTTP API: endpoints, exactness of what it sends, limits, streams, busy-ness."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from conftest import wait_until
from fastapi.testclient import TestClient
from PIL import Image

from unnoise import images, schedules
from unnoise.lab import GenerateRequest, LabConfig, create_app, serving
from unnoise.lab.streams import replay_source, replay_timesteps
from unnoise.modeldir import ModelDirError

MB = 1024 * 1024


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def decode_png(data_url: str) -> np.ndarray:
    head, b64 = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def assert_json_error(r: httpx.Response, status: int | tuple[int, ...]) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert isinstance(message, str) and len(message) > 5
    return message


# --- the page and the schedules ------------------------------------------------------------------
def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "unnoise lab" in page.text
    for path in ("/static/lab.js", "/static/lab.css"):
        assert client.get(path).status_code == 200
    assert "/api/replay" in client.get("/openapi.json").json()["paths"]


def test_schedules_are_the_library_schedules_exactly(client):
    data = client.get("/api/schedules").json()
    assert [s["name"] for s in data["schedules"]] == schedules.available()
    for s in data["schedules"]:
        ref = schedules.get(s["name"])
        assert s["alphas_cumprod"] == ref.alphas_cumprod.tolist()  # float64, bit for bit through JSON
        assert s["crossing_step"] == ref.crossing_step()
        assert s["zero_terminal_snr"] == ref.zero_terminal_snr
    one = client.get("/api/schedules/cosine+ztsnr").json()
    assert one["name"] == "cosine+ztsnr" and one["alphas_cumprod"][-1] == 0.0
    assert_json_error(client.get("/api/schedules/quadratic"), 422)


# --- the forward part: what the page composes from must be exact -----------------------------------
def test_forward_sends_the_picture_and_one_seeded_noise_draw(client):
    d = client.get("/api/forward", params={"seed": 7}).json()
    h, w = d["height"], d["width"]
    assert max(h, w) == 256
    x0 = np.frombuffer(base64.b64decode(d["x0"]), dtype=np.uint8).reshape(h, w, 3)
    cat = np.asarray(images.limit_size(images.default_cat(), 256))
    assert np.array_equal(x0, cat)
    eps = np.frombuffer(base64.b64decode(d["noise"]), dtype="<f4").reshape(h, w, 3)
    expected = torch.randn((3, h, w), generator=torch.Generator().manual_seed(7)).permute(1, 2, 0).numpy()
    assert np.array_equal(eps, expected)
    other = client.get("/api/forward", params={"seed": 8}).json()
    assert other["noise"] != d["noise"] and other["x0"] == d["x0"]


def test_page_formula_matches_add_noise(client):
    """What the page computes per pixel, in float64 from the sent data, equals schedule.add_noise."""
    d = client.get("/api/forward").json()
    h, w = d["height"], d["width"]
    x0 = np.frombuffer(base64.b64decode(d["x0"]), dtype=np.uint8).reshape(h, w, 3) / 127.5 - 1
    eps = np.frombuffer(base64.b64decode(d["noise"]), dtype="<f4").reshape(h, w, 3).astype(np.float64)
    s = schedules.get("sigmoid")
    t = 400
    ab = float(s.alphas_cumprod[t])
    page = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    ref = s.add_noise(torch.from_numpy(x0).permute(2, 0, 1)[None], torch.from_numpy(eps).permute(2, 0, 1)[None], torch.tensor([t]))
    assert np.allclose(page, ref[0].permute(1, 2, 0).numpy(), atol=1e-12)


# --- uploads ---------------------------------------------------------------------------------------------
def test_upload_is_shrunk_flattened_and_kept(client):
    rgba = Image.new("RGBA", (400, 300), (255, 0, 0, 0))  # fully transparent red → white on the page
    rgba.paste((0, 0, 255, 255), (0, 0, 200, 300))
    r = client.post("/api/images", content=png_bytes(rgba))
    assert r.status_code == 201, r.text
    info = r.json()
    assert (info["width"], info["height"]) == (256, 192)
    again = client.post("/api/images", content=png_bytes(rgba)).json()
    assert again["id"] == info["id"]  # content-addressed
    d = client.get("/api/forward", params={"image": info["id"]}).json()
    x0 = np.frombuffer(base64.b64decode(d["x0"]), dtype=np.uint8).reshape(192, 256, 3)
    assert tuple(x0[10, 10]) == (0, 0, 255) and tuple(x0[10, 250]) == (255, 255, 255)


def test_jpeg_and_gif_uploads_are_accepted(client):
    im = Image.linear_gradient("L").convert("RGB").resize((64, 48))
    for fmt in ("JPEG", "GIF"):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        r = client.post("/api/images", content=buf.getvalue())
        assert r.status_code == 201 and r.json()["width"] == 64, (fmt, r.text)


def test_oversized_upload_is_refused_by_its_declared_length(client):
    big = png_bytes(Image.new("RGB", (8, 8))) + b"\0" * (6 * MB)
    assert "5 MB" in assert_json_error(client.post("/api/images", content=big), 413)


def test_oversized_upload_without_a_length_is_refused_while_reading(client):
    def chunks():  # chunked transfer: no Content-Length to go by
        for _ in range(6):
            yield b"\0" * MB

    assert_json_error(client.post("/api/images", content=chunks()), 413)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, I am a text file pretending to be a picture\n" * 10,
        png_bytes(Image.new("RGB", (32, 32), "white"))[:-30],  # truncated
        b"\x89PNG\r\n\x1a\n" + b"\0" * 100,  # a PNG signature and garbage
    ],
    ids=["empty", "text", "truncated-png", "garbage-png"],
)
def test_non_images_are_refused_with_json(client, data):
    assert_json_error(client.post("/api/images", content=data), (415, 422))


def test_tiff_is_not_an_accepted_format(client):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="TIFF")
    assert "TIFF" in assert_json_error(client.post("/api/images", content=buf.getvalue()), 415)


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width×height black pixels: a few kB that decode to a huge image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(6)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(6000, 6000), (16000, 10000)], ids=["over-the-lab-cap", "over-pillows-cap"])
def test_decompression_bombs_are_refused_before_decoding(client, width, height):
    data = bomb_png(width, height)
    assert len(data) < 5 * MB
    assert "too large" in assert_json_error(client.post("/api/images", content=data), 413)


def test_unknown_and_malformed_image_ids(client):
    assert "upload it again" in assert_json_error(client.get("/api/forward", params={"image": "0" * 20}), 404)
    assert_json_error(client.get("/api/forward", params={"image": "../etc/passwd"}), 422)
    assert_json_error(client.get("/api/replay", params={"image": "f" * 20}), 404)


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/replay", {"steps": 0}),
        ("/api/replay", {"steps": 1001}),
        ("/api/replay", {"steps": "many"}),
        ("/api/replay", {"schedule": "linear+foo"}),
        ("/api/forward", {"seed": -1}),
        ("/api/forward", {"seed": 2**32}),
        ("/api/generate", {"prompt": "x" * 301}),
        ("/api/generate", {"steps": 1001}),
        ("/api/generate", {"num_images": 5}),
    ],
)
def test_bad_parameters_get_a_json_422(client, path, params):
    message = assert_json_error(client.get(path, params=params), 422)
    assert next(iter(params)) in message  # the message names the parameter


def test_unknown_routes_and_methods_are_json(client):
    assert_json_error(client.get("/api/nothing"), 404)
    assert_json_error(client.delete("/api/schedules"), 405)


# --- streams ---------------------------------------------------------------------------------------------
def test_replay_stream_walks_back_to_the_picture(client):
    r = client.get("/api/replay", params={"steps": 12, "schedule": "cosine", "seed": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    kinds = [k for k, _ in events]
    assert kinds == ["start"] + ["step"] * 12 + ["done"]
    start, steps, done = events[0][1], [d for k, d in events if k == "step"], events[-1][1]
    ts = schedules.get("cosine").timesteps(12, "trailing").tolist()
    assert start["ts"] == ts and ts[0] == 999
    assert [s["t"] for s in steps] == ts and [s["index"] for s in steps] == list(range(12))
    s = schedules.get("cosine")
    for step in steps:
        assert step["signal"] == pytest.approx(math.sqrt(float(s.alphas_cumprod[int(step["t"])])))
        assert step["signal"] ** 2 + step["noise"] ** 2 == pytest.approx(1)
    # the first x_t is the forward process at T−1 under the same seed; the end is the picture itself
    d = client.get("/api/forward", params={"seed": 3}).json()
    h, w = d["height"], d["width"]
    x0 = torch.from_numpy(np.frombuffer(base64.b64decode(d["x0"]), dtype=np.uint8).reshape(h, w, 3).copy())
    eps = torch.from_numpy(np.frombuffer(base64.b64decode(d["noise"]), dtype="<f4").reshape(h, w, 3).copy())
    x0 = x0.permute(2, 0, 1).double() / 127.5 - 1
    x_T = s.add_noise(x0[None], eps.permute(2, 0, 1).double()[None], torch.tensor([999]))[0]
    expected_first = np.asarray(images.to_pil(x_T), dtype=np.int16)
    assert np.abs(decode_png(steps[0]["x_t"]) - expected_first).max() <= 1
    cat = np.asarray(images.limit_size(images.default_cat(), 256), dtype=np.int16)
    assert np.abs(decode_png(done["image"]) - cat).max() <= 1
    # the replay's ε̂ and x̂0 never change, so they are sent once
    assert steps[0]["eps"] and steps[0]["x0"] and all(st["eps"] is None and st["x0"] is None for st in steps[1:])


def test_replay_with_zero_terminal_snr_starts_where_the_picture_still_is(client):
    events = sse_events(client.get("/api/replay", params={"steps": 5, "schedule": "linear+ztsnr"}).text)
    start, done = events[0][1], events[-1][1]
    assert start["ts"][0] == 998  # ᾱ_999 = 0: x_999 holds no trace of the picture, even knowing ε
    cat = np.asarray(images.limit_size(images.default_cat(), 256), dtype=np.int16)
    assert np.abs(decode_png(done["image"]) - cat).max() <= 1


def test_generate_is_reserved_until_a_model_plugs_in(client):
    assert "trained model" in assert_json_error(client.get("/api/generate", params={"prompt": "a cat"}), 404)


def test_a_generate_source_plugs_into_the_same_machinery():
    """The learned reverse will come as a factory of Sources; any Source streams the same way."""
    s = schedules.get("linear")
    seen: list[GenerateRequest] = []

    def factory(req: GenerateRequest):
        if req.model != "emoji":
            raise ModelDirError(f"unknown model {req.model!r}")
        seen.append(req)
        g = torch.Generator().manual_seed(req.seed)
        x0, eps = torch.rand((3, 8, 8), generator=g) * 2 - 1, torch.randn((3, 8, 8), generator=g)
        return replay_source(s, x0, eps, replay_timesteps(s, req.steps)), {"width": 8, "height": 8}

    with TestClient(create_app(generate=factory)) as c:
        assert c.get("/api/status").json()["learned"] is True
        events = sse_events(c.get("/api/generate", params={"prompt": "a cat", "steps": 4, "seed": 5}).text)
        assert [k for k, _ in events] == ["start", "step", "step", "step", "step", "done"]
        assert events[0][1]["prompt"] == "a cat" and events[0][1]["width"] == 8
        assert seen == [GenerateRequest("a cat", "emoji", None, 4, None, 5, 1)]  # left out: the model's defaults
        assert "unknown model" in assert_json_error(c.get("/api/generate", params={"model": "flowers"}), 422)


def test_a_failing_source_reports_an_error_event_and_frees_its_slot():
    def factory(req):
        def boom(emit):
            raise RuntimeError("the network fell over")

        return boom, {}

    app = create_app(generate=factory)
    with TestClient(app) as c:
        events = sse_events(c.get("/api/generate").text)
        # a bug: the page learns its type, not its message (the log has both, and the traceback)
        assert [k for k, _ in events] == ["start", "error"] and "RuntimeError" in events[1][1]["error"]
        assert "fell over" not in events[1][1]["error"]
        deadline = time.monotonic() + 2
        while app.state.gate.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.gate.running == 0


# --- busy-ness and disconnects, over a real socket -----------------------------------------------------
@pytest.fixture
def live_server():
    """The lab under uvicorn on a free port, one run at a time and one place in the queue."""
    app = create_app(LabConfig(max_jobs=1, max_waiting=1, wait_timeout=15.0))
    with serving(app) as url:
        yield app, url



def test_busy_lab_queues_then_says_429_and_a_leaving_client_stops_its_work(live_server):
    app, url = live_server
    gate = app.state.gate
    long_run = {"steps": 1000}  # 1000 steps of a 256-pixel cat: far more than socket buffers hold
    with httpx.Client(base_url=url, timeout=30) as a, httpx.Client(base_url=url, timeout=30) as b, httpx.Client(base_url=url, timeout=30) as c:
        with a.stream("GET", "/api/replay", params=long_run) as first:
            assert first.status_code == 200
            lines = first.iter_lines()
            assert next(lines) == "event: start"
            assert gate.running == 1

            queued: dict = {}
            waiter = threading.Thread(target=lambda: queued.update(r=b.get("/api/replay", params={"steps": 3})))
            waiter.start()
            assert wait_until(lambda: gate.waiting == 1)

            third = c.get("/api/replay", params={"steps": 3})  # one running, one waiting: no room
            assert_json_error(third, 429)
            assert int(third.headers["Retry-After"]) > 0
        # The first client hung up after one event: its worker must stop and hand the slot to the queued
        # run at once (finishing the 1000 steps instead would take well over 3 s).
        assert wait_until(lambda: gate.waiting == 0, timeout=3)
        waiter.join(timeout=20)
        assert queued["r"].status_code == 200 and queued["r"].text.count("event: step") == 3
    assert wait_until(lambda: gate.running == 0 and gate.waiting == 0)


# --- parts 5–7 without a model; the sampler and spacing lists -------------------------------------------
def test_samplers_are_the_registry_and_spacings_the_schedules():
    from unnoise.sampling import SAMPLERS

    with TestClient(create_app()) as c:
        data = c.get("/api/samplers").json()
    assert [s["name"] for s in data["samplers"]] == list(SAMPLERS)
    assert all(s["order"] == SAMPLERS[s["name"]].order and s["paper"] for s in data["samplers"])
    assert data["default"] in SAMPLERS
    assert data["spacings"] == list(schedules.SPACINGS) and data["default_spacing"] == schedules.DEFAULT_SPACING


def test_spacings_chart_is_the_schedules_own_sigmas(client):
    data = client.get("/api/spacings", params={"schedule": "cosine", "steps": 8}).json()
    s = schedules.get("cosine")
    assert data["steps"] == 8 and data["crossing_step"] == s.crossing_step()
    assert [r["spacing"] for r in data["spacings"]] == list(schedules.SPACINGS)
    for row in data["spacings"]:
        sigmas = s.sigmas(8, row["spacing"])
        assert row["sigmas"] == sigmas.tolist() and row["sigmas"][-1] == 0
        assert row["ts"] == s.sigma_to_t(sigmas[:-1]).tolist()
        assert row["noisy_steps"] == int((sigmas[:-1] > 1).sum()) and row["noisy_steps"] + row["clean_steps"] == 8
    leading = client.get("/api/spacings", params=[("spacing", "leading"), ("spacing", "leading")]).json()
    assert [r["spacing"] for r in leading["spacings"]] == ["leading"]  # once, however often asked
    assert leading["spacings"][0]["ts"][0] == 875  # leading never starts from the top at 8 steps


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/spacings", {"steps": 0}),
        ("/api/spacings", {"steps": 1001}),
        ("/api/spacings", {"spacing": "uniform"}),
        ("/api/spacings", [("spacing", "leading")] * 7),
        ("/api/img2img", {"strength": 0}),
        ("/api/img2img", {"strength": 1.01}),
        ("/api/img2img", {"image": "../etc"}),
        ("/api/img2img", {"steps": 1001}),
        ("/api/img2img", {"prompt": "x" * 301}),
        ("/api/guidance", {"scale": 31}),
        ("/api/guidance", {"scale": "loud"}),
        ("/api/guidance", [("scale", 1)] * 7),
        ("/api/guidance", {"steps": 1001}),
        ("/api/spacings/run", {"steps": 101}),
        ("/api/spacings/run", {"spacing": "uniform"}),
        ("/api/spacings/run", {"seed": -1}),
    ],
)
def test_bad_parameters_of_parts_5_to_7_get_a_json_422(client, path, params):
    message = assert_json_error(client.get(path, params=params), 422)
    name = params[0][0] if isinstance(params, list) else next(iter(params))
    assert name in message  # the message names the parameter


@pytest.mark.parametrize("path", ["/api/img2img", "/api/guidance", "/api/spacings/run"])
def test_parts_5_to_7_are_reserved_until_a_model_plugs_in(client, path):
    assert "trained model" in assert_json_error(client.get(path), 404)
    assert client.get("/api/status").json()["parts"] == []


def test_a_bare_generate_callable_offers_no_parts_5_to_7():
    with TestClient(create_app(generate=lambda req: (None, {}))) as c:
        assert c.get("/api/status").json()["parts"] == []
        assert "cannot" in assert_json_error(c.get("/api/guidance"), 404)


def test_img2img_of_an_unknown_upload_is_404():
    class Parts:
        def __call__(self, req):
            raise AssertionError("not called")

        img2img = dial = spacings = __call__

    with TestClient(create_app(generate=Parts())) as c:
        assert c.get("/api/status").json()["parts"] == ["img2img", "dial", "spacings"]
        assert "no image" in assert_json_error(c.get("/api/img2img", params={"image": "0" * 20}), 404)


def test_parts_5_to_7_share_the_run_limit():
    """A full lab turns the new streams away with 429 + Retry-After too (before any model work)."""
    class Parts:
        def __call__(self, req):
            return (lambda emit: torch.zeros(3, 2, 2)), {}

        img2img = dial = spacings = __call__

    app = create_app(LabConfig(max_jobs=1, max_waiting=0), generate=Parts())
    with TestClient(app) as c:
        assert app.state.gate._take()  # the one place is taken
        for path in ("/api/img2img", "/api/guidance", "/api/spacings/run", "/api/generate"):
            r = c.get(path)
            assert_json_error(r, 429)
            assert int(r.headers["Retry-After"]) > 0
        app.state.gate._give_back()
        assert [k for k, _ in sse_events(c.get("/api/guidance").text)] == ["start", "done"]
