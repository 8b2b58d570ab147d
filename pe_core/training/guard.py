"""The divergence guard: notice a collapse while training, go back to the best state seen,
lower the learning rate and go on (as large-LM training does after a loss spike).

Short contrastive runs on the real backbones fall apart on some seeds (docs/known-gaps.md):
the dev score falls to chance and never recovers, or the loss jumps to several
times its running mean. The guard watches three signs:

* **dev drop** (when dev evaluation runs during training): the dev score is below
  ``DEV_DROP`` x the best score *training reached* at ``DEV_PATIENCE`` evaluations in a
  row. ``DEV_DROP`` is the collapse criterion of ``benchmarks/stability.py``. The score
  before the first step does not count as a best: a real backbone's dev score often dips
  below its untrained start and then climbs past it, and a rollback to the start with a
  lower lr discards what was learnt (measured, below);
* **loss spike**: the step's loss is above ``SPIKE`` x its running mean *and* above
  chance (``ln`` of the candidates each query is scored against: a model that ranks
  positives below a random guess). Both, because batches come one task at a time and an
  easy task's low loss makes an ordinary harder batch look like a multiple of the mean;
* **back at chance**: ``AT_CHANCE`` steps in a row each within ``CHANCE_TOL`` of chance,
  after the smoothed loss had been clearly below it: every text got nearly the same
  embedding (a collapsed run's loss sits at ``ln(candidates)`` to the fourth decimal;
  a run that is merely slow moves around it).

On any of them it restores the best snapshot (weights and optimizer moments, kept in
memory), multiplies every group's learning rate by ``guard_lr_factor`` from this step on,
and continues; the step counter is not rewound, so the batches after the snapshot are
skipped rather than replayed and the run still ends at its planned step. At most
``guard_rollbacks`` rollbacks; after that it only watches. At the end of a run with dev
evaluation, a final score below ``DEV_DROP`` x the best restores the best state, so the
saved model is never the collapsed one. Every event is a ``log.jsonl`` record and is
summarised under ``eval_results["guard"]`` in the saved config.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch

DEV_DROP = 0.8
# two readings, not one, and only against trained scores: SmolLM2-135M with the toy
# Prompting LLM (40 steps of batch 8, dev every 10), seed 1: dev fell from its untrained
# 0.178 to 0.080 at step 10 and, left alone, climbed to 0.539 by step 40; rolled back to
# the start at that reading (lr halved) it ended at 0.150. Seed 3: 0.178 -> 0.077 ->
# 0.114, rolled back to the start at step 20 it ended at 0.215, left alone at 0.379
# (benchmarks/results/stability/)
DEV_PATIENCE = 2
SPIKE = 2.0
CHANCE_TOL = 0.03
# "clearly below chance": the run had learnt something before it came back to chance
LEARNT = 0.9
EMA = 0.8  # smoothing of the loss: ~5 steps, the span over which a collapse shows
WARM = 5  # steps before the running mean is trusted
AT_CHANCE = 3
SNAPSHOT_GAP = 5  # without dev scores, copy the state at most this often


@dataclass
class _Snapshot:
    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    dev: dict[str, float] = field(default_factory=dict)


class DivergenceGuard:
    """Watches one run's losses and dev scores; rolls back on a collapse.

    ``params`` are the trainable parameters by name, ``optimizer`` and ``scheduler`` the
    run's own (the scheduler must be a ``LambdaLR``: its base lrs are what is lowered).

    Example::

        guard = DivergenceGuard(params, optimizer, scheduler, max_rollbacks=3)
        guard.start(step=0)
        reason = guard.loss_sign(step, loss, chance)
        if reason:
            event = guard.roll_back(step, reason)
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], optimizer: Any, scheduler: Any,
                 max_rollbacks: int = 3, lr_factor: float = 0.5, rollbacks: int = 0) -> None:
        self.params = params
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.max_rollbacks = max_rollbacks
        self.lr_factor = lr_factor
        self.events: list[dict[str, Any]] = []
        self.done = rollbacks  # rollbacks of earlier sessions of a resumed run
        self.best: _Snapshot | None = None
        self.best_dev = -math.inf
        self.best_loss = math.inf
        self.ema: float | None = None
        self.seen = 0
        self.at_chance = 0
        self.low_devs = 0

    # -- snapshots ---------------------------------------------------------------------
    def _snapshot(self, step: int, dev: dict[str, float] | None = None) -> None:
        self.best = _Snapshot(
            step, {n: p.detach().clone() for n, p in self.params.items()},
            copy.deepcopy(self.optimizer.state_dict()), dict(dev or {}),
        )

    def start(self, step: int, dev: dict[str, float] | None = None) -> None:
        """The state training starts from is the first snapshot (what a loss sign
        before any better state rolls back to); its dev score is no best to hold."""
        self._snapshot(step, dev)

    def _restore(self) -> _Snapshot:
        assert self.best is not None
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.best.params[name])
        # a copy, so that a second rollback finds the snapshot untouched
        self.optimizer.load_state_dict(copy.deepcopy(self.best.optimizer))
        return self.best

    # -- signs ---------------------------------------------------------------------------
    def loss_sign(self, step: int, loss: float, chance: float) -> str | None:
        """Why the loss of step ``step`` (1-based) says the run collapsed, or None. Also
        keeps the loss-based snapshot when no dev score is watched."""
        spiked = (self.ema is not None and self.seen >= WARM and loss > SPIKE * self.ema
                  and loss > chance)
        if spiked:
            return f"loss spike: {loss:.4g} > {SPIKE:g} x running mean {self.ema:.4g}"
        self.ema = loss if self.ema is None else EMA * self.ema + (1 - EMA) * loss
        self.seen += 1
        if self.seen < WARM:
            return None
        self.best_loss = min(self.best_loss, self.ema)
        self.at_chance = self.at_chance + 1 if abs(loss - chance) < CHANCE_TOL * chance else 0
        if self.best_loss < LEARNT * chance and self.at_chance >= AT_CHANCE:
            return (f"loss back at chance: {self.at_chance} steps at {loss:.4g} (chance "
                    f"{chance:.4g}; the running mean had reached {self.best_loss:.4g})")
        return None

    def keep_if_best_loss(self, step: int) -> None:
        """Without dev scores: snapshot when the smoothed loss is at a new low."""
        assert self.best is not None
        if (self.seen >= WARM and self.ema is not None and self.ema <= self.best_loss
                and step - self.best.step >= SNAPSHOT_GAP):
            self._snapshot(step)

    def dev_sign(self, step: int, dev: dict[str, float]) -> str | None:
        """Why the dev score at ``step`` says the run collapsed, or None; a new best
        score is the new snapshot."""
        score = _main(dev)
        if score > self.best_dev:
            self.best_dev = score
            self._snapshot(step, dev)
        self.low_devs = self.low_devs + 1 if score < DEV_DROP * self.best_dev else 0
        if self.low_devs >= DEV_PATIENCE:
            return (f"dev drop: {score:.4f} < {DEV_DROP:g} x best {self.best_dev:.4f} "
                    f"(step {self.best.step if self.best else 0}) at {self.low_devs} "
                    "evaluations in a row")
        return None

    # -- actions -------------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return self.done >= self.max_rollbacks

    def roll_back(self, step: int, reason: str) -> dict[str, Any]:
        """Restore the best snapshot and lower every group's lr from here on; returns
        the event (also kept in :attr:`events`)."""
        snap = self._restore()
        for i, group in enumerate(self.optimizer.param_groups):
            self.scheduler.base_lrs[i] *= self.lr_factor
            group["initial_lr"] = self.scheduler.base_lrs[i]
            group["lr"] = self.scheduler.base_lrs[i] * self.scheduler.lr_lambdas[i](
                self.scheduler.last_epoch)
        self.done += 1
        # the smoothed loss restarts from what the restored weights will produce
        self.ema, self.seen, self.at_chance, self.low_devs = None, 0, 0, 0
        event = {"step": step, "reason": reason, "to_step": snap.step,
                 "lr_factor": self.lr_factor, "rollback": self.done,
                 "lr": [g["lr"] for g in self.optimizer.param_groups]}
        self.events.append(event)
        return event

    def at_end(self, step: int, dev: dict[str, float]) -> tuple[dict[str, float],
                                                                 dict[str, Any] | None]:
        """A final dev score below ``DEV_DROP`` x the best restores the best state (the
        saved model is then the best one); returns the scores that now hold and the
        event, if any."""
        if not dev or self.best is None or not self.best.dev or self.best_dev == -math.inf:
            return dev, None
        if _main(dev) >= DEV_DROP * self.best_dev:
            return dev, None
        snap = self._restore()
        event = {"step": step, "reason": f"final dev {_main(dev):.4f} < {DEV_DROP:g} x best "
                 f"{self.best_dev:.4f}", "restored_step": snap.step, "final_dev": dev}
        self.events.append(event)
        return dict(snap.dev), event

    def summary(self) -> dict[str, Any]:
        return {"rollbacks": self.done, "max_rollbacks": self.max_rollbacks,
                "events": self.events}


def chance_loss(candidates: int) -> float:
    """InfoNCE's loss when every candidate scores the same: ``ln(candidates)``."""
    return math.log(max(2, candidates))


def _main(dev: dict[str, float]) -> float:
    from pe_core.training.dev_eval import MAIN_SCORE

    return float(dev[MAIN_SCORE])
