"""Checkpoints: safetensors + JSON directories, written so that a crash can never corrupt the last good one.

Layout of a run directory::

    checkpoints/step-00001000/   model.safetensors  ema.safetensors  optimizer.safetensors  trainer_state.json
    checkpoints/latest           one line: the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder (.step-N.tmp-PID-K), each file flushed to disk, then
renamed into place (atomic on POSIX); only then is `latest` replaced (unnoise.atomic).  A process killed at any
moment leaves complete step-N folders and at worst a hidden temporary one, which the next save or resume
sweeps away; `--resume` takes the newest step-N folder that loads, falling back past corrupt ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import (
    clean_debris,
    fault_point,
    fsync_dir,
    fsync_file,
    tmp_name,
    write_json_atomic,  # (distill imports it from here too)
)
from ..errors import UnnoiseError

LATEST = "latest"
REQUIRED = ("trainer_state.json", "model.safetensors", "ema.safetensors", "optimizer.safetensors")
_STEP = re.compile(r"^step-\d{8,}$")


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
    path: Path | None = None  # the folder it was loaded from


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
    tmp = tmp_name(final)
    tmp.mkdir()
    opt_tensors, param_groups = optimizer_to_tensors(optimizer)
    files = [("model", model), ("ema", ema), ("optimizer", opt_tensors)]
    files += [("extra", extra)] if extra is not None else []
    for file, tensors in files:
        # channels_last weights are strided views; safetensors stores plain row-major data
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / f"{file}.safetensors"))
        fault_point("checkpoint-file")
    (tmp / "trainer_state.json").write_text(
        json.dumps({**state, "step": step, "optimizer_param_groups": param_groups}, indent=2, sort_keys=True) + "\n"
    )
    for f in tmp.iterdir():
        fsync_file(f)
    fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. Ctrl-C right after a periodic save): move it aside first
        old = tmp_name(final, "old")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    fsync_dir(root)
    fault_point("checkpoint-renamed")
    write_json_atomic(root / LATEST, name)
    _prune(root, keep, protect=name)
    return final


def _steps(root: Path) -> list[Path]:
    """The checkpoint folders step-NNNNNNNN in root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP.match(p.name))


def _prune(root: Path, keep: int, protect: str) -> None:
    for p in _steps(root)[:-keep] if keep > 0 else []:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)
    clean_debris(root)  # leftovers of saves that died half-way (only one process ever writes here)


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED)


def latest_path(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None if it has none.

    Every step-N folder is complete when it appears (it is renamed into place after its files are flushed),
    so the newest one is the newest complete checkpoint even if `latest` was not moved yet (a kill between
    the two), is garbage, or names a folder that is gone; `latest` is for people and older tools."""
    done = [p for p in _steps(Path(run_dir) / "checkpoints") if _complete(p)]
    return done[-1] if done else None


def load_newest(run_dir: str | os.PathLike, log: Callable[[str], None] = print) -> Checkpoint | None:
    """The newest checkpoint of the run that loads, falling back past corrupt ones (each reported through
    `log`, one line); None if there is none.  What `--resume` uses."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if pointer.exists():
        try:
            named = json.loads(pointer.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            named = None
        if not (isinstance(named, str) and _STEP.match(named)):
            log(f"{pointer} is unreadable; ignoring it and using the newest complete checkpoint")
    for path in reversed([p for p in _steps(root) if _complete(p)]):
        try:
            return load(path)
        except CheckpointError as e:
            log(f"{e}; falling back to the previous checkpoint")
    return None


def load(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    for name in REQUIRED:
        if not (path / name).is_file():
            raise CheckpointError(f"incomplete checkpoint {path}: missing {name}")
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        model = load_file(str(path / "model.safetensors"))
        ema = load_file(str(path / "ema.safetensors"))
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
        extra = load_file(str(path / "extra.safetensors")) if (path / "extra.safetensors").is_file() else None
        optimizer = optimizer_from_tensors(opt_tensors, state.pop("optimizer_param_groups"))
        return Checkpoint(step=int(state["step"]), model=model, ema=ema, optimizer=optimizer, state=state, extra=extra,
                          path=path)
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError, TypeError, ValueError,
            AttributeError) as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from e


def resume_newest(run_dir: str | os.PathLike, restore: Callable[[Checkpoint], None],
                  log: Callable[..., None]) -> Checkpoint | None:
    """`--resume` for a training or distillation run: restore the newest checkpoint that loads (falling back past
    corrupt ones) and say so, or say that nothing complete was saved and the run starts over; `log(msg, force=)`
    is the run's logger."""
    ck = load_newest(run_dir, log=lambda m: log(f"--resume: {m}", force=True))
    if ck is None:
        log(f"--resume: no complete checkpoint in {Path(run_dir) / 'checkpoints'}; starting over from step 0",
            force=True)
        return None
    restore(ck)
    log(f"resumed from {ck.path} at step {ck.step}")
    return ck
