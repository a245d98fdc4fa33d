"""Reverse processes streamed to the page, one server-sent event per step.

A *source* is the heavy work: a function that runs a reverse process and hands each step to an
`emit` callback (the sampler callback of the learned reverse, or the replay below).  The machinery
here runs it on its own thread, turns its steps into events, and stops it when the page goes away:
`emit` raises `Cancelled` inside the source, which unwinds the sampler loop where it stands.

Heavy work is bounded by a `JobGate`: a few jobs run, a few more wait, the rest get 429.  A page that
stops reading without hanging up would keep its slot for as long as its socket stays open (the server
waits for room in the socket to send the next event), so a `JobResponse` gives each event at most
`stall_timeout` seconds to leave; past that the run is stopped and its slot freed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import torch
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from .. import diffusion
from ..errors import UnnoiseError
from ..schedules import Schedule
from .uploads import png_data_url

log = logging.getLogger("unnoise.lab")

# Steps a source may run ahead of a slow page before `emit` blocks: bounds memory per job.
BUFFERED_STEPS = 4


@dataclass(frozen=True)
class Frame:
    """One step of a reverse process as the page shows it; images (3, H, W) in the DDPM scale."""

    index: int  # 0-based step number
    total: int  # steps in the run
    t: float  # DDPM timestep of x_t (fractional for σ-view samplers)
    signal: float  # sqrt(ᾱ_t), the image's share of x_t (the noise share is sqrt(1 − signal²))
    x_t: torch.Tensor  # (3, H, W) the current noisy image
    eps: torch.Tensor  # (3, H, W) the noise the step removes: predicted ε̂ (or, in the replay, the known ε)
    x0: torch.Tensor  # (3, H, W) the clean image it aims at: x̂0

    def event(self, previous: Frame | None = None) -> dict[str, Any]:
        """The step's event data; ε̂ or x̂0 that are the very tensors of the previous step are sent as
        null ("unchanged"): the replay's never change, and noise PNGs are big."""
        return {
            "index": self.index,
            "total": self.total,
            "t": self.t,
            "signal": self.signal,
            "noise": math.sqrt(max(0.0, 1.0 - self.signal**2)),
            "x_t": png_data_url(self.x_t),
            "eps": None if previous is not None and self.eps is previous.eps else png_data_url(self.eps),
            "x0": None if previous is not None and self.x0 is previous.x0 else png_data_url(self.x0),
        }


@dataclass(frozen=True)
class Tile:
    """One run's step inside a TilesFrame: several runs shown side by side (guidance dial, spacings)."""

    tile: int  # which tile (run) of the request
    step: int  # 0-based step of that run
    steps: int  # steps in that run
    t: float  # DDPM timestep of the step's x
    sigma: float  # its noise level σ
    x0: torch.Tensor  # (3, H, W) the run's current x̂0

    def event(self) -> dict[str, Any]:
        return {"tile": self.tile, "step": self.step, "steps": self.steps, "t": self.t, "sigma": self.sigma,
                "x0": png_data_url(self.x0)}


@dataclass(frozen=True)
class TilesFrame:
    """One event of a side-by-side request: the tiles that moved at this step (all of them for runs in
    one batch, one for runs made one after another)."""

    index: int  # 0-based event number
    total: int  # events in the request
    tiles: tuple[Tile, ...]

    def event(self, previous: TilesFrame | None = None) -> dict[str, Any]:
        return {"index": self.index, "total": self.total, "tiles": [tile.event() for tile in self.tiles]}


Emit = Callable[[Frame | TilesFrame], None]
# Runs a reverse process, calling emit once per step; returns the final image (3, H, W) in [−1, 1], or for
# side-by-side runs a dict for the `done` event whose tensors (alone or in lists) are sent as PNG data URLs.
Source = Callable[[Emit], torch.Tensor | dict[str, Any]]


def done_data(final: torch.Tensor | dict[str, Any]) -> dict[str, Any]:
    """The `done` event of a source's result: {"image": png} for one image, else the dict with PNGs for tensors."""
    if isinstance(final, torch.Tensor):
        return {"image": png_data_url(final)}

    def encode(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return png_data_url(v)
        return [encode(u) for u in v] if isinstance(v, (list, tuple)) else v

    return {k: encode(v) for k, v in final.items()}


class Cancelled(Exception):
    """Raised by emit inside a source when its page has gone: stop, nobody is watching."""


class Busy(Exception):
    """All job slots and queue places are taken; `running` and `waiting` are the counts when it was refused."""

    def __init__(self, retry_after: int, running: int, waiting: int) -> None:
        runs = f"{running} run{'s' * (running != 1)} going, {waiting} waiting"
        super().__init__(f"the lab is busy ({runs}); try again in {retry_after} s")
        self.retry_after, self.running, self.waiting = retry_after, running, waiting


class Stalled(Exception):
    """The client took no event for `stall_timeout` seconds (it stopped reading but kept its socket open)."""


class JobGate:
    """At most max_jobs heavy jobs run at once and at most max_waiting more wait (for up to
    wait_timeout s) for a slot; anyone beyond that is turned away with `Busy`.  Thread-safe,
    because a slot is given back by the job's worker thread when the work has really stopped."""

    def __init__(self, max_jobs: int, max_waiting: int, wait_timeout: float, retry_after: int) -> None:
        self.max_jobs, self.max_waiting = max_jobs, max_waiting
        self.wait_timeout, self.retry_after = wait_timeout, retry_after
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0

    def _take(self) -> bool:
        with self._lock:
            if self.running < self.max_jobs:
                self.running += 1
                return True
            return False

    async def acquire(self) -> Slot:
        if self._take():
            return Slot(self)
        with self._lock:
            if self.waiting >= self.max_waiting:
                raise Busy(self.retry_after, self.running, self.waiting)
            self.waiting += 1
        try:
            deadline = time.monotonic() + self.wait_timeout
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                if self._take():
                    return Slot(self)
            with self._lock:  # the counts as this request leaves the queue (it is not waiting any more)
                raise Busy(self.retry_after, self.running, self.waiting - 1)
        finally:
            with self._lock:
                self.waiting -= 1

    def _give_back(self) -> None:
        with self._lock:
            self.running -= 1


class Slot:
    """One taken place in a JobGate; release() is idempotent."""

    def __init__(self, gate: JobGate) -> None:
        self._gate, self._held, self._lock = gate, True, threading.Lock()

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._gate._give_back()


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (the data is one line of JSON, so no escaping is needed)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n".encode()


class Job:
    """One streamed run: its source on a worker thread, its own state, its own slot."""

    def __init__(self, slot: Slot, source: Source, start: dict[str, Any]) -> None:
        self._slot, self._source, self._start = slot, source, start
        self._started = False
        self._stop = threading.Event()

    def finish(self) -> None:
        """The response is over, however it ended: tell the worker to stop at its next step (it frees
        the slot when it has), or free the slot here if the worker never started."""
        self._stop.set()
        if not self._started:
            self._slot.release()

    async def events(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        room = threading.Semaphore(BUFFERED_STEPS)
        stop = self._stop

        def post(kind: str, data: dict[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, (kind, data))
            except RuntimeError:  # the event loop is gone (server shutting down)
                stop.set()

        previous: list[Frame | TilesFrame] = []  # the worker's last frame

        def emit(frame: Frame | TilesFrame) -> None:
            while not room.acquire(timeout=0.05):
                if stop.is_set():
                    raise Cancelled
            if stop.is_set():
                raise Cancelled
            post("step", frame.event(previous[0] if previous else None))  # type: ignore[arg-type]  # same kind
            previous[:] = [frame]

        def work() -> None:
            try:
                final = self._source(emit)
                if not stop.is_set():
                    post("done", done_data(final))
            except Cancelled:
                pass
            except UnnoiseError as e:  # a value the run refused: the page shows the one line
                post("error", {"error": f"the run failed: {e}"})
            except Exception as e:  # a bug in a source: logged; the page learns only its type; the server lives on
                log.exception("lab job failed")
                reason = f"the run failed: internal error ({type(e).__name__}); the server's log has the details"
                post("error", {"error": reason})
            finally:
                self._slot.release()  # only now is the work really over

        self._started = True
        threading.Thread(target=work, name="unnoise-lab-job", daemon=True).start()
        try:
            yield sse("start", self._start)
            while True:
                kind, data = await out.get()
                if kind == "step":
                    room.release()
                yield sse(kind, data)
                if kind != "step":
                    return
        finally:
            stop.set()  # the run ended (or was cancelled here): the worker stops at its next step


class JobResponse(StreamingResponse):
    """A text/event-stream of a Job that stops the job however the response ends.

    An abandoned `async for` does not close its async generator (only garbage collection would), so
    the generator's own `finally` cannot be relied on when the page disconnects: hence `finish` here.

    A page that stops reading but keeps its socket open makes the server's `send` wait for room in the
    socket forever (uvicorn's flow control), holding the run's slot: each `send` gets `stall_timeout`
    seconds, then the response ends (the server closes the connection) and the slot is freed."""

    media_type = "text/event-stream"

    def __init__(self, job: Job, stall_timeout: float) -> None:
        super().__init__(job.events(), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._job, self._stall_timeout = job, stall_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = self._stall_timeout

        async def send_or_give_up(message: Message) -> None:
            try:
                await asyncio.wait_for(send(message), timeout)
            except asyncio.TimeoutError:
                raise Stalled from None

        try:
            await super().__call__(scope, receive, send_or_give_up)
        except Stalled:
            client = scope.get("client") or ("?", 0)
            log.warning("lab: %s:%s took no event for %g s; its run is stopped and its slot freed",
                        client[0], client[1], timeout)
        finally:
            self._job.finish()


def replay_timesteps(schedule: Schedule, steps: int) -> torch.Tensor:
    """Descending timesteps from the static at T−1 (trailing spacing, Lin et al. 2023), int64 (K,).

    At a zero-terminal-SNR end (ᾱ_{T−1} = 0) x_{T−1} holds no trace of the image, so even the known
    noise gives nothing back (0/0): the replay has to start one step later, at T−2.
    """
    ts = schedule.timesteps(steps, "trailing")
    if schedule.alphas_cumprod[ts[0]] == 0:
        ts[0] = schedule.num_steps - 2
        ts = torch.unique_consecutive(ts)
    return ts


def replay_source(schedule: Schedule, x0: torch.Tensor, noise: torch.Tensor, ts: torch.Tensor) -> Source:
    """The fake reverse as a Source: from x_{ts[0]} back to x0 by subtracting the known noise.

    x0, noise: (3, H, W).  Each frame's ε is the known noise and its x̂0 the exact image: it cheats.
    """

    def run(emit: Emit) -> torch.Tensor:
        x0_64, noise_64 = x0.double(), noise.double()  # float64: ᾱ_{T−1} can be ~1e-9, 1/sqrt of it is large
        x_start = schedule.add_noise(x0_64[None], noise_64[None], ts[:1])[0]
        recovered = diffusion.replay(schedule, x_start, noise_64, ts[:1])[-1]  # x0 from the static and ε
        signal = schedule.signal[ts]
        for k, t in enumerate(ts.tolist()):
            # the replay's frames one at a time (diffusion.replay makes them all at once: 1 GB at 1000 steps)
            x_t = x_start if k == 0 else diffusion.trajectory(schedule, recovered, noise_64, ts[k : k + 1])[0]
            emit(Frame(k, len(ts), float(t), float(signal[k]), x_t=x_t, eps=noise_64, x0=recovered))
        return recovered

    return run
