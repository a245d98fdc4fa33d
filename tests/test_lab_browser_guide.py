"""The lab for a first-time reader, in a real browser: the model menus start on emoji, part 4's two sides
start from the very same static, work shows its progress and can be stopped, refusals read as a person
writes, part 5 has a strength ladder, and a model's small pictures fill their tiles, pixelated.

Same chromium/playwright set-up as test_lab_browser.py (its fixtures are reused) and the same tiny untrained
models as test_lab_browser_learned.py, named here as the bundled ones are (digits sorts before emoji).
Screenshots land in artifacts/lab/.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image
from test_lab_browser import ARTIFACTS, browser, page  # noqa: F401  (fixtures: chromium, a ready page)
from test_lab_learned import tiny_model_dirs

from unnoise.lab import create_app, serving
from unnoise.lab.learned import PainterFactory

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    dirs = tiny_model_dirs(tmp_path_factory, student=True)
    models = {"digits": dirs["grey"], "emoji": dirs["colour"], "emoji-fast": dirs["student"]}
    with serving(create_app(generate=PainterFactory(models))) as url:
        yield url


def png(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


def fills_its_tile(page, selector: str) -> bool:
    """The picture fills its frame (the frame has the picture's shape: no dark bars) and is drawn pixelated."""
    return page.eval_on_selector(selector, """i => {
        const f = i.parentElement, shape = i.naturalWidth / i.naturalHeight;
        return Math.abs(f.clientWidth / f.clientHeight - shape) < 0.03 && getComputedStyle(i).imageRendering === 'pixelated';
    }""")


def test_every_model_menu_starts_on_emoji(page):
    menus = page.eval_on_selector_all(".model-select", "ss => ss.map(s => [s.id, s.value])")
    assert len(menus) == 5 and all(value == "emoji" for _, value in menus), menus
    options = page.eval_on_selector_all("#learn-model option", "os => os.map(o => o.value)")
    assert options == ["digits", "emoji", "emoji-fast"]  # alphabetical still: only the starting pick moved


def test_part_4_runs_both_sides_from_the_very_same_static_and_scrubs_them_together(page):
    assert page.is_visible("#replay-caption-model") and page.is_hidden("#replay-caption-alone")
    assert "very same noisy picture" in page.inner_text("#replay-caption-model")
    assert page.inner_text("#replay-run") == "Run both" and page.is_hidden("#versus-needs")
    page.fill("#versus-prompt", "a red heart")
    page.select_option("#replay-steps", "10")
    page.click("#replay-run")
    page.wait_for_function("window.lab.replay.finished && window.lab.versus.finished", timeout=30_000)
    replay = page.evaluate("window.lab.replay.frames.map(f => [f.x_t, f.t])")
    learned = page.evaluate("window.lab.versus.frames.map(f => [f.x_t, f.t])")
    assert len(replay) == len(learned) == 11  # 10 steps and the finished picture, on each side
    first_replay, first_learned = png(replay[0][0]), png(learned[0][0])
    assert first_replay.shape == first_learned.shape == (16, 16, 3)  # the model's size, not part 1's 256 × 170
    assert np.abs(first_replay - first_learned).max() <= 1  # the very same noisy picture (8-bit rounding)
    assert [t for _, t in replay[:-1]] == pytest.approx([t for _, t in learned[:-1]], abs=1e-6)  # the same levels
    assert "seed 0" in page.inner_text("#replay-note") and "16 × 16" in page.inner_text("#replay-note")
    page.wait_for_function("!window.lab.replay.playing && !window.lab.versus.playing", timeout=10_000)
    page.fill("#versus-scrub", "3")  # the learned side scrubs, and the replay follows to the same step
    assert page.inner_text("#versus-readout").startswith("step 4/10 · t = ")
    assert page.inner_text("#replay-readout").startswith("step 4/10 · t = ")
    assert page.get_attribute("#replay-xt", "src") == replay[3][0]
    for img in ("#replay-xt", "#replay-x0", "#versus-xt", "#versus-eps", "#versus-x0"):
        assert fills_its_tile(page, img), img
    page.locator("#replay").screenshot(path=ARTIFACTS / "guide-part4.png")
    page.set_viewport_size({"width": 400, "height": 900})  # a phone: the two sides stack, nothing sticks out
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("#replay").screenshot(path=ARTIFACTS / "guide-part4-narrow.png")


def test_work_shows_progress_disables_its_button_and_stops(page, server_url):
    page.fill("#learn-steps", "1000")
    page.click("#learn-run")
    page.wait_for_selector("#learn-working:not([hidden])", timeout=10_000)
    assert page.is_disabled("#learn-run") and page.is_visible("#learn-stop")
    assert page.get_attribute("#reverse", "aria-busy") == "true"
    page.wait_for_function("parseFloat(document.querySelector('#learn-progress i').style.width) > 0.5", timeout=30_000)
    assert " of 1000 steps" in page.inner_text("#learn-working")
    page.locator("#reverse").screenshot(path=ARTIFACTS / "guide-progress.png")
    page.set_viewport_size({"width": 400, "height": 900})  # a phone: the bar and Stop still fit
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("#learn-working").screenshot(path=ARTIFACTS / "guide-progress-narrow.png")
    page.click("#learn-stop")
    page.wait_for_selector("#learn-working", state="hidden", timeout=10_000)
    assert page.is_enabled("#learn-run") and page.inner_text("#learn-readout") == "stopped: you pressed Stop"
    assert page.is_hidden("#learn-error")  # a stop is not an error
    deadline = time.monotonic() + 10
    while json.load(urllib.request.urlopen(server_url + "/api/status"))["running"] and time.monotonic() < deadline:
        time.sleep(0.1)  # the server's run stops too, and gives its slot back
    assert json.load(urllib.request.urlopen(server_url + "/api/status"))["running"] == 0


def test_a_refusal_reads_as_a_person_writes_it(page):
    page.fill("#dial-scales", "0, 1, 2, 3, 4, 5, 6")
    page.click("#dial-run")
    page.wait_for_selector("#dial-error:not([hidden])", timeout=10_000)
    assert page.inner_text("#dial-error") == "Pick at most 6 guidance values."
    page.fill("#learn-steps", "0")
    page.click("#learn-run")
    page.wait_for_selector("#learn-error:not([hidden])", timeout=10_000)
    assert page.inner_text("#learn-error") == "Steps must be at least 1."
    assert page.is_enabled("#learn-run") and page.is_hidden("#learn-working")  # a refusal ends the work too
    page.locator("#guidance").screenshot(path=ARTIFACTS / "guide-friendly-error.png")
    page.lab_errors.clear()  # the two 422s the browser logged
    friendly = "(d) => import('/static/common.js').then(m => m.friendly(d))"
    cases = {
        ("query", "scale", "2"): ("Input should be a valid number, unable to parse string as a number",
                                  "The third guidance value must be a number."),
        ("query", "seed"): ("Input should be less than or equal to 4294967295", "The seed can be at most 4294967295."),
        ("query", "prompt"): ("String should have at most 300 characters", "The prompt can be at most 300 characters long."),
        ("query", "strength"): ("List should have at least 1 item after validation, not 0", "Pick at least 1 strength."),
        ("query", "sampler"): ("Input should be 'ddim' or 'euler'", "The sampler must be one of ddim or euler."),
    }
    for loc, (msg, said) in cases.items():
        assert page.evaluate(friendly, {"loc": list(loc), "msg": msg}) == said


def test_part_5_strength_ladder_shows_what_strength_does(page):
    page.fill("#i2i-prompt", "a red heart")
    page.fill("#i2i-steps", "10")
    page.click("#i2i-ladder-run")
    page.wait_for_function("window.lab.ladder && window.lab.ladder.finished", timeout=60_000)
    titles = page.eval_on_selector_all("#i2i-ladder figcaption b", "bs => bs.map(b => b.textContent)")
    assert titles == ["the picture", "strength 0.2", "strength 0.4", "strength 0.6", "strength 0.8", "strength 1"]
    lines = page.eval_on_selector_all("#i2i-ladder figcaption span", "s => s.map(x => x.textContent)")
    assert lines[1] == "the last 2 of 10 steps re-painted" and lines[-1] == "all 10 steps, from pure static"
    sources = page.eval_on_selector_all("#i2i-ladder img", "is => is.map(i => i.src)")
    assert sources[1:] == page.evaluate("window.lab.ladder.done.images") and len(set(sources)) == 6
    page.wait_for_function("[...document.querySelectorAll('#i2i-ladder img')].every(i => i.complete && i.naturalWidth)")
    for k in range(1, 7):
        assert fills_its_tile(page, f"#i2i-ladder figure:nth-child({k}) img"), k
    assert "more of the original survives" in page.inner_text("#i2i-ladder-note")
    assert page.is_enabled("#i2i-run") and page.is_enabled("#i2i-ladder-run")
    page.locator("#img2img").screenshot(path=ARTIFACTS / "guide-ladder.png")
    page.set_viewport_size({"width": 400, "height": 900})  # a phone: the ladder wraps, nothing sticks out
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("#img2img").screenshot(path=ARTIFACTS / "guide-ladder-narrow.png")


def test_a_models_pictures_fill_their_tiles_pixelated(page):
    page.fill("#learn-steps", "3")
    page.click("#learn-run")
    page.wait_for_function("window.lab.learned.finished && !window.lab.learned.playing", timeout=30_000)
    for img in ("#learn-xt", "#learn-eps", "#learn-x0"):
        assert page.eval_on_selector(img, "i => i.naturalWidth") == 16
        assert fills_its_tile(page, img), img
    page.locator("#reverse").screenshot(path=ARTIFACTS / "guide-part3.png")
