"""The lab as a static site, in a real browser: every part works with no unnoise process running.

One site per module, exported from the bundled models (`unnoise lab --export`) and served by a plain
`python -m http.server` subprocess; Debian chromium via playwright as in test_lab_browser.py.  Pages are
shared by test groups (module-scoped) to keep the browser work small on a 2-core machine.
Screenshots land in artifacts/lab/static-*.png for a person to look at.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import static_host
from PIL import Image
from test_lab_api import bomb_png
from test_lab_browser import ARTIFACTS, browser, canvas_pixels, open_page, set_slider  # noqa: F401  (browser: a fixture)

from unnoise import images, schedules
from unnoise.lab.export import export_site
from unnoise.lab.uploads import decode_upload
from unnoise.modeldir import ModelDirError, resolve

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
STATIC = Path(__file__).resolve().parents[1] / "src" / "unnoise" / "lab" / "static"


MODELS = ("emoji", "emoji-fast", "digits")  # a teacher, a distilled student, a grey model: few, to export fast


def site_models() -> dict[str, Path]:
    try:
        return {name: resolve(name) for name in MODELS}
    except ModelDirError as e:
        pytest.skip(f"the bundled models are not installed: {e}")


@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    """The exported site under `python -m http.server` (no unnoise anywhere in that process)."""
    site = tmp_path_factory.mktemp("host") / "lab"
    export_site(site, list(site_models()))
    # the host serves the folder above the site: the page lives under /lab/, as on a project page of a static host
    with static_host(site.parent, "lab/") as url:
        yield url


@pytest.fixture(scope="module")
def page(browser, site_url):
    """One page for the parts that need no network: forward, schedules, replay, spacing chart, uploads."""
    pg = open_page(browser, site_url)
    yield pg
    pg.close()
    assert not pg.lab_errors, pg.lab_errors  # no script errors, no failed requests
    assert not [u for u in pg.lab_requests if "/api/" in u]  # nothing asked a server


def test_static_page_starts_with_its_own_lists(page):
    assert page.get_attribute('meta[name="unnoise-site"]', "content") == "site.json"
    names = page.eval_on_selector_all("#schedule-select option", "os => os.map(o => o.value)")
    assert names == schedules.available()
    models = sorted(MODELS)
    assert page.eval_on_selector_all("#learn-model option", "os => os.map(o => o.value)") == models
    assert page.inner_text("#model-status") == "a trained model is loaded"
    assert "in your browser" in page.inner_text("footer")
    chart = canvas_pixels(page, "#schedule-canvas")
    assert (chart.sum(axis=2) < 600).mean() > 0.005  # curves and axes were drawn
    steps_chart = canvas_pixels(page, "#steps-canvas")
    assert (steps_chart.sum(axis=2) < 600).mean() > 0.001
    page.screenshot(path=ARTIFACTS / "static-page.png", full_page=True)


def test_static_forward_is_the_servers_forward(page):
    """The cat and the seed's noise draw are the server's to the grey level: x_t = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε."""
    cat = np.asarray(images.limit_size(images.default_cat(), 256), dtype=np.int16)
    assert np.array_equal(page_picture(page), cat)  # the picture exactly, from the site's PNG
    set_slider(page, 500)
    s = schedules.get("linear")
    x0 = torch.from_numpy(cat.astype(np.float64)).permute(2, 0, 1) / 127.5 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32).double()
    x_t = s.add_noise(x0[None], eps[None], torch.tensor([500]))[0]
    assert np.abs(canvas_pixels(page, "#forward-canvas") - np.asarray(images.to_pil(x_t), dtype=np.int16)).max() <= 1
    page.click("#new-noise")
    page.wait_for_function("window.lab.seed === 1")
    set_slider(page, 0)


def test_static_spacing_chart_is_the_servers(page):
    """Part 7's chart: the same σ and t per step as /api/spacings (the engine's schedules)."""
    from unnoise.lab.sweeps import spacing_chart

    page.fill("#steps-steps", "6")
    page.dispatch_event("#steps-steps", "change")
    page.wait_for_function("window.lab.stepsChart && window.lab.stepsChart.steps === 6")
    chart = page.evaluate("window.lab.stepsChart")
    want = spacing_chart(schedules.get("linear"), 6, schedules.SPACINGS)
    for got, row in zip(chart["spacings"], want["spacings"], strict=True):
        assert got["spacing"] == row["spacing"] and got["noisy_steps"] == row["noisy_steps"]
        np.testing.assert_allclose(got["sigmas"], row["sigmas"], rtol=1e-12)
        np.testing.assert_allclose(got["ts"], row["ts"], atol=1e-9)
    page.fill("#steps-steps", "8")
    page.dispatch_event("#steps-steps", "change")


def test_static_replay_streams_and_stops(page):
    page.select_option("#replay-steps", "10")
    page.evaluate("document.getElementById('versus-model').value = 'emoji'")
    page.click("#replay-run")
    page.wait_for_function("window.lab.replay.finished", timeout=30_000)
    assert page.evaluate("window.lab.replay.frames.length") == 11  # 10 steps and the finished picture
    page.wait_for_function("!window.lab.replay.playing", timeout=10_000)
    assert page.eval_on_selector("#replay-xt", "i => i.complete && i.naturalWidth") == 32  # the model's size
    page.locator("#replay").screenshot(path=ARTIFACTS / "static-replay.png")


def page_picture(page) -> np.ndarray:
    """Part 1's picture as the page holds it, (H, W, 3) bytes."""
    h, w = page.evaluate("[window.lab.height, window.lab.width]")
    return np.asarray(page.evaluate("Array.from(window.lab.x0, (v) => Math.round((v + 1) * 127.5))"),
                      dtype=np.int16).reshape(h, w, 3)


def upload(page, path: Path) -> str:
    before = page.evaluate("window.lab.image")
    page.set_input_files("#upload", str(path))
    page.wait_for_function("(before) => !document.getElementById('forward-error').hidden || window.lab.image !== before",
                           arg=before, timeout=15_000)
    return "" if page.is_hidden("#forward-error") else page.inner_text("#forward-error")


def test_static_bad_uploads_get_the_servers_words(page, tmp_path):
    text = tmp_path / "notes.png"  # the name says picture, the bytes say otherwise
    text.write_text("shopping list: milk, eggs, a cat\n")
    assert upload(page, text) == "Could not use “notes.png”: not an image: cannot identify the uploaded bytes as any image format"
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(bomb_png(20_000, 20_000))
    started = time.monotonic()
    assert upload(page, bomb) == ("Could not use “huge.png”: image too large: 20000×20000 pixels "
                                  "(the limit is 16,777,216 pixels)")
    assert time.monotonic() - started < 5  # refused from its header, never decoded
    tiff = tmp_path / "scan.tif"
    Image.new("RGB", (8, 8)).save(tiff)
    assert upload(page, tiff) == "Could not use “scan.tif”: TIFF images are not accepted; use PNG, JPEG, GIF, WebP or BMP"
    assert page.evaluate("window.lab.image") == "cat"  # the old picture stays


def test_static_upload_replaces_the_picture(page, tmp_path):
    path = tmp_path / "stripes.png"
    im = Image.new("RGBA", (600, 400), (255, 255, 255, 0))  # transparent: composited onto white, as the server does
    for x in range(0, 600, 100):
        im.paste((200, 30, 30, 255), (x, 0, x + 50, 400))
    im.save(path)
    assert upload(page, path) == ""
    assert page.evaluate("[window.lab.width, window.lab.height]") == [256, 171]  # longer side 256, as the server's
    served = decode_upload(path.read_bytes(), max_side=256, max_pixels=4096**2).astype(np.int16)  # the server's door
    diff = np.abs(page_picture(page) - served)
    assert diff.max() <= 1  # Pillow's LANCZOS in the page; the canvas composites transparency within a level
    opaque = tmp_path / "opaque.png"  # a photo-like picture: smooth colour and grain, taller than wide
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 700)[:, None, None] * np.array([1.0, 0.5, 0.2]) + rng.normal(0, 20, (700, 420, 3))
    Image.fromarray(ramp.clip(0, 255).astype(np.uint8)).save(opaque)
    assert upload(page, opaque) == ""
    assert np.array_equal(page_picture(page), decode_upload(opaque.read_bytes(), max_side=256, max_pixels=4096**2))
    page.click("#use-cat")
    page.wait_for_function("window.lab.image === 'cat'")


BAD_INPUTS = [  # (control, value typed or forced into it, the same request to the served lab)
    ("learn-steps", "0", {"steps": "0"}),
    ("learn-steps", "1000000000", {"steps": "1000000000"}),
    ("learn-steps", "1e9", {"steps": "1e9"}),
    ("learn-guidance", "NaN", {"guidance": ""}),  # a number input keeps no "NaN": it sends an empty value
    ("learn-prompt", "a" * 301, {"prompt": "a" * 301}),
    ("learn-model", "nope", {"model": "nope"}),
]


@pytest.fixture(scope="module")
def served():
    """The served lab over the same models (in-process, no socket): what the static page must match."""
    from fastapi.testclient import TestClient

    from unnoise.lab import create_app
    from unnoise.lab.learned import PainterFactory

    return TestClient(create_app(generate=PainterFactory(site_models())))


@pytest.fixture(scope="module")
def served_words(served):
    """What the served lab answers each bad request, as its page words it (friendly(detail[0]))."""

    def words(page, params: dict) -> str:
        r = served.get("/api/generate", params=params)
        assert r.status_code == 422, r.text
        return page.evaluate("d => import('./static/common.js').then((m) => m.friendly(d))", r.json()["detail"][0])

    return words


@pytest.mark.parametrize("control, value, params", BAD_INPUTS, ids=[f"{c}={v[:8]}" for c, v, _ in BAD_INPUTS])
def test_static_bad_input_reads_as_the_served_page_says_it(page, served_words, control, value, params):
    page.evaluate("""([id, v]) => {
        const el = document.getElementById(id);
        if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === v)) el.add(new Option(v, v));
        el.value = v;
    }""", [control, value])
    page.click("#learn-run")
    page.wait_for_selector("#learn-error:not([hidden])", timeout=10_000)
    assert page.inner_text("#learn-error") == served_words(page, params)
    assert page.inner_text("#learn-readout") == "stopped" and page.is_enabled("#learn-run")
    page.evaluate("""() => {
        for (const [id, v] of [["learn-steps", "20"], ["learn-guidance", "3"], ["learn-prompt", ""], ["learn-model", "emoji"]])
            document.getElementById(id).value = v;
    }""")


# --- the painting parts: the runtime's real networks, in the page ----------------------------------------------
@pytest.fixture(scope="module")
def paint_page(browser, site_url):
    """One page for the parts that paint (3–7): they share the runtime's ONNX sessions once loaded."""
    pg = open_page(browser, site_url)
    yield pg
    pg.close()
    assert not pg.lab_errors, pg.lab_errors
    assert not [u for u in pg.lab_requests if "/api/" in u]


def finished(pg, name: str, timeout: float = 60_000) -> None:
    pg.wait_for_function(f"window.lab.{name} && window.lab.{name}.finished", timeout=timeout)


def natural_sizes(pg, selector: str) -> list[int]:
    return pg.eval_on_selector_all(selector, "is => is.map((i) => i.complete ? i.naturalWidth : -1)")


def data_url_pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


def test_static_part3_paints_every_step(paint_page, served):
    pg = paint_page
    pg.fill("#learn-prompt", "")  # the painter in the page asks for a prompt, in one clear line
    pg.click("#learn-run")
    pg.wait_for_selector("#learn-error:not([hidden])", timeout=30_000)
    assert pg.inner_text("#learn-error") == 'prompt is empty: type what to paint, e.g. "cat face"'
    assert pg.inner_text("#learn-readout") == "stopped" and pg.is_enabled("#learn-run")
    pg.fill("#learn-prompt", "red apple")
    pg.fill("#learn-steps", "6")
    pg.click("#learn-run")
    finished(pg, "learned")
    assert pg.is_hidden("#learn-error")
    run = pg.evaluate("window.lab.learned.frames.map(f => ({final: !!f.final, index: f.index, t: f.t}))")
    assert [f["index"] for f in run if not f["final"]] == list(range(6)) and run[-1]["final"]
    ts = [f["t"] for f in run if not f["final"]]
    assert ts == sorted(ts, reverse=True) and ts[0] > 900  # from the static down
    assert natural_sizes(pg, "#learn-images img") == [32, 32, 32]
    # the picture the served lab paints for the same request (its stream's last event), to the grey level
    from test_lab_api import sse_events

    events = sse_events(served.get("/api/generate", params={"prompt": "red apple", "model": "emoji", "steps": 6,
                                                              "seed": 0, "guidance": 3, "sampler": "dpmpp_2m"}).text)
    diff = np.abs(data_url_pixels(pg.evaluate("window.lab.learned.frames.at(-1).x0")) - data_url_pixels(events[-1][1]["image"]))
    assert diff.mean() <= 2 and np.percentile(diff, 99) <= 16, (diff.mean(), np.percentile(diff, 99))
    pg.fill("#learn-prompt", "a handwritten seven")
    pg.select_option("#learn-model", "digits")  # a grey model: its own defaults, grey pictures
    pg.fill("#learn-steps", "4")
    pg.click("#learn-run")
    pg.wait_for_function("window.lab.learned.finished && window.lab.learned.frames.length === 5", timeout=60_000)
    pg.wait_for_function("!window.lab.learned.playing", timeout=10_000)
    assert "finished picture, after 4 steps" in pg.inner_text("#learn-readout")
    pg.locator("#reverse").screenshot(path=ARTIFACTS / "static-learned.png")
    pg.select_option("#learn-model", "emoji")


def test_static_stop_ends_a_run_and_the_page_goes_on(paint_page):
    pg = paint_page
    pg.fill("#learn-prompt", "a smiling cat")
    pg.fill("#learn-steps", "1000")
    pg.click("#learn-run")
    pg.wait_for_function("window.lab.learned.frames.length >= 2", timeout=60_000)
    assert pg.is_disabled("#learn-run")
    pg.click("#learn-stop")
    pg.wait_for_function("document.getElementById('learn-readout').textContent === 'stopped: you pressed Stop'", timeout=5_000)
    assert pg.is_enabled("#learn-run") and pg.is_hidden("#learn-error")
    frames = pg.evaluate("window.lab.learned.frames.length")
    time.sleep(0.5)
    assert pg.evaluate("window.lab.learned.frames.length") == frames < 1000  # nothing runs on after Stop
    pg.fill("#learn-steps", "4")
    pg.click("#learn-run")
    finished(pg, "learned")  # the next run is not held up by the stopped one


def test_static_part4_replay_beside_the_learned_reverse(paint_page):
    pg = paint_page
    pg.select_option("#replay-steps", "10")
    pg.fill("#versus-prompt", "red heart")
    pg.click("#replay-run")
    finished(pg, "replay")
    finished(pg, "versus")
    replay = pg.evaluate("window.lab.replay.frames.filter(f => !f.final).map(f => f.t)")
    versus = pg.evaluate("window.lab.versus.frames.filter(f => !f.final).map(f => f.t)")
    np.testing.assert_allclose(replay, versus, atol=1e-6)  # the same noise levels, step for step
    assert natural_sizes(pg, "#replay-images img") == [32, 32, 32]
    pg.locator("#replay").screenshot(path=ARTIFACTS / "static-replay-versus.png")


def test_static_img2img_on_an_uploaded_picture_and_the_ladder(paint_page, tmp_path):
    pg = paint_page
    path = tmp_path / "stripes.png"
    im = Image.new("RGB", (300, 200), "white")
    for x in range(0, 300, 60):
        im.paste((200, 30, 30), (x, 0, x + 30, 200))
    im.save(path)
    assert upload(pg, path) == ""
    pg.fill("#i2i-prompt", "red heart")
    pg.fill("#i2i-strength", "0.5")
    pg.fill("#i2i-steps", "10")
    pg.click("#i2i-run")
    finished(pg, "img2img")
    steps = pg.evaluate("window.lab.img2img.frames.filter(f => !f.final).map(f => f.t)")
    assert len(steps) == 5 and steps[0] < 700  # strength 0.5 of 10 steps: part of the way up, not from the static
    assert natural_sizes(pg, "#i2i-images img") == [32, 32, 32, 32]
    init = pg.evaluate("""() => { const i = document.getElementById('i2i-init'), c = document.createElement('canvas');
        c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data); }""")
    seen = np.asarray(init, dtype=np.int16).reshape(32, 32, 4)[..., :3]
    kept = Image.fromarray(decode_upload(path.read_bytes(), max_side=256, max_pixels=4096**2))
    assert np.array_equal(seen, np.asarray(images.fit(kept, 32)))  # the uploaded stripes, as the served lab's model sees them
    pg.fill("#i2i-strengths", "0.5, 1")
    pg.fill("#i2i-steps", "4")
    pg.click("#i2i-ladder-run")
    finished(pg, "ladder")
    assert pg.eval_on_selector_all("#i2i-ladder figcaption b", "bs => bs.map(b => b.textContent)") == [
        "the picture", "strength 0.5", "strength 1"]
    assert natural_sizes(pg, "#i2i-ladder img") == [32, 32, 32]
    pg.locator("#img2img").screenshot(path=ARTIFACTS / "static-img2img.png")
    pg.click("#use-cat")
    pg.wait_for_function("window.lab.image === 'cat'")


def test_static_guidance_dial_and_spacing_comparison(paint_page):
    pg = paint_page
    pg.fill("#dial-prompt", "red heart")
    pg.fill("#dial-scales", "0, 3, 7")
    pg.fill("#dial-steps", "6")
    pg.click("#dial-run")
    finished(pg, "dial")
    sources = pg.eval_on_selector_all("#dial-tiles img", "is => is.map(i => i.src)")
    assert sources == pg.evaluate("window.lab.dial.done.images") and len(set(sources)) == 3
    assert "3 scales × 6 steps" in pg.inner_text("#dial-readout")
    pg.locator("#guidance").screenshot(path=ARTIFACTS / "static-dial.png")
    pg.fill("#dial-steps", "1000")  # a long run of tiles stops too
    pg.click("#dial-run")
    pg.wait_for_function("/^step \\d+\\/1000$/.test(document.getElementById('dial-readout').textContent)", timeout=60_000)
    pg.click("#dial-stop")
    pg.wait_for_function("document.getElementById('dial-readout').textContent === 'stopped: you pressed Stop'", timeout=5_000)
    assert pg.is_enabled("#dial-run") and not pg.evaluate("window.lab.dial.finished")
    pg.fill("#steps-prompt", "red heart")
    pg.fill("#steps-steps", "3")
    pg.click("#steps-run")
    finished(pg, "steps", timeout=120_000)
    titles = pg.eval_on_selector_all("#steps-tiles figcaption b", "bs => bs.map(b => b.textContent)")
    assert titles == [*schedules.SPACINGS, "reference"]
    assert natural_sizes(pg, "#steps-tiles img") == [32] * 7
    assert "folklore" in pg.inner_text("#steps-verdict strong")
    pg.locator("#steps").screenshot(path=ARTIFACTS / "static-steps.png")


def test_static_dial_of_a_stochastic_sampler_is_the_served_dial(paint_page, served):
    """Every row of the dial is painted from the one seed, as the served dial paints it: with euler_ancestral
    (fresh noise every step, drawn row by row) the page's tiles equal the served lab's to the grey level."""
    from test_lab_api import sse_events

    pg = paint_page
    pg.fill("#dial-prompt", "red heart")
    pg.fill("#dial-scales", "0, 3")
    pg.fill("#dial-steps", "5")
    pg.select_option("#dial-sampler", "euler_ancestral")
    pg.click("#dial-run")
    pg.wait_for_function("document.getElementById('dial-readout').textContent.startsWith('done')", timeout=60_000)
    mine = pg.evaluate("window.lab.dial.done.images")
    events = sse_events(served.get("/api/guidance", params={"prompt": "red heart", "model": "emoji", "steps": 5, "seed": 0,
                                                            "sampler": "euler_ancestral", "scale": [0, 3]}).text)
    theirs = events[-1][1]["images"]
    assert len(mine) == len(theirs) == 2
    for a, b in zip(mine, theirs):
        diff = np.abs(data_url_pixels(a) - data_url_pixels(b))
        assert diff.mean() <= 2 and np.percentile(diff, 99) <= 16, (diff.mean(), np.percentile(diff, 99))
    pg.select_option("#dial-sampler", "dpmpp_2m")
