"""The lab as a static site (`unnoise lab --export`): its layout, and its page painting in a real chromium.

One site is exported per module (emoji, emoji-fast, digits-1step) and served by a real `python -m http.server`
subprocess, with no unnoise process: `window.unnoise.paint` must paint what the Python Painter paints from the
same start noise (mean |Δ| ≤ 2 grey levels, 99th percentile ≤ 16; the issue's contract), count its network
calls, and refuse bad input with a clear message.  The export's own checks need no browser.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import static_host

from unnoise.lab.export import ExportError, check_target, export_site, site_bytes
from unnoise.sampling import SAMPLERS

MODELS = ["emoji", "emoji-fast", "digits-1step", "model"]  # + a user's model directory (conftest's tiny model_dir)
BUDGET = 60e6  # bytes: the limit for the whole site, every bundled model
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, model_dir) -> Path:
    return export_site(tmp_path_factory.mktemp("static") / "site", [*MODELS[:-1], str(model_dir)])


# --- the export -------------------------------------------------------------------------------------------------

def test_the_site_holds_the_page_the_runtime_and_every_model(site):
    info = json.loads((site / "site.json").read_text())
    assert list(info["models"]) == MODELS and info["default_model"] == "emoji"
    assert info["limits"] == {"max_steps": 1000, "max_images": 64, "max_guidance": 30.0, "max_prompt_chars": 300,
                              "default_strength": 0.6, "max_seed": 2**32 - 1}
    assert info["samplers"] == list(SAMPLERS)  # the page's engine has every sampler of the Python registry
    for path in ("index.html", "static/runtime.js", "static/lab.js", "static/engine/samplers.js", "vocab.txt",
                 "static/vendor/ort/ort.wasm.min.mjs", "static/vendor/ort/ort-wasm-simd-threaded.wasm.gz",
                 "static/vendor/ort/LICENSE", *info["text_encoder"]["file"]):
        assert (site / path).is_file(), path
    page = (site / "index.html").read_text()
    assert '<meta name="unnoise-site"' in page and '"/static/' not in page  # relative: any sub-folder of a host
    assert not (site / "static" / "index.html").exists()  # the page is DIR/index.html only
    cards = {m: json.loads((site / info["models"][m]["card"]).read_text()) for m in MODELS}
    assert cards["emoji"]["defaults"] == {"steps": 20, "guidance": 3.0, "sampler": "dpmpp_2m", "spacing": "log_snr"}
    assert cards["emoji-fast"]["takes_guidance"] and cards["emoji-fast"]["guidance_range"] == [2.0, 4.0]
    assert cards["digits-1step"]["shape"] == [1, 32, 32] and len(cards["emoji"]["alphas_cumprod"]) == 1000
    assert cards["emoji"]["vocabulary"] == cards["emoji-fast"]["vocabulary"]  # one file for the same captions
    assert cards["model"]["shape"] == [3, 16, 16] and cards["model"]["vocabulary"] is None  # a directory, by name
    for card in cards.values():
        assert all((site / part).is_file() for part in card["unet"])
    assert len(list((site / "vocabularies").glob("*.json"))) == 2
    assert not [p.name for p in site.parent.iterdir() if p.name != "site"]  # no temporary folder left behind


def test_the_site_fits_the_budget_and_every_file_a_static_host(site):
    """Every bundled model's site: this one plus the two digits UNets it leaves out (digits-1step's size each:
    all three digits models share one architecture)."""
    sizes = {p.relative_to(site).as_posix(): p.stat().st_size for p in site.rglob("*") if p.is_file()}
    assert max(sizes.values()) < 20e6, max(sizes, key=sizes.get)  # e.g. GitHub Pages, PyPI wheels
    whole = site_bytes(site) + 2 * sizes["models/digits-1step/unet.onnx.gz"]
    assert len(info_of(site)["text_encoder"]["file"]) == 2  # 31 MB gzipped: cut in two
    assert whole <= BUDGET, f"{whole / 1e6:.1f} MB"


def test_a_foreign_folder_is_refused_and_an_earlier_export_is_not(site, tmp_path, cli):
    check_target(site)  # an earlier export may be replaced
    check_target(tmp_path)  # an empty folder too
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier `unnoise lab --export`"):
        export_site(tmp_path, ["emoji"])
    code, _, err = cli(["lab", "--export", str(tmp_path / "notes.txt")])
    assert code == 2 and "is not a folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def info_of(site: Path) -> dict:
    return json.loads((site / "site.json").read_text())


# --- the page, in chromium ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site_url(site):
    with static_host(site) as url:
        yield url


@pytest.fixture(scope="module")
def page(site_url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page()
        pg.goto(site_url)
        pg.wait_for_function("window.unnoise !== undefined", timeout=30_000)
        pg.evaluate("window.unnoise.ready")
        yield pg
        browser.close()


PAINT = """async (request) => {
  const r = await window.unnoise.paint(request);
  return {width: r.width, height: r.height, data: Array.from(r.data), calls: r.calls, ms: r.ms,
          isBytes: r.data instanceof Uint8ClampedArray};
}"""


def painted(page, **request) -> dict:
    out = page.evaluate(PAINT, request)
    assert out["isBytes"] and len(out["data"]) == out["width"] * out["height"] * 4
    out["rgb"] = np.asarray(out["data"], dtype=np.int16).reshape(out["height"], out["width"], 4)[..., :3]
    return out


def python_picture(model: str, prompt: str, **kw) -> np.ndarray:
    from unnoise import Painter

    image = Painter.from_pretrained(model)(prompt, **kw)[0].convert("RGB")
    return np.asarray(image, dtype=np.int16)


def assert_same_picture(browser: np.ndarray, python: np.ndarray) -> None:
    delta = np.abs(browser - python)
    assert delta.mean() <= 2 and np.percentile(delta, 99) <= 16, (delta.mean(), np.percentile(delta, 99))


def noise(shape, seed: int) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.browser
def test_emoji_paints_the_python_painters_picture_from_the_same_noise(page):
    n = noise((3, 32, 32), 123)
    out = painted(page, prompt="cat face", model="emoji", sampler="dpmpp_2m", steps=20, guidance=3, seed=0,
                  noise=n.flatten().tolist())
    assert (out["width"], out["height"], out["calls"]) == (32, 32, 20)  # one CFG batch per step
    assert_same_picture(out["rgb"], python_picture("emoji", "cat face", sampler="dpmpp_2m", steps=20, guidance=3,
                                                   seed=0, noise=n))


@pytest.mark.browser
def test_the_student_paints_with_its_card_defaults_and_the_seed_alone_is_enough(page):
    out = painted(page, prompt="red heart", model="emoji-fast", seed=7)  # ddim, 4 steps, w = 3, log_snr@0.5
    assert out["calls"] == 4
    assert_same_picture(out["rgb"], python_picture("emoji-fast", "red heart", seed=7))  # torch's draw, in JS
    from unnoise import Painter

    snapped = page.evaluate("() => window.unnoise.paint({prompt: \"a kitten's face\", model: 'emoji-fast', seed: 1})"
                            ".then(r => r.conditionedOn)")
    assert snapped == Painter.from_pretrained("emoji-fast").snap("a kitten's face").caption
    tagged = page.evaluate("() => window.unnoise.paint({prompt: 'a kitten, twemoji style', model: 'emoji', steps: 1,"
                           " seed: 1}).then(r => r.conditionedOn)")  # a style tag, where the vocabulary has them
    assert tagged == Painter.from_pretrained("emoji").snap("a kitten, twemoji style").caption


@pytest.mark.browser
def test_the_runtime_snaps_a_style_tagged_prompt_as_python_does(page):
    """Vocabulary.split/snap with suffixes against the runtime's splitPrompt/snapPrompt, on one small vocabulary
    (unit vectors in 2-D) and pooled vectors chosen to hit each rule."""
    import torch

    from unnoise.conditioning.vocabulary import Vocabulary

    captions, vectors = ["cat face", "pizza"], torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    known = ["cat face", "pizza", "cat face emoji", "cat face, twemoji style"]
    vocab = Vocabulary(captions, vectors, known, suffixes=[", twemoji style", ", noto style"])
    cases = [("a kitten, twemoji style", [0.9, 0.1]), ("A slice ,  Noto  style", [0.2, 0.9]),
             ("cat face emoji, noto style", [1.0, 0.0]), ("cat face, twemoji style", [1.0, 0.0]),
             ("quarterly taxes, noto style", [0.5, -0.9]), (", noto style", [0.5, -0.9]), ("a kitten", [0.9, 0.1])]
    want = [[list(vocab.split(p)), vocab.snap([p], torch.tensor([v]))[0].caption] for p, v in cases]
    got = page.evaluate("""async (cases) => {
        const { splitPrompt, snapPrompt } = await import("./static/runtime.js");
        const vocab = { captions: ["cat face", "pizza"], vectors: Float32Array.from([1, 0, 0, 1]), count: 2, dim: 2,
          known: new Set(["cat face", "pizza", "cat face emoji", "cat face, twemoji style"]), threshold: 0.6,
          suffixes: [", twemoji style", ", noto style"] };
        return cases.map(([p, v]) => [splitPrompt(vocab, p), snapPrompt(vocab, p, Float32Array.from(v)).caption]);
    }""", cases)
    assert got == want
    assert [w[1] for w in want] == ["cat face, twemoji style", "pizza, noto style", None, None, None, None, "cat face"]
    grey = painted(page, prompt="a handwritten seven", model="digits-1step", seed=3)
    assert grey["calls"] == 1 and (grey["rgb"] == grey["rgb"][..., :1]).all()  # one channel shown as grey
    assert_same_picture(grey["rgb"], python_picture("digits-1step", "a handwritten seven", seed=3))


@pytest.mark.browser
def test_a_cross_origin_isolated_host_paints_with_threads_and_the_same_picture(site, page):
    """Served with COOP/COEP (as a static host can be set up), the page is cross-origin isolated and ONNX Runtime
    Web runs one thread per core: the picture is the single-threaded page's, to the grey level."""
    n = noise((3, 32, 32), 5).flatten().tolist()
    request = dict(prompt="red heart", model="emoji", steps=8, seed=0, noise=n)
    one_thread = painted(page, **request)
    assert page.evaluate("crossOriginIsolated") is False
    with static_host(site, isolated=True) as url:
        pg = page.context.browser.new_page()  # the same chromium, a page from the other host
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.goto(url)
        pg.wait_for_function("window.unnoise !== undefined", timeout=30_000)
        pg.evaluate("window.unnoise.ready")
        assert pg.evaluate("crossOriginIsolated") is True
        threads = pg.evaluate("import('./static/vendor/ort/ort.wasm.min.mjs').then((ort) => ort.env.wasm.numThreads)")
        assert threads == pg.evaluate("navigator.hardwareConcurrency")
        threaded = painted(pg, **request)
        pg.close()
    assert not errors, errors
    assert threaded["calls"] == one_thread["calls"] == 8
    assert_same_picture(threaded["rgb"], one_thread["rgb"])


@pytest.mark.browser
def test_a_users_model_directory_paints_as_the_painter_does(page, model_dir):
    out = painted(page, prompt="a red square", model="model", seed=5)  # no vocabulary: painted as typed
    assert (out["width"], out["calls"]) == (16, 6)
    assert_same_picture(out["rgb"], python_picture(str(model_dir), "a red square", seed=5))


@pytest.mark.browser
def test_bad_input_is_refused_with_a_clear_message(page):
    bad = {
        "prompt is empty": {"prompt": "  "},
        "prompt is too long: 301 characters, at most 300": {"prompt": "x" * 301},
        "steps must be an integer from 1 to 1000, got 0": {"prompt": "cat", "steps": 0},
        "steps must be an integer from 1 to 1000, got 1000000000": {"prompt": "cat", "steps": 10**9},
        "guidance must be a finite number from 0 to 30, got NaN": {"prompt": "cat", "guidance": float("nan")},
        'unknown model "cats"; choose from emoji, emoji-fast, digits-1step, model': {"prompt": "cat", "model": "cats"},
        'unknown sampler "plms"': {"prompt": "cat", "sampler": "plms"},
        "noise must be 3072 numbers": {"prompt": "cat", "noise": [0.0] * 10},
    }
    for message, request in bad.items():
        got = page.evaluate("r => window.unnoise.paint(r).then(() => 'painted', e => e.name + ': ' + e.message)",
                            request)
        assert got.startswith("PaintError: " + message), (request, got)
    assert page.evaluate("() => window.unnoise.paint({prompt: 'cat face', steps: 1}).then(r => r.calls)") == 1
    engine = page.evaluate("() => import('./static/engine/samplers.js').then(m => Object.keys(m.SAMPLERS))")
    assert engine == list(SAMPLERS)  # what site.json offers, the engine runs
