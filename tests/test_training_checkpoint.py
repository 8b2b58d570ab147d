"""Training, checkpoints, resume and divergence (pe_core.training.checkpoint, trainer). Tiny
models, tiny data."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import (
    INSTRUCTIONS,
    train_tiny,
)

from pe_core.errors import ConfigError, TrainingDivergedError

pytestmark = pytest.mark.usefixtures("one_thread")

# -- checkpoints, resume, divergence ----------------------------------------------------
def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").open()) if "loss" in r]


def test_ctrl_c_then_resume_matches_uninterrupted(pairs, tiny_folders, tmp_path):
    full = train_tiny(pairs, tiny_folders, tmp_path / "full", steps=8, save_every=3)

    def press_ctrl_c(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_tiny(pairs, tiny_folders, tmp_path / "cut", steps=8, save_every=3,
               on_step=press_ctrl_c)
    ckpts = tmp_path / "cut" / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 4
    assert not (tmp_path / "cut" / "alignment.safetensors").exists()
    with pytest.raises(ConfigError, match="resume"):
        train_tiny(pairs, tiny_folders, tmp_path / "cut", steps=8)
    resumed = train_tiny(pairs, tiny_folders, tmp_path / "cut", steps=8, save_every=3, resume=True)
    np.testing.assert_allclose(_losses(tmp_path / "cut"), _losses(tmp_path / "full"),
                               rtol=1e-5, atol=1e-6)
    assert len(_losses(tmp_path / "cut")) == 8
    a = full.model.encode(["alpha beta"], instruction=INSTRUCTIONS[1])
    b = resumed.model.encode(["alpha beta"], instruction=INSTRUCTIONS[1])
    np.testing.assert_allclose(a, b, atol=1e-5)
    # only the newest checkpoints are kept; no temp folders are left behind
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["latest.json", "step-00000006", "step-00000008"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(pairs, tiny_folders, tmp_path,
                                                         monkeypatch):
    from pe_core.training import trainer

    real = trainer.contrastive_step

    def poisoned(method, rows, info, *args):
        if info.step == 2:  # the third step: a real NaN through the model
            with torch.no_grad():
                method.embedder.alignment.weight.fill_(float("nan"))
        return real(method, rows, info, *args)

    monkeypatch.setattr(trainer, "contrastive_step", poisoned)
    with pytest.raises(TrainingDivergedError, match="step 3") as info:
        train_tiny(pairs, tiny_folders, tmp_path / "run", steps=6, save_every=2)
    assert "step-00000002" in str(info.value)
    ckpts = tmp_path / "run" / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 2
    from safetensors.torch import load_file

    good = load_file(ckpts / "step-00000002" / "trainable.safetensors")
    assert all(torch.isfinite(t).all() for t in good.values())
    assert not (tmp_path / "run" / "alignment.safetensors").exists()


def test_checkpoint_latest_pointer_fallback(tmp_path):
    from pe_core.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from pe_core.training.schedule import make_scheduler

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = make_scheduler(opt, 1, 10)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    save_checkpoint(tmp_path, 1, {"p": p}, opt, sched)
    (tmp_path / ".step-00000002.crashed").mkdir()  # an interrupted write
    (tmp_path / "latest.json").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    q = torch.nn.Parameter(torch.zeros(3))
    opt2 = torch.optim.AdamW([q], lr=0.5)
    sched2 = make_scheduler(opt2, 1, 10)
    load_checkpoint(tmp_path / "step-00000001", {"p": q}, opt2, sched2)
    torch.testing.assert_close(q.detach(), p.detach())
    torch.testing.assert_close(opt2.state[q]["exp_avg"], opt.state[p]["exp_avg"])
    assert sched2.get_last_lr() == sched.get_last_lr()
