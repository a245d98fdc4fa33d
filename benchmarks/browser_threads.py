"""The static lab in one WebAssembly thread against one thread per core, in headless chromium.

    python benchmarks/browser_threads.py [--site DIR] [--repeats 8]

Exports emoji and emoji-fast (or reuses --site DIR), serves the site twice: by plain `python -m http.server`
(no headers: one thread) and by the same server sending COOP/COEP (the page is cross-origin isolated, so ONNX
Runtime Web runs navigator.hardwareConcurrency threads), and paints the same requests in both, alternating pages;
medians after two warm-up paintings.  Prints a `ratio:` line per model (> 1: the threads are faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from browser_paint import ARGS, CHROMIUM, free_port, start
from playwright.sync_api import sync_playwright

ISOLATED_HOST = Path(__file__).resolve().parents[1] / "scripts" / "isolated_host.py"  # http.server + COOP/COEP
PAINTS = """async ([model, n]) => { await window.unnoise.ready; const ms = [];
  for (let i = 0; i < n; i++) ms.push((await window.unnoise.paint({prompt: 'cat face', model, seed: i})).ms);
  return {isolated: crossOriginIsolated, ms}; }"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="an earlier export to reuse (default: export emoji + emoji-fast)")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    site = args.site
    if site is None:
        from unnoise.lab.export import export_site

        site = export_site(Path(tempfile.mkdtemp()) / "site", ["emoji", "emoji-fast"])
    one, many = free_port(), free_port()
    servers = [start([sys.executable, "-m", "http.server", str(one), "--bind", "127.0.0.1", "-d", str(site)],
                     f"http://127.0.0.1:{one}/site.json"),
               start([sys.executable, str(ISOLATED_HOST), str(many), str(site)], f"http://127.0.0.1:{many}/site.json")]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            pages = {port: browser.new_page() for port in (one, many)}
            for port, page in pages.items():
                page.goto(f"http://127.0.0.1:{port}/")
            for model in ("emoji", "emoji-fast"):
                runs = {port: page.evaluate(PAINTS, [model, args.repeats + 2]) for port, page in pages.items()}
                single, threads = (statistics.median(runs[port]["ms"][2:]) for port in (one, many))
                assert not runs[one]["isolated"] and runs[many]["isolated"]
                print(f"{model}: one thread {single:.0f} ms, one per core "
                      f"({pages[many].evaluate('navigator.hardwareConcurrency')}) {threads:.0f} ms")
                print(f"ratio: {single / threads:.2f} ({model}: one thread / threads)")
            browser.close()
    finally:
        for server in servers:
            server.kill()


if __name__ == "__main__":
    main()
