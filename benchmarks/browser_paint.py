"""The static lab painting in headless chromium, beside the served Python lab painting the same request.

    python benchmarks/browser_paint.py [--site DIR] [--repeats 5] [--cold 3] [--judge]

Exports the site (every bundled model; or reuses --site DIR, an earlier `unnoise lab --export`), serves it with
`python -m http.server` and starts `unnoise lab` (both subprocesses), then measures, medians after a warm-up:

* a 20-step emoji painting (dpmpp_2m, w = 3): `window.unnoise.paint`'s own ms vs the time to the `done` event
  of the same /api/generate request (goal ≤ 1.0 s in the page);
* emoji-fast with its card's defaults (ddim, 4 calls, w = 3) the same way (goal ≤ 0.2 s);
* cold start: a fresh browser (no cache, nothing compiled) from navigation to the first finished painting, vs a fresh
  `unnoise lab` process from its start to its first finished painting (goal ≤ 6 s);
* the whole site's size (goal ≤ 60 MB), beside the installed size of torch, what painting in Python needs;
* with --judge, the emoji judge (`unnoise eval`'s top-5 retrieval) on 60 names × 4 seeds painted in the page
  and by the Python Painter (goal: within 2 points).
Every comparison prints a `ratio:` line (> 1: the page is faster / smaller).  Paintings are interleaved so the
load of the shared machine falls on both alike.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx

EMOJI = {"prompt": "cat face", "model": "emoji", "sampler": "dpmpp_2m", "steps": 20, "guidance": 3.0, "seed": 0}
FAST = {"prompt": "cat face", "model": "emoji-fast", "seed": 0}
GOALS = {"emoji": 1.0, "emoji-fast": 0.2, "cold": 6.0, "site_mb": 60.0}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAINT_MS = "r => window.unnoise.paint(r).then(out => out.ms)"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], probe: str, timeout: float = 120) -> subprocess.Popen:
    """A subprocess, once `probe` (a URL) answers."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(probe, timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{' '.join(argv)} did not come up") from None
            time.sleep(0.05)


def served_seconds(client: httpx.Client, request: dict) -> float:
    """Seconds from the /api/generate request to its `done` event."""
    params = {k: v for k, v in request.items()}
    t = time.perf_counter()
    with client.stream("GET", "/api/generate", params=params) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line == "event: done":
                return time.perf_counter() - t
    raise RuntimeError("the stream ended without a done event")


def warm(page, lab: httpx.Client, request: dict, repeats: int) -> tuple[float, float]:
    """Median seconds of the page's painting and of the served lab's, interleaved, after one warm-up each."""
    page.evaluate(PAINT_MS, request)
    served_seconds(lab, request)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(page.evaluate(PAINT_MS, request) / 1000)
        theirs.append(served_seconds(lab, request))
    return statistics.median(ours), statistics.median(theirs)


def cold_page(playwright, url: str) -> float:
    """A fresh browser (empty cache, and no WebAssembly compiled in this process yet: a new context of a running
    browser may reuse the ORT code an earlier page compiled and tiered up): navigation → the first emoji painting."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page()
    t = time.perf_counter()
    page.goto(url)
    page.wait_for_function("window.unnoise !== undefined", timeout=60_000)
    page.evaluate("window.unnoise.ready")
    page.evaluate(PAINT_MS, EMOJI)
    seconds = time.perf_counter() - t
    browser.close()
    return seconds


def cold_lab() -> float:
    """A fresh `unnoise lab` process: its start → its first 20-step emoji painting finished."""
    port = free_port()
    t = time.perf_counter()
    proc = start([sys.executable, "-m", "unnoise", "lab", "--port", str(port)], f"http://127.0.0.1:{port}/api/status")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            served_seconds(client, EMOJI)
        return time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(10)


def report(name: str, ours: float, theirs: float, goal: float, unit: str = "s") -> None:
    print(f"{name}: page {ours:.3f} {unit} (goal ≤ {goal:g} {unit}: {'met' if ours <= goal else 'NOT met'}), "
          f"served Python lab {theirs:.3f} {unit}")
    print(f"ratio: {theirs / ours:.2f} ({name}: served lab / page)")


def judge(page, seeds: int = 4) -> None:
    """The emoji judge's top-5 on the same (name, seed) pairs painted in the page and by the Python Painter."""
    import numpy as np
    import torch

    from unnoise import Painter
    from unnoise.evaluation.quality import EmojiJudge, Setting, paint_many

    painter = Painter.from_pretrained("emoji")
    j = EmojiJudge(painter.info.image_size)
    prompts, targets = j.prompts(60 * seeds)
    seeds_ = list(range(len(prompts)))
    python_images, _ = paint_many(painter, prompts, seeds_, Setting(sampler="dpmpp_2m", steps=20, guidance=3.0))
    pictures = []
    for prompt, seed in zip(prompts, seeds_):
        data = page.evaluate("r => window.unnoise.paint(r).then(out => Array.from(out.data))",
                             {**EMOJI, "prompt": prompt, "seed": seed, "snap": False})
        rgb = np.asarray(data, dtype=np.float32).reshape(32, 32, 4)[..., :3]
        pictures.append(torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1)
    ours, theirs = (j.score(images, targets)["top5_names"] for images in (torch.stack(pictures), python_images))
    print(f"emoji judge, 60 names × {seeds} seeds: top-5 page {ours:.1%}, Python Painter {theirs:.1%} "
          f"(goal: within 2 points: {'met' if abs(ours - theirs) <= 0.02 else 'NOT met'})")
    print(f"ratio: {ours / theirs:.3f} (top-5, page / Python Painter)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, help="an earlier export to reuse (default: export every bundled model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", type=int, default=3, help="cold starts of each side")
    parser.add_argument("--judge", action="store_true", help="also the emoji judge on 240 paintings each side")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from unnoise.lab.export import export_site, site_bytes

    with tempfile.TemporaryDirectory() as tmp:
        site = args.site or export_site(Path(tmp) / "site")
        size_mb = site_bytes(site) / 1e6
        import torch

        torch_mb = sum(f.stat().st_size for f in Path(torch.__file__).parent.rglob("*") if f.is_file()) / 1e6
        print(f"site: {size_mb:.1f} MB (goal ≤ {GOALS['site_mb']:g} MB: {'met' if size_mb <= 60 else 'NOT met'}); "
              f"torch as installed here: {torch_mb:.0f} MB")
        print(f"ratio: {torch_mb / size_mb:.1f} (torch installed / the whole static site)")
        port, lab_port = free_port(), free_port()
        static = start([sys.executable, "-m", "http.server", "-d", str(site), "--bind", "127.0.0.1", str(port)],
                       f"http://127.0.0.1:{port}/site.json")
        lab = start([sys.executable, "-m", "unnoise", "lab", "--port", str(lab_port)],
                    f"http://127.0.0.1:{lab_port}/api/status")
        url = f"http://127.0.0.1:{port}/"
        try:
            with sync_playwright() as p, httpx.Client(base_url=f"http://127.0.0.1:{lab_port}", timeout=120) as client:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function("window.unnoise !== undefined", timeout=60_000)
                page.evaluate("window.unnoise.ready")
                report("emoji 20 steps", *warm(page, client, EMOJI, args.repeats), GOALS["emoji"])
                report("emoji-fast (card defaults)", *warm(page, client, FAST, args.repeats), GOALS["emoji-fast"])
                lab.terminate()  # one Python process at a time from here: the cold lab gets the machine's cores
                page_cold, lab_cold = [], []
                for _ in range(args.cold):
                    page_cold.append(cold_page(p, url))
                    lab_cold.append(cold_lab())
                report("cold start → first painting", statistics.median(page_cold), statistics.median(lab_cold),
                       GOALS["cold"])
                if args.judge:
                    judge(page)
                browser.close()
        finally:
            for proc in (static, lab):
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
