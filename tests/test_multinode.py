"""Training across machines, as two torchrun "nodes" on one machine (issue 29, item 9).

Each node is its own torchrun launcher with one process (gloo on 127.0.0.1), as on two hosts:
    torchrun --nnodes 2 --nproc-per-node 1 --node-rank R --rdzv-endpoint HOST:PORT -m unnoise train …
The run equals the one-process run, only global rank 0 writes, a node that dies stops the other with one
line, and the run continues with --resume, on two nodes or on one process.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unnoise.training import checkpoint, distributed

COMMON = ["--image-size", "16", "--model-size", "tiny", "--batch-size", "8", "--sample-every", "0",
          "--precision", "fp32", "--threads", "1", "--lr", "1e-3", "--warmup-steps", "2", "--log-every", "1"]


def _env() -> dict[str, str]:  # at call time: after conftest pointed the folder cache at a temporary folder
    return {**os.environ, "OMP_NUM_THREADS": "1", "UNNOISE_DIST_TIMEOUT": "60"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(rank: int, port: int, args: list[str], rdzv: str = "static") -> subprocess.Popen:
    """One machine's launcher: static rendezvous (node rank R is global rank R) or c10d (join order)."""
    how = ["--node-rank", str(rank)] if rdzv == "static" else ["--rdzv-backend", "c10d", "--rdzv-id", f"t{port}"]
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", *how,
         "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "unnoise", "train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _one(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unnoise", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _finish(*procs: subprocess.Popen, timeout: float = 240) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err))
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.latest_path(run) / "model.safetensors"))


def _assert_same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:  # as for N processes on one machine: equal up to the all-reduce's float rounding
        assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=1e-4), k


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and b"unnoise" in (stat.parent / "cmdline").read_bytes():
            kids.append(int(stat.parent.name))
    return kids


def test_dist_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("UNNOISE_DIST_TIMEOUT", raising=False)
    assert distributed.timeout().total_seconds() == 600
    monkeypatch.setenv("UNNOISE_DIST_TIMEOUT", "45")
    assert distributed.timeout().total_seconds() == 45
    for bad in ("soon", "0", "-3", "inf"):
        monkeypatch.setenv("UNNOISE_DIST_TIMEOUT", bad)
        with pytest.raises(distributed.DistributedError, match=f"UNNOISE_DIST_TIMEOUT .*got '{bad}'"):
            distributed.timeout()


def test_only_a_lost_peer_becomes_the_one_line_error():
    info = distributed.DistInfo(rank=1, world_size=4, local_rank=0, device=torch.device("cpu"))
    gloo = ("[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [10.0.0.2]:41234: Connection reset "
            "by peer. This is typically caused by …\nmore")
    with pytest.raises(distributed.DistributedError) as e, distributed.peer_loss_is_an_error(info, "resume it"):
        raise RuntimeError(gloo)
    assert str(e.value) == ("process 1 of 4: another process of the run stopped or stopped answering "
                            "(Read error [10.0.0.2]:41234: Connection reset by peer); resume it")
    with pytest.raises(RuntimeError, match="^mat1 and mat2"), distributed.peer_loss_is_an_error(info, "resume it"):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")  # a bug stays a bug


@pytest.mark.slow
def test_two_nodes_equal_one_process_and_only_rank_0_writes(squares, tmp_path):
    port = _port()
    args = ["--data", str(squares), "--max-steps", "4", "--checkpoint-every", "2", *COMMON]
    # each "machine" gets its own --out, as on hosts without a shared disk: node 1 must write nothing
    procs = [_node(0, port, [*args, "--out", str(tmp_path / "node0")]),
             _node(1, port, [*args, "--out", str(tmp_path / "node1")]),
             _one([*args, "--out", str(tmp_path / "one")])]
    for code, err in _finish(*procs):
        assert code == 0, err[-3000:]
    _assert_same(tmp_path / "node0", tmp_path / "one")
    assert not (tmp_path / "node1").exists()
    rows = [json.loads(line) for line in (tmp_path / "node0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one writer: each step once
    assert (tmp_path / "node0" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_dead_node_stops_the_other_in_one_line_and_the_run_resumes(squares, tmp_path):
    run, port = tmp_path / "run", _port()
    args = ["--data", str(squares), "--checkpoint-every", "2", *COMMON]
    nodes = [_node(r, port, [*args, "--out", str(run), "--max-steps", "100000"], rdzv="c10d") for r in (0, 1)]
    deadline = time.monotonic() + 180
    while checkpoint.latest_path(run) is None:
        assert time.monotonic() < deadline and all(n.poll() is None for n in nodes), "no checkpoint written"
        time.sleep(0.1)
    (worker,) = _children(nodes[1].pid)
    os.kill(worker, signal.SIGKILL)  # node 1's training process dies (a crash, an OOM kill, a lost machine)
    killed = time.monotonic()
    (code0, err0), (code1, _) = _finish(*nodes, timeout=120)
    assert time.monotonic() - killed < 60 and code0 != 0 and code1 != 0
    lines = [line for line in re.split(r"[\r\n]", err0) if line.startswith("error: ")]  # \r: the progress bar's
    assert len(lines) == 1, err0[-3000:]
    assert "another process of the run stopped" in lines[0] and "--resume" in lines[0], lines[0]

    step = checkpoint.load(checkpoint.latest_path(run)).step
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    more = ["--resume", "--max-steps", str(step + 2)]
    port = _port()
    procs = [*(_node(r, port, [*args, "--out", str(run), *more], rdzv="c10d") for r in (0, 1)),
             _one([*args, "--out", str(copy), *more]),  # another world size: one process goes on
             _one([*args, "--out", str(tmp_path / "straight"), "--max-steps", str(step + 2)])]
    for code, err in _finish(*procs):
        assert code == 0, err[-3000:]
    assert checkpoint.load(checkpoint.latest_path(run)).step == step + 2
    _assert_same(run, tmp_path / "straight")
    _assert_same(copy, tmp_path / "straight")
