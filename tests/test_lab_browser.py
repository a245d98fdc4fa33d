"""The lab in a real browser: Debian chromium driven by playwright against the app under uvicorn.

Screenshots land in artifacts/lab/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import base64
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unnoise import images, schedules
from unnoise.lab import create_app, serving

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "lab"


@pytest.fixture(scope="module")
def server_url():
    with serving(create_app()) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str, timeout: float = 30_000):
    """A lab page in a fresh tab, once it says it is ready; pg.lab_errors collects script errors and failed
    requests (a test that provokes one takes its own out), pg.lab_requests every URL the page asked for."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.lab_errors, pg.lab_requests = errors, requests
    pg.goto(url)
    pg.wait_for_selector("body[data-ready='1']", timeout=timeout)
    return pg


@pytest.fixture
def page(browser, server_url):
    pg = open_page(browser, server_url + "/", timeout=15_000)
    yield pg
    pg.close()
    assert not pg.lab_errors, pg.lab_errors  # no script errors, no failed requests


def canvas_pixels(pg, selector: str) -> np.ndarray:
    url = pg.eval_on_selector(selector, "c => c.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


def set_slider(pg, t: int) -> None:
    pg.fill("#t-slider", str(t))  # sets the value and fires input


def test_page_renders_every_part(page):
    assert page.title().startswith("unnoise lab")
    for section in ("forward", "schedule", "reverse", "replay", "img2img", "guidance", "steps"):
        assert page.is_visible(f"#{section} h2")
    names = page.eval_on_selector_all("#schedule-select option", "os => os.map(o => o.value)")
    assert names == schedules.available()
    assert "no trained model" in page.inner_text("#model-status")
    assert page.is_disabled("#reverse button")  # waits for a trained model
    chart = canvas_pixels(page, "#schedule-canvas")
    assert (chart.sum(axis=2) < 600).mean() > 0.005  # curves and axes were drawn
    page.screenshot(path=ARTIFACTS / "page.png", full_page=True)
    page.set_viewport_size({"width": 400, "height": 860})  # a phone: one column, nothing sticks out
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.screenshot(path=ARTIFACTS / "page-narrow.png", full_page=True)


def test_slider_dissolves_the_picture_exactly(page):
    start = canvas_pixels(page, "#forward-canvas")
    cat = np.asarray(images.limit_size(images.default_cat(), 256), dtype=np.int16)
    assert start.shape == cat.shape
    assert np.abs(start - cat).mean() < 3  # t = 0: almost nothing added yet

    set_slider(page, 500)
    assert page.inner_text("#t-value") == "t = 500"
    moved = canvas_pixels(page, "#forward-canvas")
    assert np.abs(moved - start).mean() > 20
    # the page's picture is the forward process itself: sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε with the seed-0 draw
    s = schedules.get("linear")
    x0 = torch.from_numpy(cat.astype(np.float64)).permute(2, 0, 1) / 127.5 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32).double()
    x_t = s.add_noise(x0[None], eps[None], torch.tensor([500]))[0]
    assert np.abs(moved - np.asarray(images.to_pil(x_t), dtype=np.int16)).max() <= 1
    signal = float(page.inner_text("#signal-value"))
    assert signal == pytest.approx(float(s.signal[500]), abs=1e-3)
    page.locator("#forward").screenshot(path=ARTIFACTS / "forward-t500.png")


def test_play_animates_the_dissolve_and_the_chart_follows(page):
    chart_before = canvas_pixels(page, "#schedule-canvas")
    page.click("#play")
    seen, ts = [], []
    for _ in range(6):
        time.sleep(0.15)
        seen.append(canvas_pixels(page, "#forward-canvas"))
        ts.append(int(page.input_value("#t-slider")))
    assert ts == sorted(ts) and ts[-1] > ts[0] > 0
    # most looks show a new frame (a starved browser may skip one between two looks)
    assert sum(np.abs(a - b).mean() > 0.5 for a, b in zip(seen, seen[1:])) >= 3
    page.click("#play")  # pause
    page.wait_for_function("document.getElementById('play').textContent.includes('Play')", timeout=10_000)
    paused_t = page.input_value("#t-slider")
    time.sleep(0.3)
    assert page.input_value("#t-slider") == paused_t
    assert np.abs(canvas_pixels(page, "#schedule-canvas") - chart_before).sum() > 0  # the t marker moved
    page.click("#view-logsnr")
    page.check("#compare input[value='cosine+ztsnr']")
    page.locator("#schedule").screenshot(path=ARTIFACTS / "schedule-logsnr.png")


def test_replay_streams_its_steps_and_can_be_scrubbed(page):
    page.select_option("#replay-steps", "25")
    page.click("#replay-run")
    page.wait_for_function("window.lab.replay.finished", timeout=30_000)
    frames = page.evaluate("window.lab.replay.frames.length")
    assert frames == 26  # 25 steps and the finished picture
    page.wait_for_function("!window.lab.replay.playing", timeout=10_000)  # played through to the end
    assert "finished picture" in page.inner_text("#replay-readout")
    page.locator("#replay").screenshot(path=ARTIFACTS / "replay-done.png")
    last = page.get_attribute("#replay-xt", "src")
    page.fill("#replay-scrub", "0")
    assert page.get_attribute("#replay-xt", "src") != last
    assert page.inner_text("#replay-readout").startswith("step 1/25 · t = 999")
    page.fill("#replay-scrub", "12")
    assert "step 13/25" in page.inner_text("#replay-readout")
    page.locator("#replay").screenshot(path=ARTIFACTS / "replay-scrubbed.png")


def test_an_upload_replaces_the_picture(page, tmp_path):
    path = tmp_path / "stripes.png"
    im = Image.new("RGB", (120, 80), "white")
    for x in range(0, 120, 20):
        im.paste((200, 30, 30), (x, 0, x + 10, 80))
    im.save(path)
    page.set_input_files("#upload", str(path))
    page.wait_for_function("window.lab.width === 120 && window.lab.image !== 'cat'", timeout=10_000)
    shown = canvas_pixels(page, "#forward-canvas")
    assert shown.shape == (80, 120, 3) and np.abs(shown - np.asarray(im, dtype=np.int16)).mean() < 3
    assert page.is_hidden("#forward-error")


def test_a_bad_upload_shows_a_readable_error(page, tmp_path):
    path = tmp_path / "notes.png"  # the name says picture, the bytes say otherwise
    path.write_text("shopping list: milk, eggs, a cat\n")
    page.set_input_files("#upload", str(path))
    page.wait_for_selector("#forward-error:not([hidden])", timeout=10_000)
    message = page.inner_text("#forward-error")
    assert "notes.png" in message and "not an image" in message
    assert page.evaluate("window.lab.image") == "cat"  # the old picture stays
    assert page.lab_errors == ["Failed to load resource: the server responded with a status of 415 (Unsupported Media Type)"]
    page.lab_errors.clear()
    page.locator("#forward").screenshot(path=ARTIFACTS / "bad-upload.png")
