"""Atomic file writes, the sweep of what dead writers left behind, and the fault-injection hook that tests them.

Every file unnoise writes for later (checkpoints, `latest`, config.json, sample grids, model directories,
model cards) goes through `atomic_write`: the bytes go to a hidden sibling `.NAME.tmp-PID-N`, are flushed
to disk, and the sibling is renamed over NAME (atomic on POSIX), then the directory entry is flushed.  A
process killed at any moment leaves NAME as it was or as it is meant to be, never half-written, plus at
worst a `.NAME.tmp-PID-N` that `clean_debris` removes once PID is gone.

`UNNOISE_FAULT_AT=POINT:N` makes the process kill itself (SIGKILL, as `kill -9` would) the N-th time it
reaches POINT; tests/test_crash.py uses it to kill real runs at every write.  Points: FAULT_POINTS.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UnnoiseError

FAULT_ENV = "UNNOISE_FAULT_AT"
FAULT_POINTS = {
    "checkpoint-file": "a checkpoint file written into its hidden folder (mid-save)",
    "checkpoint-renamed": "a checkpoint folder renamed into place, before `latest` moves",
    "replace": "a temporary file written, before it replaces its target (latest, config.json, metrics trim, …)",
    "metrics": "half of a metrics.jsonl line appended",
    "export": "a model directory written in hiding, before it is renamed into place",
    "export-swap": "between moving the old model directory aside and renaming the new one in",
    "samples": "a sample grid written, before it replaces its target",
}
_TMP = re.compile(r"^\..+\.(tmp|old)-(\d+)(?:-\d+)?$")  # .NAME.tmp-PID[-N], .NAME.old-PID[-N]
_LEGACY_TMP = re.compile(r"^\.tmp-.+-(\d+)$")  # checkpoints/.tmp-step-…-PID from unnoise ≤ 0.x
_counter = itertools.count()
_hits: dict[str, int] = {}


class FaultSpecError(UnnoiseError, ValueError):
    """UNNOISE_FAULT_AT is not POINT:N with a known point."""


def fault_point(name: str, before: Callable[[], Any] | None = None) -> None:
    """SIGKILL this process if UNNOISE_FAULT_AT names `name` and this is the N-th time it is reached (after
    calling `before`, which may leave the half-done write a real kill could leave)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, n = spec.rpartition(":")
    if point not in FAULT_POINTS or not n.isdigit() or int(n) < 1:
        raise FaultSpecError(f"{FAULT_ENV}={spec!r}: expected POINT:N, N ≥ 1, POINT one of {', '.join(FAULT_POINTS)}")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(n):
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)


def tmp_name(path: Path, kind: str = "tmp") -> Path:
    """The hidden sibling a write of `path` goes through: .NAME.tmp-PID-N (N: unique within this process)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{next(_counter)}")


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], Any], *, fault: str = "replace",
                 mode: int = 0o644) -> Path:
    """write_fn(tmp) writes the file at tmp; it is flushed and renamed onto path.  Readers see the old file or
    the new one, never half of one.  `mode`: safetensors writes 0600; model files are meant to be shared."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        write_fn(tmp)
        os.chmod(tmp, mode)
        fsync_file(tmp)
        fault_point(fault)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, fault: str = "replace") -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"), fault=fault)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, fault: str = "replace") -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", fault=fault)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # nothing of ours is half-written while we sweep
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_debris(directory: str | os.PathLike) -> list[str]:
    """Remove the temporary files and folders (.NAME.tmp-PID…) that writers which are no longer running left
    in `directory`; a model directory moved aside (.NAME.old-PID…) whose replacement never arrived is put
    back.  Returns the names removed or restored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    done = []
    for p in sorted(directory.iterdir()):
        m, legacy = _TMP.match(p.name), _LEGACY_TMP.match(p.name)
        pid = m.group(2) if m else legacy.group(1) if legacy else None
        if pid is None or _alive(int(pid)):
            continue
        target = directory / p.name[1:].rsplit(".", 1)[0]
        if m and m.group(1) == "old" and not target.exists():
            os.rename(p, target)
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        done.append(p.name)
    return done
