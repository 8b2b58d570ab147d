"""The divergence guard (issue 37): a collapse during training is rolled back to the best
state with a lower lr, recorded in the log and the saved config; off on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import pair_records, write_jsonl

import pe_core
from pe_core.training import trainer
from pe_core.training.guard import DivergenceGuard, chance_loss
from pe_core.training.schedule import make_scheduler, warmup_linear

pytestmark = pytest.mark.usefixtures("one_thread")
CHANCE = chance_loss(16)


def _guard(max_rollbacks: int = 3) -> tuple[DivergenceGuard, torch.nn.Module, Any]:
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    scheduler = make_scheduler(optimizer, 0, 100)
    guard = DivergenceGuard(dict(layer.named_parameters()), optimizer, scheduler, max_rollbacks)
    guard.start(0)
    return guard, layer, optimizer


def _feed(guard: DivergenceGuard, losses: list[float]) -> list[str | None]:
    return [guard.loss_sign(i + 1, loss, CHANCE) for i, loss in enumerate(losses)]


def test_a_loss_spike_above_chance_is_a_collapse_an_ordinary_harder_batch_is_not():
    guard, _, _ = _guard()
    # batches of an easy task, then a harder one: 3x the mean but below chance
    assert _feed(guard, [0.3] * 6 + [0.9]) == [None] * 7
    guard, _, _ = _guard()
    signs = _feed(guard, [1.0] * 6 + [9.0])
    assert signs[-1] is not None and "loss spike" in signs[-1]


def test_loss_back_at_chance_only_after_the_run_had_learnt():
    guard, _, _ = _guard()
    # a slow run that never left chance is not a collapse
    assert _feed(guard, [CHANCE * 0.99, CHANCE * 1.01] * 5) == [None] * 10
    guard, _, _ = _guard()
    signs = _feed(guard, [0.8] * 6 + [CHANCE] * 3)
    assert signs[:-1] == [None] * 8 and "back at chance" in signs[-1]


def test_rollback_restores_weights_and_optimizer_and_lowers_the_lr():
    guard, layer, optimizer = _guard()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    guard.scheduler.step()
    assert optimizer.state  # moments exist now; the snapshot had none
    event = guard.roll_back(7, "test")
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.detach(), before[name])
    assert not optimizer.state
    assert guard.scheduler.base_lrs == [5e-3]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * warmup_linear(0, 100)(1))
    assert event["to_step"] == 0 and event["rollback"] == 1 and guard.summary()["rollbacks"] == 1
    # the snapshot is kept intact for a second rollback
    with torch.no_grad():
        layer.weight.add_(1.0)
    guard.roll_back(8, "again")
    torch.testing.assert_close(layer.weight.detach(), before["weight"])


def test_the_untrained_start_is_no_best_to_hold():
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    guard = DivergenceGuard(dict(layer.named_parameters()), optimizer,
                            make_scheduler(optimizer, 0, 100))
    guard.start(0, {"ndcg@10": 0.18})
    # a dip below the start that recovers, as real backbones do early on
    assert [guard.dev_sign(s, {"ndcg@10": v}) for s, v in
            ((10, 0.08), (20, 0.11), (30, 0.2))] == [None, None, None]
    assert guard.at_end(40, {"ndcg@10": 0.21}) == ({"ndcg@10": 0.21}, None)


def test_dev_drop_rolls_back_to_the_best_dev_state_and_the_end_restores_it():
    guard, layer, _ = _guard(max_rollbacks=1)
    assert guard.dev_sign(2, {"ndcg@10": 0.5}) is None  # new best: the snapshot
    best = layer.weight.detach().clone()
    assert guard.dev_sign(4, {"ndcg@10": 0.45}) is None  # within 0.8x
    with torch.no_grad():
        layer.weight.mul_(-3)
    assert guard.dev_sign(6, {"ndcg@10": 0.2}) is None  # one low reading can recover
    assert guard.dev_sign(7, {"ndcg@10": 0.45}) is None  # it did: the count restarts
    assert guard.dev_sign(8, {"ndcg@10": 0.2}) is None
    reason = guard.dev_sign(9, {"ndcg@10": 0.2})
    assert reason is not None and "dev drop" in reason and "2 evaluations" in reason
    guard.roll_back(9, reason)
    assert guard.exhausted
    with torch.no_grad():
        layer.weight.mul_(-3)
    scores, event = guard.at_end(10, {"ndcg@10": 0.1})
    assert scores == {"ndcg@10": 0.5} and event is not None and event["restored_step"] == 2
    torch.testing.assert_close(layer.weight.detach(), best)
    assert guard.at_end(10, {"ndcg@10": 0.45}) == ({"ndcg@10": 0.45}, None)


# -- through pe train, on the tiny llama, with a real collapse ---------------------------
SPIKE_STEP = 6  # the 7th optimizer step runs at 1000x the lr


@pytest.fixture
def lr_spike(monkeypatch):
    """The scheduler's factor jumps 1000x for one step: the tiny run then collapses to
    chance (every text the same embedding), as real runs do after a bad step."""

    def spiking(optimizer, warmup, total):
        base = warmup_linear(warmup, total)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: base(s) * (1000.0 if s == SPIKE_STEP else 1.0))

    monkeypatch.setattr(trainer, "make_scheduler", spiking)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("guard-data")
    return {"train": write_jsonl(folder / "train.jsonl", pair_records(64)),
            "dev": write_jsonl(folder / "dev.jsonl", pair_records(24, seed=5))}


def _run(data, folders, out, **kw):
    opts = dict(steps=14, batch_size=8, lr=1e-3, progress=False)
    opts.update(kw)
    return pe_core.train(str(data["train"]), backbone="llama", model=str(folders["model"]),
                         prompting=str(folders["prompting"]), out=out, **opts)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").open()]


@pytest.mark.parametrize("dev", [True, False], ids=["dev-eval", "loss-only"])
def test_collapse_is_rolled_back_recorded_and_training_recovers(lr_spike, data, tiny_folders,
                                                                tmp_path, capsys, dev):
    extra = {"dev_data": str(data["dev"]), "eval_every": 2} if dev else {}
    _run(data, tiny_folders, tmp_path / "run", **extra)
    log = _log(tmp_path / "run")
    rollbacks = [r["rollback"] for r in log if "rollback" in r]
    assert len(rollbacks) == 1
    event = rollbacks[0]
    assert event["to_step"] <= SPIKE_STEP < event["step"]
    assert "chance" in event["reason"] or "spike" in event["reason"]
    assert "divergence guard" in capsys.readouterr().err
    losses = [r["loss"] for r in log if "loss" in r]
    chance = chance_loss(16)
    assert all(abs(x - chance) < 1e-3 for x in losses[SPIKE_STEP + 1:event["step"]])
    assert all(abs(x - chance) > 0.05 for x in losses[event["step"]:])  # it trains again
    config = json.loads((tmp_path / "run" / "pe_config.json").read_text())
    assert config["eval_results"]["guard"]["rollbacks"] == 1
    assert config["eval_results"]["guard"]["events"][0]["reason"] == event["reason"]
    pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                 alignment=str(tmp_path / "run"))  # the config with the record still loads


def test_guard_off_leaves_the_collapse_in_place(lr_spike, data, tiny_folders, tmp_path):
    _run(data, tiny_folders, tmp_path / "run", divergence_guard=False)
    log = _log(tmp_path / "run")
    assert not any("rollback" in r for r in log)
    assert abs(log[-1]["loss"] - chance_loss(16)) < 1e-3
    config = json.loads((tmp_path / "run" / "pe_config.json").read_text())
    assert "guard" not in config["eval_results"]


def test_cli_flag_turns_the_guard_off(lr_spike, data, tiny_folders, tmp_path):
    from pe_core.cli.main import main

    args = ["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
            "--prompting", str(tiny_folders["prompting"]), "--data", str(data["train"]),
            "--out", str(tmp_path / "run"), "--steps", "12", "--batch-size", "8",
            "--lr", "1e-3", "--no-progress", "--no-divergence-guard"]
    assert main(args) == 0
    settings = json.loads((tmp_path / "run" / "train_settings.json").read_text())
    assert settings["divergence_guard"] is False
    assert not any("rollback" in r for r in _log(tmp_path / "run"))


def test_rollbacks_are_bounded(monkeypatch, data, tiny_folders, tmp_path):
    """An lr that spikes on every other step keeps collapsing the run: the guard stops
    after its limit and says so in the log."""

    def spiking(optimizer, warmup, total):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 1000.0 if s >= SPIKE_STEP and s % 2 == 0 else 1.0)

    monkeypatch.setattr(trainer, "make_scheduler", spiking)
    _run(data, tiny_folders, tmp_path / "run", steps=40, guard_rollbacks=1,
         guard_lr_factor=0.9)
    log = _log(tmp_path / "run")
    assert sum("rollback" in r for r in log) == 1
    assert any(r.get("guard") == "no rollbacks left" for r in log)
