"""How snappy is the lab?  Medians over repeats, against a peer measured in the same run.

    python benchmarks/lab_latency.py [--repeats 7] [--steps 20] [--no-browser]

* forward: one /api/forward (the picture and ε, once per picture) and, per slider move, the page's
  own composition (in chromium, if playwright and /usr/bin/chromium are there) against the peer a
  server-rendered slider would pay per move: add_noise + PNG + base64 on the server, before any
  round trip;
* streams: time from request to the first `step` event, and to `done`, for a replay of --steps steps
  (the learned reverse will be measured the same way once /api/generate has a model).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import httpx
import torch

from unnoise import schedules
from unnoise.lab import create_app, serving
from unnoise.lab.uploads import png_data_url, the_cat


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def time_stream(client: httpx.Client, params: dict) -> tuple[float, float, int]:
    """Seconds to the first step event, seconds to done, and the steps seen."""
    start = time.perf_counter()
    first, steps = None, 0
    with client.stream("GET", "/api/replay", params=params) as r:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-browser", action="store_true")
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


if __name__ == "__main__":
    main()
