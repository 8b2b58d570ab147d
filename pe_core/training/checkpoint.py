"""Checkpoints: everything needed to continue a run bit for bit, with no pickle.

A checkpoint is a folder ``checkpoints/step-00000100/``:

* ``trainable.safetensors`` – the trainable parameters, by name;
* ``optimizer.safetensors`` – the optimizer's per-parameter state (``name::exp_avg`` ...);
* ``rng.safetensors`` – torch's CPU (and CUDA) generator states, as uint8 tensors;
* ``state.json`` – step, the optimizer's hyper-parameters per group, the scheduler's
  state, Python's ``random`` state, elapsed time. Written last.

It is written in a hidden temp folder and renamed into place, then ``latest.json`` is
replaced atomically, so a crash or Ctrl-C at any moment leaves the previous checkpoint
intact. Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pe_core.errors import CorruptFileError, MissingFileError
from pe_core.safe_io import check_safetensors, load_tensors, save_tensors

LATEST = "latest.json"
STATE = "state.json"


def _write_json_atomic(path: Path, payload: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[
    dict[str, torch.Tensor], list[dict[str, Any]]
]:
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    for group in optimizer.param_groups:
        hyper = {k: v for k, v in group.items() if k != "params"}
        groups.append({**_jsonable(hyper), "params": [names[id(p)] for p in group["params"]]})
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"{names[id(p)]}::{key}"] = t
    return tensors, groups


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, tuple):
            v = list(v)
        if torch.is_tensor(v):
            v = v.item()
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def save_checkpoint(
    root: Path,
    step: int,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:08d}."))
    try:
        save_tensors(dict(params), tmp / "trainable.safetensors", {"step": str(step)})
        names = {id(p): n for n, p in params.items()}
        opt_tensors, groups = _optimizer_tensors(optimizer, names)
        save_tensors(opt_tensors, tmp / "optimizer.safetensors", {"step": str(step)})
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = s
        save_tensors(rng, tmp / "rng.safetensors", {})
        py_state = random.getstate()
        state = {
            "step": step,
            "optimizer_groups": groups,
            "scheduler": _jsonable(scheduler.state_dict()),
            "python_random": [py_state[0], list(py_state[1]), py_state[2]],
            **(extra or {}),
        }
        (tmp / STATE).write_text(json.dumps(state, indent=2))
        if final.exists():  # the same step written again (e.g. Ctrl-C right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_json_atomic(root / LATEST, {"step": step, "folder": final.name})
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step-*") if (p / STATE).is_file())
    for old in done[: max(0, len(done) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):  # temp folders of an interrupted write
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (None if there is none)."""
    pointer = root / LATEST
    if pointer.is_file():
        try:
            folder = root / json.loads(pointer.read_text())["folder"]
            if (folder / STATE).is_file():
                return folder
        except (json.JSONDecodeError, KeyError):
            pass
    done = sorted(p for p in root.glob("step-*") if (p / STATE).is_file())
    return done[-1] if done else None


def load_checkpoint(
    folder: Path,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """Restore parameters, optimizer, scheduler and RNGs in place; returns state.json."""
    state_path = folder / STATE
    if not state_path.is_file():
        raise MissingFileError(f"{folder} is not a complete checkpoint (no {STATE})")
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{state_path} is not valid JSON ({exc})") from exc
    weights, _ = load_tensors(folder / "trainable.safetensors")
    missing = sorted(set(params) - set(weights))
    if missing:
        raise CorruptFileError(
            f"{folder} lacks trainable parameters {missing[:3]}...: it was written by a run "
            "with other settings (method, prompting_lora); start a new output folder"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    _load_optimizer(folder, state, params, optimizer)
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    rng = _state_tensors(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))
    return state


def _load_optimizer(
    folder: Path, state: dict[str, Any], params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
) -> None:
    tensors = _state_tensors(folder / "optimizer.safetensors")
    groups = state["optimizer_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise CorruptFileError(f"{folder}: optimizer groups differ from this run's")
    for saved, group in zip(groups, optimizer.param_groups, strict=True):
        for k, v in saved.items():
            if k != "params" and k in group:
                group[k] = tuple(v) if isinstance(group[k], tuple) else v
    for name, p in params.items():
        per = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.split("::", 1)[0] == name}
        if per:
            optimizer.state[p] = {k: v.to(p.device) if k != "step" else v for k, v in per.items()}


def _state_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The optimizer's or the RNGs' tensors: read with the same typed errors as weights,
    without the weights' check (RNG states are uint8, step counters may be integers)."""
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CorruptFileError(f"{path} could not be read ({exc}); resume from an earlier "
                               "checkpoint or start the run again") from exc
