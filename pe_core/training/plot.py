"""``pe plot runs/x``: the loss curve (and dev score, when logged) as a PNG."""

from __future__ import annotations

from pathlib import Path

from pe_core.errors import DataError, MissingFileError
from pe_core.extras import require_extra
from pe_core.training.metrics_log import LOG_NAME, read_log
from pe_core.validate import output_file


def plot_run(run: str | Path, output: str | Path | None = None) -> Path:
    """Draw ``run/log.jsonl`` to ``output`` (default ``run/loss.png``); returns the path.

    Example::

        plot_run("runs/llama")  # -> runs/llama/loss.png
    """
    require_extra(["matplotlib"], "pe-core[train]", "pe plot")
    run = Path(run)
    log = run / LOG_NAME if run.is_dir() else run
    if not log.is_file():
        raise MissingFileError(f"{log} not found: is {run} a pe training run?")
    out = output_file(Path(output) if output else (log.parent / "loss.png"), "plot")
    records = read_log(log)
    steps = [r for r in records if "loss" in r and "step" in r]
    evals = [r for r in records if "dev_score" in r and "step" in r]
    if not steps:
        raise DataError(f"{log} holds no loss records yet")
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs, ys = [r["step"] for r in steps], [r["loss"] for r in steps]
    ax.plot(xs, ys, lw=0.8, alpha=0.4 if len(ys) > 20 else 1.0, label="loss")
    if len(ys) > 20:  # per-batch losses are noisy: overlay a moving average
        ax.plot(xs, _ema(ys, 2.0 / (1 + max(5, len(ys) // 20))), lw=1.6, color="tab:blue",
                label="loss (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.grid(alpha=0.3)
    if evals:
        dev = ax.twinx()
        dev.plot([r["step"] for r in evals], [r["dev_score"] for r in evals], "o-",
                 color="tab:orange", label="dev nDCG@10")
        dev.set_ylabel("dev nDCG@10")
    if evals or len(ys) > 20:
        fig.legend(loc="upper right")
    ax.set_title(run.name if run.is_dir() else log.stem)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _ema(values: list[float], alpha: float) -> list[float]:
    out, acc = [], values[0]
    for v in values:
        acc = alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out
