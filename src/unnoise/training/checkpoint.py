"""Checkpoints: safetensors + JSON directories, written so that a crash can never corrupt the last good one.

Layout of a run directory::

    checkpoints/step-00001000/   model.safetensors  ema.safetensors  optimizer.safetensors  trainer_state.json
    checkpoints/latest           one line: the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, each file flushed to disk, then renamed into
place (atomic on POSIX); only then is `latest` replaced (write-to-temp + os.replace).  A process killed
at any moment leaves either the old `latest` or the new one, never a half-written checkpoint.
"""

from __future__ import annotations

from ..errors import UnnoiseError

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

LATEST = "latest"


class CheckpointError(UnnoiseError, ValueError):
    """A checkpoint is missing, incomplete or unreadable."""


@dataclass
class Checkpoint:
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    state: dict[str, Any]  # trainer_state.json
    extra: dict[str, torch.Tensor] | None = None  # extra.safetensors: a loop's own tensors (e.g. distill's targets)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    _fsync_file(tmp)
    os.replace(tmp, path)


def optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Split a torch optimizer state_dict into flat tensors (for safetensors) and JSON param groups."""
    tensors = {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            tensors[f"state.{idx}.{key}"] = torch.as_tensor(value)
    return tensors, state_dict["param_groups"]


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": param_groups}


def save(
    run_dir: str | os.PathLike,
    step: int,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: dict[str, Any],
    keep: int = 3,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `keep` checkpoints.  `extra`:
    more tensors the loop needs to resume exactly (extra.safetensors, in the same atomic folder)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    opt_tensors, param_groups = optimizer_to_tensors(optimizer)
    files = [("model", model), ("ema", ema), ("optimizer", opt_tensors)]
    files += [("extra", extra)] if extra is not None else []
    for file, tensors in files:
        # channels_last weights are strided views; safetensors stores plain row-major data
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / f"{file}.safetensors"))
    (tmp / "trainer_state.json").write_text(
        json.dumps({**state, "step": step, "optimizer_param_groups": param_groups}, indent=2, sort_keys=True) + "\n"
    )
    for f in tmp.iterdir():
        _fsync_file(f)
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. Ctrl-C right after a periodic save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    write_json_atomic(root / LATEST, name)
    _prune(root, keep, protect=name)
    return final


def _prune(root: Path, keep: int, protect: str) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for p in done[:-keep] if keep > 0 else []:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():  # leftovers of saves that died half-way (only one process ever writes here)
        if p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def latest_path(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None if it has none."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"unreadable checkpoint pointer {pointer}: {e}") from e
    path = pointer.parent / str(name)
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which does not exist")
    return path


def load(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    for name in ("trainer_state.json", "model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        if not (path / name).is_file():
            raise CheckpointError(f"incomplete checkpoint {path}: missing {name}")
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        model = load_file(str(path / "model.safetensors"))
        ema = load_file(str(path / "ema.safetensors"))
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
        extra = load_file(str(path / "extra.safetensors")) if (path / "extra.safetensors").is_file() else None
    except (SafetensorError, json.JSONDecodeError, OSError) as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {e}") from e
    optimizer = optimizer_from_tensors(opt_tensors, state.pop("optimizer_param_groups"))
    return Checkpoint(step=int(state["step"]), model=model, ema=ema, optimizer=optimizer, state=state, extra=extra)
