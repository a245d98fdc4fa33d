"""Clients that stop reading, over real sockets: they must not keep the lab's run slots (issue 29, item 4)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import torch
from conftest import wait_until
from fastapi.testclient import TestClient

from unnoise import schedules
from unnoise.lab import LabConfig, create_app, serving
from unnoise.lab.streams import replay_source, replay_timesteps


def tiny_factory(req):
    """A model source without a model: the replay of an 8×8 picture (the gate is what is under test here)."""
    s = schedules.get("linear")
    g = torch.Generator().manual_seed(req.seed)
    x0, eps = torch.rand((3, 8, 8), generator=g) * 2 - 1, torch.randn((3, 8, 8), generator=g)
    return replay_source(s, x0, eps, replay_timesteps(s, req.steps or 4)), {"width": 8, "height": 8}


def stalled_client(url: str, path: str) -> socket.socket:
    """A raw socket that sends one GET and never reads: a tiny receive buffer, so the server's side fills up."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect, so the window stays small
    sock.connect((parts.hostname, parts.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    return sock



def test_two_clients_that_stop_reading_do_not_lock_the_lab():
    """Two streams whose clients never read hold both slots only until `stall_timeout` passes without an event
    leaving; a third client's /api/generate queues and is then served, not turned away with 429."""
    stall = 1.5
    config = LabConfig(max_jobs=2, max_waiting=1, wait_timeout=8.0, stall_timeout=stall)
    app = create_app(config, generate=tiny_factory)
    gate = app.state.gate
    with serving(app) as url:
        stalled = [stalled_client(url, "/api/replay?steps=1000") for _ in range(2)]  # 256-pixel cat: MBs of events
        try:
            assert wait_until(lambda: gate.running == 2, timeout=10)
            t0 = time.monotonic()
            with httpx.Client(base_url=url, timeout=30) as c:
                r = c.get("/api/generate", params={"prompt": "a cat", "steps": 3})
            served_after = time.monotonic() - t0
            print(f"third client served after {served_after:.2f} s (stall_timeout {stall} s, queue wait limit "
                  f"{config.wait_timeout} s)")
            assert r.status_code == 200, r.text
            assert r.text.count("event: step") == 3 and "event: done" in r.text
            # the slots came free by the stall timeout (plus the moments it takes to fill the socket buffers),
            # well before the queued request's own 8 s limit would have answered 429
            assert served_after < stall + 3.0
            assert wait_until(lambda: gate.running == 0 and gate.waiting == 0, timeout=5)
        finally:
            for sock in stalled:
                sock.close()


def test_a_slow_but_reading_client_keeps_its_stream():
    """The stall timeout is per event, not per run: a client that reads, however long the run, is not cut off."""
    app = create_app(LabConfig(image_size=32, stall_timeout=0.5))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        with c.stream("GET", "/api/replay", params={"steps": 12}) as r:
            events = []
            for line in r.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                    time.sleep(0.1)  # 12 steps × 0.1 s: longer than the stall timeout in all
        assert events == ["start", *["step"] * 12, "done"]


def test_busy_message_gives_the_counts_not_the_limits():
    app = create_app(LabConfig(max_jobs=2, max_waiting=4, wait_timeout=0.2))
    gate = app.state.gate
    with TestClient(app) as c:
        assert gate._take() and gate._take()  # both slots taken, nobody waiting
        r = c.get("/api/replay", params={"steps": 2})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert "(2 runs going, 0 waiting)" in r.json()["error"], r.json()
        gate._give_back()
        gate._give_back()
    app = create_app(LabConfig(max_jobs=1, max_waiting=0))
    with TestClient(app) as c:
        assert app.state.gate._take()
        assert "(1 run going, 0 waiting)" in c.get("/api/replay").json()["error"]
