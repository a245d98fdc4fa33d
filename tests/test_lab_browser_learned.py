"""Part 3 of the lab in a real browser: a tiny real model paints, every step streams to the page.

Same chromium/playwright set-up as test_lab_browser.py (its fixtures are reused); the server here
has a PainterFactory over two tiny untrained UNets, so the pictures are noise-shaped, but every
step is a real sampler step.  Screenshots land in artifacts/lab/.
"""

from __future__ import annotations

import pytest
from test_lab_browser import ARTIFACTS, browser, page  # noqa: F401  (fixtures: chromium, a ready page)
from test_lab_learned import tiny_model_dirs

from unnoise.lab import create_app, serving
from unnoise.lab.learned import PainterFactory

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return tiny_model_dirs(tmp_path_factory)


@pytest.fixture(scope="module")
def server_url(model_dirs):
    with serving(create_app(generate=PainterFactory(model_dirs))) as url:
        yield url


def test_paint_streams_every_step_and_can_be_scrubbed(page):
    assert page.inner_text("#model-status") == "a trained model is loaded"
    assert page.is_enabled("#learn-run") and page.is_hidden("#learn-needs")
    assert page.eval_on_selector_all("#learn-model option", "os => os.map(o => o.value)") == ["colour", "grey"]
    page.fill("#learn-prompt", "a red square")
    page.fill("#learn-steps", "4")
    page.fill("#learn-seed", "7")
    page.click("#learn-run")
    page.wait_for_function("window.lab.learned && window.lab.learned.finished", timeout=30_000)
    run = page.evaluate("window.lab.learned.frames.map(f => ({final: !!f.final, index: f.index, t: f.t}))")
    steps = [f for f in run if not f["final"]]
    assert [f["index"] for f in steps] == [0, 1, 2, 3] and run[-1]["final"]  # 4 steps, then the picture
    assert [f["t"] for f in steps] == sorted((f["t"] for f in steps), reverse=True)  # static → clean
    page.wait_for_function("!window.lab.learned.playing", timeout=10_000)  # played to the end
    assert "finished picture, after 4 steps" in page.inner_text("#learn-readout")
    for img in ("#learn-x0", "#learn-eps", "#learn-xt"):
        assert page.eval_on_selector(img, "i => i.complete && i.naturalWidth") == 16, img
    final = page.get_attribute("#learn-x0", "src")
    page.fill("#learn-scrub", "0")
    assert page.inner_text("#learn-readout").startswith("step 1/4 · t = ")
    assert page.get_attribute("#learn-xt", "src") != final  # step 1's x_t is static, not the picture
    page.fill("#learn-scrub", "4")
    page.locator("#reverse").screenshot(path=ARTIFACTS / "learned.png")
    page.set_viewport_size({"width": 400, "height": 860})  # a phone: the live controls still fit
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("#reverse").screenshot(path=ARTIFACTS / "learned-narrow.png")


def test_a_refused_request_shows_the_servers_reason(page):
    page.fill("#learn-steps", "0")  # the input's min is a hint; the server is the judge
    page.click("#learn-run")
    page.wait_for_selector("#learn-error:not([hidden])", timeout=10_000)
    assert page.inner_text("#learn-error") == "Steps must be at least 1."
    assert page.inner_text("#learn-readout") == "stopped"
    assert [e for e in page.lab_errors if "422" not in e] == []
    page.lab_errors.clear()


def test_the_served_page_keeps_the_page_contract(page, model_dirs):
    """window.unnoise on the served page (DESIGN: "served or exported"): paint answers from the server with the
    Python Painter's picture, the caller's start noise works, and a refusal is the server's one line."""
    import numpy as np
    import torch
    from test_lab_learned import painted

    page.evaluate("window.unnoise.ready")
    out = page.evaluate("""async () => { const r = await window.unnoise.paint({prompt: 'a square', model: 'colour',
        seed: 3, steps: 3}); return {...r, data: Array.from(r.data)}; }""")
    assert (out["width"], out["height"], out["calls"], out["seed"]) == (16, 16, 3, 3) and out["ms"] > 0
    rgba = np.array(out["data"], np.uint8).reshape(16, 16, 4)
    assert (rgba[..., 3] == 255).all() and np.array_equal(rgba[..., :3], painted(model_dirs["colour"], seed=3, steps=3))
    noise = torch.randn(256, generator=torch.Generator().manual_seed(4)).tolist()
    grey = page.evaluate("""async (noise) => { const r = await window.unnoise.paint({prompt: 'a square', model: 'grey',
        seed: 3, steps: 2, noise}); return Array.from(r.data); }""", noise)
    assert np.array_equal(np.array(grey, np.uint8).reshape(16, 16, 4)[..., :3],
                          painted(model_dirs["grey"], seed=3, steps=2, noise=noise))
    error = page.evaluate("window.unnoise.paint({prompt: ' '}).then(() => null, (e) => `${e.name}: ${e.message}`)")
    assert error == 'PaintError: prompt is empty: type what to paint, e.g. "cat face"'
    assert page.lab_errors == ["Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"]
    page.lab_errors.clear()  # the browser logs the refused request
