"""Fixtures and helpers shared by the test modules."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

SQUARE_COLOURS = {"a red square": (220, 30, 30), "a blue square": (30, 30, 220)}  # caption → RGB of `squares`


class CLIResult(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module that runs small networks: fastest for them, and a busy machine's cores
    cannot be oversubscribed (use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli(capsys):
    """Run `unnoise ARGV…` in-process: cli([...]) → CLIResult(code, out, err), code 0 on a normal return."""
    from unnoise.cli import main

    def run(argv: list[str]) -> CLIResult:
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        captured = capsys.readouterr()
        return CLIResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session", autouse=True)
def _folder_cache(tmp_path_factory):
    """Decoded image folders go to a temporary cache, never the user's ~/.cache (subprocesses inherit it)."""
    import os

    old = os.environ.get("UNNOISE_FOLDER_CACHE_DIR")
    os.environ["UNNOISE_FOLDER_CACHE_DIR"] = str(tmp_path_factory.mktemp("folder-cache"))
    yield
    if old is None:
        os.environ.pop("UNNOISE_FOLDER_CACHE_DIR", None)
    else:
        os.environ["UNNOISE_FOLDER_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> Path:
    """A real image folder: 32 noisy red and blue 16×16 squares with captions (SQUARE_COLOURS)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    with open(root / "metadata.jsonl", "w") as meta:
        for i in range(32):
            caption = list(SQUARE_COLOURS)[i % 2]
            arr = np.clip(np.array(SQUARE_COLOURS[caption]) + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / f"{i:02d}.png")
            meta.write(json.dumps({"file_name": f"{i:02d}.png", "text": caption}) + "\n")
    return root


def wait_until(condition, timeout: float = 5.0) -> bool:
    """Poll `condition` every 20 ms until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny untrained model directory (16×16, dpmpp_2m, 6 steps, w = 2): the plumbing is under test, not the
    pictures.  Modules that need other defaults define their own `model_dir`."""
    from types import SimpleNamespace

    import torch

    from unnoise import schedules
    from unnoise.modeldir import save_model_dir
    from unnoise.models import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig.tiny().replace(image_size=16))
    meta = SimpleNamespace(channels=3, image_size=16, name="test", example_prompts=["a red square"])
    out = tmp_path_factory.mktemp("m") / "model"
    return save_model_dir(out, net, schedule=schedules.get("linear"), prediction_type="epsilon", dataset=meta,
                          text_encoder="test", defaults={"steps": 6, "guidance": 2.0, "sampler": "dpmpp_2m"})


ISOLATED_HOST = Path(__file__).resolve().parents[1] / "scripts" / "isolated_host.py"  # http.server + COOP/COEP


@contextlib.contextmanager
def static_host(root: Path, path: str = "", *, isolated: bool = False):
    """`python -m http.server -d root` on a free port (a real static host, no unnoise in it), until the block
    ends; yields the URL of root/path/, once its site.json answers.  isolated: the same server, sending the
    COOP/COEP headers of a cross-origin-isolated page."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ([str(ISOLATED_HOST), str(port), str(root)] if isolated
            else ["-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(root)])
    server = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/{path}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "site.json", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"python -m http.server did not start on port {port}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
