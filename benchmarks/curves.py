"""Dev-score curves read from a run's ``log.jsonl``, and the readings taken from them:
when a curve first reaches a score, what it scored by a given training time, and a
score-vs-time plot.

Time is training time (the sum of step times, evaluations excluded), so two runs read at
the same seconds had the same compute, whatever their evaluations cost.

Example::

    >>> from benchmarks.curves import read_curve, score_at
    >>> run = read_curve(Path("runs/pe/log.jsonl"))   # doctest: +SKIP
    >>> score_at(run["curve"], 120.0)                 # doctest: +SKIP
    0.31
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import BinaryIO


def read_curve(log: Path, last: int = 3) -> dict:
    """A run's dev curve ``[(step, train seconds, score)]``, final score (mean of the last
    ``last`` evaluations: one small dev set's score is noisy), total time, ms/step."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "dev_score" in r]
    steps = [r for r in records if "loss" in r]
    total = steps[-1]["train_time_s"] if steps else 0.0
    tail = evals[-last:]
    return {
        "start": evals[0]["dev_score"] if evals else None,
        "final": sum(r["dev_score"] for r in tail) / len(tail) if tail else None,
        "steps": len(steps),
        "total_s": total, "ms_per_step": 1000 * total / len(steps) if steps else 0.0,
        "curve": [(r["step"], round(r["train_time_s"], 2), round(r["dev_score"], 4))
                  for r in evals],
    }


def first_reach(curve: list, score: float) -> tuple[int, float] | None:
    """(step, seconds) of the first evaluation at or above ``score``; None if never."""
    return next(((st, t) for st, t, v in curve if v >= score), None)


def score_at(curve: list, seconds: float) -> float | None:
    """The score of the last evaluation made within ``seconds`` of training (what the run
    had to show for that much time); None if the curve is empty."""
    done = [v for _, t, v in curve if t <= seconds + 1e-9]
    return done[-1] if done else None


def plot_curves(panels: dict[str, dict[str, list]], path: Path | BinaryIO, title: str,
                log_x: bool = False, marks: dict[str, float] | None = None) -> None:
    """One panel per key of ``panels`` (a backbone), one line per run: dev score against
    training seconds; ``marks`` are labelled horizontal lines (target scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], panels.items(), strict=True):
        for label, curve in lines.items():
            style = "--" if label.startswith("LoRA") else ":" if "align" in label else "-"
            ax.plot([c[1] for c in curve], [c[2] for c in curve], style, marker=".",
                    label=label)
        for (label, y), style in zip((marks or {}).items(), (":", "--", "-."), strict=False):
            ax.axhline(y, color="#888888", linestyle=style, linewidth=1, label=label)
        if log_x:  # LoRA takes many times longer than the others
            ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("training time (s, evaluations excluded)")
        ax.set_ylabel("dev nDCG@10")
        ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=7)
    # wrapped to the figure's width: one long line is cut off at both edges
    fig.suptitle(textwrap.fill(title, width=int(80 * len(panels))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
