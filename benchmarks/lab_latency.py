"""How snappy is the lab?  Medians over repeats, against a peer measured in the same run.

    python benchmarks/lab_latency.py [--repeats 7] [--steps 20] [--no-browser] [--no-learned]

* forward: one /api/forward (the picture and ε, once per picture) and, per slider move, the page's
  own composition (in chromium, if playwright and /usr/bin/chromium are there) against the peer a
  server-rendered slider would pay per move: add_noise + PNG + base64 on the server, before any
  round trip;
* streams: time from request to the first `step` event, and to `done`, for a replay of --steps steps;
* the learned reverse: the same two times for a --steps run of /api/generate (dpmpp_2m, guidance 5, one
  image), against the goals: first step < 1 s, a 20-step emoji run < 3 s.  With the bundled emoji model
  when it is installed; otherwise (said so in the output) an untrained network of the bundled models'
  architecture (UNetConfig.default(), 3×32×32, the real text encoder), which costs the same per step.
  The first request also loads the model; it is reported apart ("cold").  Then one run each of the
  guidance dial (5 scales in one batch) and the spacing comparison (5 × 8 steps + a 50-step reference).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import torch

from unnoise import schedules
from unnoise.lab import create_app, serving
from unnoise.lab.learned import PainterFactory
from unnoise.lab.uploads import png_data_url, the_cat
from unnoise.modeldir import ModelDirError, resolve, save_model_dir

FIRST_STEP_GOAL_S = 1.0
EMOJI_20_STEPS_GOAL_S = 3.0


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def time_stream(client: httpx.Client, params, path: str = "/api/replay") -> tuple[float, float, int]:
    """Seconds to the first step event, seconds to done, and the steps seen."""
    start = time.perf_counter()
    first, steps = None, 0
    with client.stream("GET", path, params=params) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line == "event: step":
                steps += 1
                first = first or time.perf_counter() - start
            elif line == "event: done":
                return first, time.perf_counter() - start, steps
    raise RuntimeError("the stream ended without a done event")


def server_rendered_frame(repeats: int) -> list[float]:
    """The peer: what one slider move costs if the server renders the frame."""
    cat = the_cat(256)
    x0 = cat.tensor()[None]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    s = schedules.get("linear")
    out = []
    for k in range(repeats):
        t0 = time.perf_counter()
        png_data_url(s.add_noise(x0, eps, torch.tensor([100 * k % 1000]))[0])
        out.append(time.perf_counter() - t0)
    return out


def browser_compose(url: str, moves: int) -> list[float] | None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(chromium).exists():
        return None
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        samples = page.evaluate(
            """(moves) => { const out = [];
                 for (let k = 0; k < moves; k++) {
                   const s = document.getElementById('t-slider');
                   s.value = (37 * k) % 1000; s.dispatchEvent(new Event('input'));
                   out.push(window.lab.composeMs / 1000);
                 } return out; }""",
            moves,
        )
        browser.close()
    return samples


def emoji_or_stand_in(tmp: Path) -> tuple[dict[str, str], str]:
    """{"emoji": model dir} and a line saying what it is."""
    try:
        return {"emoji": str(resolve("emoji"))}, "the bundled emoji model"
    except ModelDirError as e:
        from unnoise.models import UNet, UNetConfig

        torch.manual_seed(0)
        net = UNet(UNetConfig.default().replace(image_size=32, in_channels=3, out_channels=3))
        meta = SimpleNamespace(channels=3, image_size=32, name="stand-in", example_prompts=[])
        path = save_model_dir(tmp / "emoji", net, schedule=schedules.get("linear"), prediction_type="v_prediction",
                              dataset=meta, text_encoder="stand-in")
        return {"emoji": str(path)}, (f"NOT the bundled emoji model ({e}): an untrained UNetConfig.default() "
                                      "at 3×32×32, the bundled models' architecture, which costs the same per step")


def learned(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        models, what = emoji_or_stand_in(Path(tmp))
        app = create_app(generate=PainterFactory(models))
        params = {"prompt": "a smiling cat", "model": "emoji", "steps": args.steps, "guidance": 5, "seed": 0}
        with serving(app) as url, httpx.Client(base_url=url, timeout=120) as client:
            cold = time_stream(client, params, "/api/generate")
            runs = [time_stream(client, {**params, "seed": k}, "/api/generate") for k in range(args.repeats)]
            dial = time_stream(client, {**params, "steps": 20}, "/api/guidance")
            spacings = time_stream(client, {**params, "steps": 8}, "/api/spacings/run")
    first, total = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    print(f"learned reverse with {what}:")
    print(f"  cold (loads the model and text encoder): first step after {1000 * cold[0]:.0f} ms, done after {1000 * cold[1]:.0f} ms")
    print(f"  {args.steps} steps, median of {args.repeats}: first step after {1000 * first:.0f} ms "
          f"(goal < {FIRST_STEP_GOAL_S:g} s: {'met' if first < FIRST_STEP_GOAL_S else 'MISSED'}), "
          f"done after {1000 * total:.0f} ms" + (
              f" (goal for 20 steps < {EMOJI_20_STEPS_GOAL_S:g} s: {'met' if total < EMOJI_20_STEPS_GOAL_S else 'MISSED'})"
              if args.steps == 20 else ""))
    print(f"  guidance dial, 5 scales × 20 steps in one batch: first step {1000 * dial[0]:.0f} ms, done {1000 * dial[1]:.0f} ms")
    print(f"  spacings, 5 × 8 steps + a 50-step reference: first step {1000 * spacings[0]:.0f} ms, done {1000 * spacings[1]:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-learned", action="store_true", help="skip the learned reverse")
    args = ap.parse_args()

    with serving(create_app()) as url, httpx.Client(base_url=url, timeout=60) as client:
        client.get("/api/forward").raise_for_status()  # warm up
        fwd = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            client.get("/api/forward").raise_for_status()
            fwd.append(time.perf_counter() - t0)
        runs = [time_stream(client, {"steps": args.steps}) for _ in range(args.repeats)]
        peer = server_rendered_frame(max(args.repeats, 20))
        page = None if args.no_browser else browser_compose(url, 60)

    print(f"GET /api/forward (cat 256×170: x0 + ε, once per picture): {median_ms(fwd):.1f} ms")
    print(f"replay, {args.steps} steps at 256×170: first step after {median_ms([r[0] for r in runs]):.0f} ms, "
          f"done after {median_ms([r[1] for r in runs]):.0f} ms ({runs[0][2]} step events)")
    print(f"slider move, server-rendered peer (add_noise + PNG + base64, no round trip): {median_ms(peer):.2f} ms")
    if page:
        print(f"slider move, composed in the page (chromium): {median_ms(page):.2f} ms "
              f"→ {statistics.median(peer) / statistics.median(page):.1f}× less than the peer, and no request")
    else:
        print("slider move in the page: not measured (no playwright or chromium)")
    if not args.no_learned:
        learned(args)


if __name__ == "__main__":
    main()
