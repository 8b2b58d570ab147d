"""What ``resume=True`` (``--resume``) continues, decided before anything is built or
written, so a refused resume leaves the run exactly as it was.

A resumed run is the run its folder holds: its settings come from the folder's
``train_settings.json``. Settings given again must equal the saved ones, except those that
only say how long to go on, how often to save or score, and how fast to compute
(:data:`MAY_CHANGE`); any other difference (a new learning rate, seed or method) would
not continue that run but silently mix two, so it is refused, as is other training data
than the checkpoint was trained on.

Example::

    s = resumed_settings("runs/llama", TrainSettings(steps=500), {"steps"})
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, CorruptFileError
from pe_core.training.checkpoint import STATE, latest_checkpoint
from pe_core.training.run_folder import CHECKPOINTS
from pe_core.training.settings import SETTINGS_NAME, TrainSettings

MODEL_OPTIONS = "model_options"  # the key of train_settings.json that holds them
_UNSET = object()
# the length of the run, bookkeeping, and ways to compute the same steps
MAY_CHANGE = frozenset({
    "steps", "epochs", "save_every", "keep_checkpoints", "eval_every", "eval_batch_size",
    "progress", "grad_cache_chunk", "gradient_checkpointing", "text_kv_cache_mb", "bf16",
    "deterministic", "text_pass_bf16",
})


def resumed_settings(out: Path, given: TrainSettings, named: set[str]) -> TrainSettings:
    """The settings a resumed run into ``out`` trains with: the saved ones, with the
    ``named`` fields of ``given`` (those the caller passed) that may change. A
    :class:`ConfigError` names any other field whose given value differs. A folder
    without a checkpoint is left to :func:`~pe_core.training.run_folder.plan_run_folder`
    to refuse."""
    found = latest_checkpoint(out / CHECKPOINTS)
    if found is None:
        return given
    saved = _saved(out / SETTINGS_NAME)
    known = {f.name for f in fields(TrainSettings)}
    values = {k: v for k, v in saved.items() if k in known}
    differ = []
    for name in sorted(named & known):
        value = getattr(given, name)
        if name in MAY_CHANGE or name not in values:
            values[name] = value
        elif value != values[name]:
            differ.append(f"{name}={value!r} (the run has {values[name]!r})")
    done = int(found.name.rpartition("-")[2]) if found.name.startswith("step-") else 0
    if "steps" in named and given.steps is not None and given.steps < done:
        raise ConfigError(f"resume: {out} is at step {done} already and steps is "
                          f"{given.steps}; pass more steps to train on, or leave steps out")
    if differ:
        raise ConfigError(
            f"resume continues {out} with the settings it was trained with, and "
            f"{'; '.join(differ)}: leave them out to continue the run, or start a new one "
            f"(overwrite=True / --overwrite, or another out folder). Only {sorted(MAY_CHANGE)} "
            "may change on resume"
        )
    return TrainSettings(**values)


def resumed_options(out: Path, given: dict[str, Any]) -> dict[str, Any]:
    """The model options (``num_soft_tokens``, ``placement``, ...) a resumed run builds
    with: those saved with the run's settings, with the ``given`` ones checked against
    them; none may change (the checkpoint was trained with those). A run saved without
    them (an older pe) keeps ``given``."""
    if latest_checkpoint(out / CHECKPOINTS) is None:
        return given
    saved = _saved(out / SETTINGS_NAME).get(MODEL_OPTIONS)
    if not isinstance(saved, dict):
        return given
    differ = [f"{k}={v!r} (the run has {saved.get(k, 'the default')!r})"
              for k, v in sorted(given.items()) if _jsonable(v) != saved.get(k, _UNSET)]
    if differ:
        raise ConfigError(
            f"resume continues {out} with the model it was trained as, and "
            f"{'; '.join(differ)}: leave them out to continue the run, or start a new one "
            "(overwrite=True / --overwrite, or another out folder)"
        )
    return dict(saved)


def save_settings(folder: Path, settings: TrainSettings, options: dict[str, Any]) -> None:
    """``train_settings.json``: the settings, and the model options given to the run
    (what a resume builds the same model from)."""
    settings.save(folder, {MODEL_OPTIONS: _jsonable(options)})


def _jsonable(value: Any) -> Any:
    # through JSON and back, as the saved copy was: tuples become lists, as on disk
    return json.loads(json.dumps(value, default=str))


def check_resume_data(out: Path, data_hash: str) -> None:
    """The newest checkpoint under ``out`` was trained on data with ``data_hash``."""
    found = latest_checkpoint(out / CHECKPOINTS)
    if found is None:
        return
    try:
        saved = json.loads((found / STATE).read_text(encoding="utf-8")).get("data_hash")
    except (OSError, ValueError, AttributeError) as exc:
        raise CorruptFileError(f"{found / STATE} cannot be read ({exc}); delete {found} to "
                               "resume from the checkpoint before it, or start the run "
                               "again") from None
    if saved is not None and saved != data_hash:
        raise ConfigError(
            f"resume: {found} was trained on other data (hash {str(saved)[:12]}..., this "
            f"data {data_hash[:12]}...): resume with the same data, or start a new run "
            "(overwrite=True / --overwrite, or another out folder)"
        )


def _saved(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"resume: {path} is missing, so the settings the run was trained "
                          "with are unknown; start a new run") from None
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"resume: {path} cannot be read ({exc}); restore it or start "
                               "a new run") from None
    if not isinstance(saved, dict):
        raise CorruptFileError(f"resume: {path} is not a settings object; restore it or "
                               "start a new run")
    return saved
