"""Serve a folder as `python -m http.server` does, plus the two headers that make a page cross-origin isolated
(COOP/COEP, as a static host can be set up to send them), so that the exported lab's ONNX Runtime Web runs one
WebAssembly thread per core:

    python scripts/isolated_host.py PORT DIR

Used by tests/test_lab_static.py and benchmarks/browser_threads.py; listens on 127.0.0.1 only.
"""

import functools
import http.server
import sys


class Isolated(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()


if __name__ == "__main__":
    port, directory = int(sys.argv[1]), sys.argv[2]
    handler = functools.partial(Isolated, directory=directory)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
