"""Fixtures shared by the test modules."""

from typing import NamedTuple

import pytest


class CLIResult(NamedTuple):
    code: int
    out: str
    err: str


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
