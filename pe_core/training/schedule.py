"""Schedules: linear warmup then linear decay of the learning rate, and the Gumbel-softmax
temperature annealed from ``tau_start`` to ``tau_end``."""

from __future__ import annotations

import math
from typing import Any


def warmup_linear(warmup_steps: int, total_steps: int, floor: float = 0.0) -> Any:
    """``step -> lr factor``: 0 -> 1 over ``warmup_steps``, then 1 -> ``floor`` at the end.

    Example::

        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(10, 100))
    """
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        done = min(1.0, (step - warmup_steps) / span)
        return floor + (1.0 - floor) * (1.0 - done)

    return factor


def run_steps(steps: int | None, epochs: float, per_epoch: int) -> int:
    """Optimizer steps of a run: ``steps`` when given, else ``epochs`` passes of
    ``per_epoch`` batches (at least one)."""
    return steps or max(1, math.ceil(epochs * per_epoch))


def warmup_count(warmup: float, total_steps: int) -> int:
    """Warmup steps: ``warmup`` below 1 is a fraction of the run, else a step count."""
    return int(warmup * total_steps) if warmup < 1 else int(warmup)


def make_scheduler(optimizer: Any, warmup_steps: int, total_steps: int) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(warmup_steps, total_steps))


def gumbel_tau(step: int, start: float, end: float, anneal_steps: int) -> float:
    """Exponential annealing ``start -> end`` over ``anneal_steps``, then constant.

    Example::

        gumbel_tau(50, 1.0, 0.5, 100)  # ~0.707
    """
    if anneal_steps <= 0 or start == end:
        return end
    frac = min(1.0, max(0.0, step / anneal_steps))
    return start * math.exp(frac * math.log(end / start))
