"""Multi-process training on an existing engine: torchrun sets the environment, we join its process group.

One machine or several: `torchrun --nnodes N --nproc-per-node P --rdzv-backend c10d --rdzv-endpoint HOST:PORT`
on each machine gives every process its global RANK and its LOCAL_RANK on its machine.  A process that dies
closes its sockets, so the others stop at their next collective; one that hangs (a machine gone without a
word) is given up on after $UNNOISE_DIST_TIMEOUT seconds (default 600; torch's own default is 30 minutes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import UnnoiseError

DEFAULT_TIMEOUT_S = 600.0
LOCAL_WORK_TIMEOUT = timedelta(hours=24)  # how long ranks wait for one machine's one-off work (decoding a folder)


class DistributedError(UnnoiseError, RuntimeError):
    """The process group cannot be joined or lost a member (another process or machine stopped)."""


@dataclass(frozen=True)
class DistInfo:
    rank: int  # this process's global rank
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (the GPU index with nccl)
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def timeout() -> timedelta:
    """$UNNOISE_DIST_TIMEOUT seconds: how long a collective waits for a silent peer before giving up."""
    raw = os.environ.get("UNNOISE_DIST_TIMEOUT", "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 7 * 24 * 3600:
        raise DistributedError(f"UNNOISE_DIST_TIMEOUT must be a number of seconds in (0, 604800], got {raw!r}")
    return timedelta(seconds=seconds)


def init(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA); a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device(device or "cpu")  # cpu or mps
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout())
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@contextmanager
def local_main_first(info: DistInfo) -> Iterator[None]:
    """Run the block on each machine's LOCAL_RANK 0 first, then on the machine's other processes.

    For one-off work whose result the others reuse from disk (decoding an image folder into its cache):
    every process waits here, on a CPU group whose timeout allows for long work, not the default one's.
    """
    if not info.enabled:
        yield
        return
    group = dist.new_group(backend="gloo", timeout=max(LOCAL_WORK_TIMEOUT, timeout()))
    try:
        if info.local_rank != 0:
            dist.barrier(group=group)
        yield
        if info.local_rank == 0:
            dist.barrier(group=group)
    finally:
        dist.destroy_process_group(group)


def is_peer_loss(error: BaseException) -> bool:
    """Whether an exception from a collective means another process of the group stopped or went silent."""
    return isinstance(error, getattr(dist, "DistError", ())) or any(
        s in str(error) for s in ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out")
    )


@contextmanager
def peer_loss_is_an_error(info: DistInfo, advice: str) -> Iterator[None]:
    """Turn a collective's failure because another process stopped into one DistributedError line."""
    try:
        yield
    except RuntimeError as e:
        if not info.enabled or isinstance(e, UnnoiseError) or not is_peer_loss(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        detail = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0][:160]  # gloo's "[file.cc:537] " prefix off
        raise DistributedError(f"process {info.rank} of {info.world_size}: another process of the run stopped or "
                               f"stopped answering ({detail}); {advice}") from e


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank if it is True on any (e.g. a NaN loss or a Ctrl-C seen by one process)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
