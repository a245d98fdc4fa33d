"""Fixtures shared by the test modules."""

from typing import NamedTuple

import pytest


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
