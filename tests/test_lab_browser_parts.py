"""Parts 5–7 of the lab in a real browser: image to image, the guidance dial, where the steps go.

Same chromium/playwright set-up as test_lab_browser.py (its fixtures are reused) and the same tiny
untrained models as test_lab_browser_learned.py, so the pictures are noise-shaped but every step is a
real sampler step.  Screenshots land in artifacts/lab/.
"""

from __future__ import annotations

import pytest
from test_lab_browser import ARTIFACTS, browser, page  # noqa: F401  (fixtures: chromium, a ready page)
from test_lab_learned import tiny_model_dirs

from unnoise.lab import create_app, serving
from unnoise.lab.learned import PainterFactory
from unnoise.sampling import SAMPLERS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    dirs = tiny_model_dirs(tmp_path_factory, student=True)
    with serving(create_app(generate=PainterFactory(dirs))) as url:
        yield url


def test_pickers_come_from_the_server(page):
    for select in ("#learn-sampler", "#i2i-sampler", "#dial-sampler", "#steps-sampler"):
        assert page.eval_on_selector_all(f"{select} option", "os => os.map(o => o.value)") == list(SAMPLERS), select
        assert page.input_value(select) == "dpmpp_2m"
    for select in ("#learn-model", "#i2i-model", "#dial-model", "#steps-model"):
        assert page.eval_on_selector_all(f"{select} option", "os => os.map(o => o.value)") == ["colour", "grey", "student"]


def test_picking_a_model_fills_in_its_own_defaults(page):
    """A distilled student paints with its own sampler and steps, and the dial spans the w it learned."""
    assert (page.input_value("#learn-steps"), page.input_value("#learn-guidance")) == ("20", "3")
    page.select_option("#learn-model", "student")
    assert (page.input_value("#learn-sampler"), page.input_value("#learn-steps"), page.input_value("#learn-guidance")) \
        == ("ddim", "4", "2")
    page.select_option("#dial-model", "student")
    assert (page.input_value("#dial-sampler"), page.input_value("#dial-steps")) == ("ddim", "4")
    assert page.input_value("#dial-scales") == "1, 2.25, 3.5, 4.75, 6"
    page.select_option("#steps-model", "student")
    assert (page.input_value("#steps-sampler"), page.input_value("#steps-steps")) == ("ddim", "8")  # its own count
    for prefix in ("learn", "dial", "steps"):
        page.select_option(f"#{prefix}-model", "colour")
        assert page.input_value(f"#{prefix}-sampler") == "dpmpp_2m", prefix
    assert page.input_value("#learn-steps") == "20" and page.input_value("#dial-scales") == "0, 1, 3, 7, 12"


def test_image_to_image_streams_from_the_noised_picture(page):
    assert page.is_enabled("#i2i-run") and page.is_hidden("#i2i-needs")
    page.fill("#i2i-prompt", "a red square")
    page.fill("#i2i-strength", "0.5")
    assert page.inner_text("#i2i-strength-value") == "0.50"
    page.fill("#i2i-steps", "10")
    page.click("#i2i-run")
    page.wait_for_function("window.lab.img2img && window.lab.img2img.finished", timeout=30_000)
    frames = page.evaluate("window.lab.img2img.frames.map(f => ({final: !!f.final, index: f.index, t: f.t}))")
    steps = [f for f in frames if not f["final"]]
    assert [f["index"] for f in steps] == [0, 1, 2, 3, 4] and frames[-1]["final"]  # strength 0.5 of 10 steps
    assert steps[0]["t"] < 600  # it starts part of the way up, not from the static at t ≈ 999
    page.wait_for_function("!window.lab.img2img.playing", timeout=10_000)
    assert "finished picture, after 5 steps" in page.inner_text("#i2i-readout")
    for img in ("#i2i-init", "#i2i-xt", "#i2i-eps", "#i2i-x0"):
        assert page.eval_on_selector(img, "i => i.complete && i.naturalWidth") == 16, img
    page.locator("#img2img").screenshot(path=ARTIFACTS / "img2img.png")


def test_guidance_dial_paints_every_scale_side_by_side(page):
    page.fill("#dial-prompt", "a red square")
    page.fill("#dial-steps", "4")
    page.click("#dial-run")
    page.wait_for_function("window.lab.dial && window.lab.dial.finished", timeout=30_000)
    captions = page.eval_on_selector_all("#dial-tiles figcaption b", "bs => bs.map(b => b.textContent)")
    assert captions == ["w = 0", "w = 1", "w = 3", "w = 7", "w = 12"]
    sources = page.eval_on_selector_all("#dial-tiles img", "is => is.map(i => i.src)")
    assert sources == page.evaluate("window.lab.dial.done.images")
    assert len(set(sources)) == 5  # five different pictures from one seed
    assert "5 scales × 4 steps" in page.inner_text("#dial-readout")
    page.locator("#guidance").screenshot(path=ARTIFACTS / "guidance-dial.png")
    page.set_viewport_size({"width": 400, "height": 900})  # a phone: the tiles wrap, nothing sticks out
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("#guidance").screenshot(path=ARTIFACTS / "guidance-narrow.png")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.fill("#dial-scales", "2, 40")  # beyond the dial's range: the server says why
    page.click("#dial-run")
    page.wait_for_selector("#dial-error:not([hidden])", timeout=10_000)
    assert page.inner_text("#dial-error") == "The second guidance value can be at most 30."
    page.lab_errors.clear()


def test_the_steps_chart_and_the_comparison(page):
    chart = page.evaluate("window.lab.stepsChart")  # drawn before any run, from /api/spacings
    assert [r["spacing"] for r in chart["spacings"]] == ["leading", "linspace", "trailing", "karras", "log_snr",
                                                          "log_snr_trailing"]
    assert page.inner_text("#steps-legend").startswith("Each dot is where one of the 8 steps starts")
    page.fill("#steps-prompt", "a red square")
    page.fill("#steps-steps", "4")
    page.click("#steps-run")
    page.wait_for_function("window.lab.steps && window.lab.steps.finished", timeout=60_000)
    assert page.evaluate("window.lab.stepsChart.steps") == 4  # the model schedule's chart for the run
    titles = page.eval_on_selector_all("#steps-tiles figcaption b", "bs => bs.map(b => b.textContent)")
    assert titles == ["leading", "linspace", "trailing", "karras", "log_snr", "log_snr_trailing", "reference"]
    lines = page.eval_on_selector_all("#steps-tiles figcaption span", "s => s.map(x => x.textContent)")
    assert all(line.startswith("shapes off ") for line in lines[:6]) and "50 steps" in lines[6]
    verdict = page.inner_text("#steps-verdict")
    assert "folklore" in page.inner_text("#steps-verdict strong")  # a verdict from the numbers, whichever it is
    assert "How it was judged: each picture against a 50-step reference." in verdict
    page.locator("#steps").screenshot(path=ARTIFACTS / "steps.png")
    page.set_viewport_size({"width": 400, "height": 900})  # a phone: parts 5–7 still fit
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("#steps").screenshot(path=ARTIFACTS / "steps-narrow.png")


def test_the_verdict_follows_the_numbers(page):
    """The sentence under part 7 is computed from the run; feed it made-up runs both ways."""
    def row(name, noisy, first, last):
        return {"spacing": name, "noisy_steps": noisy, "clean_steps": 8 - noisy, "sigmas": [first, 1.0, last, 0.0]}

    chart = {"steps": 8, "spacings": [row("a", 3, 50.0, 0.01), row("b", 7, 157.0, 0.4), row("c", 5, 157.0, 0.01)]}
    start = {"reference_steps": 50, "stochastic": False}
    verdict = "(args) => import('/static/parts.js').then(m => m.stepsVerdict(...args))"
    holds = [{"shape_error": 0.2, "detail_ratio": 1.0}, {"shape_error": 0.05, "detail_ratio": 0.6},
             {"shape_error": 0.04, "detail_ratio": 0.95}]
    said = page.evaluate(verdict, [chart, holds, start])
    assert said["headline"] == ("The folklore held up in this run: a, which spends the fewest steps where the picture is "
                                "still mostly noise, got the big shapes most wrong, and b, which spends the fewest steps "
                                "on the last fine touches, left the fine detail mushiest.")
    assert "a, with 3 of 8 steps in the noisy half (σ > 1), came out the furthest off of 3" in said["details"]
    assert "b, with 1 of 8 steps in the clean half, kept 0.60× the reference's, mushier than the reference" in said["details"]
    half = [{"shape_error": 0.2, "detail_ratio": 1.0}, {"shape_error": 0.05, "detail_ratio": 0.97},
            {"shape_error": 0.04, "detail_ratio": 0.95}]
    assert page.evaluate(verdict, [chart, half, start])["headline"].startswith(
        "Half of the folklore held up in this run: a, which spends the fewest steps where the picture is still mostly "
        "noise, got the big shapes most wrong, but b, which spends the fewest steps on the last fine touches, kept about "
        "as much fine detail as the reference.")
    fails = [{"shape_error": 0.01, "detail_ratio": 1.0}, {"shape_error": 0.05, "detail_ratio": 0.97},
             {"shape_error": 0.04, "detail_ratio": 0.95}]
    said = page.evaluate(verdict, [chart, fails, {**start, "stochastic": True}])
    assert said["headline"].startswith("The folklore did not hold up in this run: a, ")
    assert said["headline"].endswith("b, which spends the fewest steps on the last fine touches, kept about as much "
                                     "fine detail as the reference.")
    assert "the third furthest off of 3" in said["details"] and "about as much as the reference" in said["details"]
    assert "luck" in said["details"] and "σ" not in said["headline"]  # the headline is in plain words
