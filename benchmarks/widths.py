"""Smaller embeddings: the retrieval score at each Matryoshka width, for a run trained
with ``--matryoshka-dims`` and one without, and at each precision of
sentence-transformers' ``quantize_embeddings`` (float32, int8, uint8, binary, ubinary),
with and without rescoring.

Both runs are ``pe train`` on the same data, steps and seed (suffix placement); only
``matryoshka_dims`` differs. The score is nDCG@10 on the local corpus's test split
(PELocalDocstringRetrieval: a one-line summary retrieves its documentation): queries with
that task's instruction, documents with the model's document instruction, as
``pe eval`` scores it.

* **Widths**: the first ``w`` dimensions, re-normalised (``encode(truncate_dim=w)``).
* **Precisions**: int8/uint8 buckets calibrated on the corpus's vectors and applied to
  both sides (``quantize_embeddings(..., ranges=...)``); int8 scored by inner product,
  uint8 by L2 distance (its buckets are not centred on zero), binary/ubinary by Hamming
  distance. *Rescored*: the top ``--rescore`` x 10 documents of the quantized search are
  re-ranked by the float32 query against the documents read back from their stored form
  (the bucket centres for int8/uint8, +/-1 per bit for binary), the rescoring
  sentence-transformers' ``semantic_search_*`` does with ``rescore=True``.

    python -m benchmarks.widths --name toy                  # the toy llama, 150 steps each
    python -m benchmarks.widths --quick --json /tmp/w.json  # a smoke run

The record goes to ``benchmarks/results/widths/``; ``python -m benchmarks.render`` draws
its tables and the score-per-width plot. ``benchmarks/quality.py --widths D,D,...`` runs
the same comparison inside a quality run. Not a test: toy, about 5 minutes (1 thread).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# the benchmarks package is imported inside the functions that need it, so that
# benchmarks/quality.py (run as a script) can import this module for its --widths
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
PLAIN, NESTED = "without Matryoshka", "with Matryoshka"
TOP = 10


def main(argv: list[str] | None = None) -> None:
    from benchmarks import harness
    from benchmarks.tiers import TOY_PROMPTING

    p = harness.parser(__doc__, threads=None)
    p.add_argument("--backbone", default="llama:pe-default:llama", help="family:model trained")
    p.add_argument("--prompting", default=TOY_PROMPTING)
    p.add_argument("--dims", default="32,64,128",
                   help="--matryoshka-dims of the Matryoshka run (the full width is added)")
    p.add_argument("--widths", default="16,32,64,128",
                   help="widths scored besides the full one")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--rescore", type=int, default=4,
                   help="rescoring re-ranks the top RESCORE x 10 of the quantized search")
    p.add_argument("--limit", type=int, help="test queries scored (default: all)")
    p.add_argument("--work", help="keep the runs here (default: a temp folder)")
    args = harness.parse(p, argv, quick={"steps": 3, "batch_size": 8, "max_length": 32,
                                         "limit": 40})
    harness.run("widths", args, measure, argv)


def ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def measure(args: argparse.Namespace) -> dict:
    """Train both runs, then score them."""
    import pe_core
    from benchmarks.tiers import parse_ref
    from pe_core.data.corpus import write_training_jsonl

    work = Path(args.work or tempfile.mkdtemp(prefix="pe-widths-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "train.jsonl"
    write_training_jsonl(data, split="train")
    backbone, model = parse_ref(args.backbone)
    models = {}
    for label, dims in ((PLAIN, ()), (NESTED, tuple(ints(args.dims)))):
        print(f"== {label} ({args.steps} steps)", flush=True)
        run = pe_core.train(
            data, backbone=backbone, model=model, prompting=args.prompting,
            out=work / ("nested" if dims else "plain"), steps=args.steps,
            batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
            matryoshka_dims=dims, overwrite=True, device="cpu", save_every=10**9,
            progress=False)
        models[label] = run.model
    return compare(models, ints(args.widths), args.rescore, args.limit, dims=ints(args.dims))


def in_quality(bench: Any, args: argparse.Namespace) -> dict:
    """``python -m benchmarks.quality --widths D,D,...``: its first backbone and Prompting
    LLM trained twice more (suffix, ``--steps``), without and with ``matryoshka_dims``,
    on its data; returns the results for quality's record (its ``widths`` key)."""
    dims = ints(args.widths)
    models = {}
    for label, these in ((PLAIN, ()), (NESTED, tuple(dims))):
        models[label], _ = bench.train(f"{label}, suffix", args.backbones[0], args.prompting[0],
                                       "widths-" + ("nested" if these else "plain"),
                                       steps=args.steps, placement="suffix", pooling="last",
                                       matryoshka_dims=these)
    return compare(models, sorted({d // 2 for d in dims} | set(dims)), rescore=4, dims=dims)


def compare(models: dict[str, Any], widths: list[int], rescore: int,
            limit: int | None = None, dims: list[int] | None = None) -> dict:
    """The record's results for ``models`` (label -> embedder): the score per width of
    each, and per precision."""
    texts = test_texts(limit)
    out: dict[str, Any] = {"task": "PELocalDocstringRetrieval (test)", "metric": "ndcg@10",
                           "matryoshka_dims": dims, "queries": len(texts["queries"]),
                           "documents": len(texts["docs"]), "by_width": {}, "by_precision": {}}
    for label, model in models.items():
        q, d = embed(model, texts)
        full = q.shape[1]
        out["by_width"][label] = {str(w): ndcg(scores_float(q, d, w), texts["gold"])
                                  for w in sorted({*widths, full}) if w <= full}
        out["by_precision"][label] = precision_scores(q, d, texts["gold"], rescore)
    return out


def test_texts(limit: int | None) -> dict[str, Any]:
    """Queries, distinct documents and each query's document index (the test split)."""
    from pe_core.data import load_pairs

    pairs = load_pairs("test")[:limit] if limit else load_pairs("test")
    docs = list(dict.fromkeys(p.document for p in pairs))
    index = {text: i for i, text in enumerate(docs)}
    return {"queries": [p.query for p in pairs], "docs": docs,
            "gold": np.array([index[p.document] for p in pairs])}


def embed(model: Any, texts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from pe_core.eval.instructions import TASK_INSTRUCTIONS

    instruction = TASK_INSTRUCTIONS["PELocalDocstringRetrieval"]
    return (model.encode(texts["queries"], instruction=instruction, batch_size=64),
            model.encode(texts["docs"], batch_size=64))


def prefix(x: np.ndarray, width: int) -> np.ndarray:
    """What ``encode(truncate_dim=width)`` returns: the first dimensions, re-normalised."""
    cut = x[:, :width]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def scores_float(q: np.ndarray, d: np.ndarray, width: int) -> np.ndarray:
    return prefix(q, width) @ prefix(d, width).T


def ndcg(scores: np.ndarray, gold: np.ndarray, k: int = TOP) -> float:
    """nDCG@k with one relevant document per query: 1/log2(rank + 2) inside the top k."""
    own = scores[np.arange(len(gold)), gold]
    rank = (scores > own[:, None]).sum(axis=1)  # ties count in the query's favour
    return round(float(np.where(rank < k, 1 / np.log2(rank + 2), 0.0).mean()), 4)


def precision_scores(q: np.ndarray, d: np.ndarray, gold: np.ndarray,
                     rescore: int) -> dict[str, dict[str, Any]]:
    from sentence_transformers.util import quantize_embeddings

    # int8/uint8 buckets from the corpus, shared by queries and documents
    ranges = np.stack([d.min(axis=0), d.max(axis=0)])
    rows: dict[str, dict[str, Any]] = {}
    for precision in PRECISIONS:
        qq, dq = (np.asarray(quantize_embeddings(x, precision, ranges=ranges))
                  for x in (q, d))
        first = search_scores(qq, dq, precision)
        row = {"bytes": int(dq[0].nbytes), "ndcg@10": ndcg(first, gold)}
        if precision != "float32":
            docs = rebuilt(dq, precision, ranges, q.shape[1])
            row["rescored"] = ndcg(rescored(first, q @ docs.T, rescore * TOP), gold)
        rows[precision] = row
    return rows


def search_scores(qq: np.ndarray, dq: np.ndarray, precision: str) -> np.ndarray:
    """Higher is closer, as each precision's index would rank."""
    if precision in ("binary", "ubinary"):
        qb, db = bits(qq, precision), bits(dq, precision)
        return -(qb[:, None, :] != db[None, :, :]).sum(axis=2).astype(np.float32)
    qf, df = qq.astype(np.float32), dq.astype(np.float32)
    if precision == "uint8":
        return -((qf * qf).sum(1)[:, None] - 2 * qf @ df.T + (df * df).sum(1)[None, :])
    return qf @ df.T


def bits(x: np.ndarray, precision: str) -> np.ndarray:
    """One 0/1 per dimension: ``binary`` stores the packed bytes minus 128 as int8."""
    packed = (x.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else x
    return np.unpackbits(packed, axis=1)


def rebuilt(dq: np.ndarray, precision: str, ranges: np.ndarray, width: int) -> np.ndarray:
    """The documents as rescoring reads them back from their stored form: each bucket's
    centre (int8/uint8, from the calibration ranges), +/-1 per bit (binary)."""
    if precision in ("binary", "ubinary"):
        return bits(dq, precision)[:, :width] * 2.0 - 1.0
    index = dq.astype(np.float32) + (128 if precision == "int8" else 0)
    step = (ranges[1] - ranges[0]) / 255
    return ranges[0] + (index + 0.5) * step


def rescored(first: np.ndarray, exact: np.ndarray, keep: int) -> np.ndarray:
    """``first``'s top ``keep`` per query re-ranked by ``exact`` (the float query against
    the rebuilt documents); the rest stay below them."""
    top = np.argsort(-first, axis=1)[:, :keep]
    out = np.full_like(exact, -np.inf)
    rows = np.arange(len(exact))[:, None]
    out[rows, top] = exact[rows, top]
    return out


# -- render hooks ----------------------------------------------------------------------
def markdown(results: dict, args: dict) -> str:
    """Two tables: nDCG@10 per width (both runs), and per precision."""
    runs = list(results["by_width"])
    widths = sorted({int(w) for r in runs for w in results["by_width"][r]})
    full = max(widths)
    lines = [f"{results['task']}, {results['metric']}; {results['queries']} queries, "
             f"{results['documents']} documents; Matryoshka run trained with widths "
             f"{results['matryoshka_dims']} (+{full}).", "",
             "| width | " + " | ".join(runs) + " |", "|---:|" + "---:|" * len(runs)]
    for w in widths:
        cells = []
        for r in runs:
            score = results["by_width"][r].get(str(w))
            base = results["by_width"][r][str(full)]
            cells.append("–" if score is None else f"{score:.4f} ({score / base:.0%})")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines += ["", "| precision | bytes | " + " | ".join(
        f"{r} | {r}, rescored" for r in runs) + " |",
        "|---|---:|" + "---:|---:|" * len(runs)]
    for precision in PRECISIONS:
        first = results["by_precision"][runs[0]][precision]
        cells = []
        for r in runs:
            row = results["by_precision"][r][precision]
            cells += [f"{row['ndcg@10']:.4f}",
                      f"{row['rescored']:.4f}" if "rescored" in row else "–"]
        lines.append(f"| {precision} | {first['bytes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(results: dict, args: dict) -> Any:
    """For ``python -m benchmarks.render``: nDCG@10 against width, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for run, scores in results["by_width"].items():
        widths = sorted(int(w) for w in scores)
        ax.plot(widths, [scores[str(w)] for w in widths], marker="o", label=run)
    for d in results.get("matryoshka_dims") or []:
        ax.axvline(d, color="#bbbbbb", linewidth=0.8, linestyle=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("embedding width (first dimensions, re-normalised)")
    ax.set_ylabel(results["metric"])
    ax.set_title(f"score per width ({results['task']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "untrained alignment" before training
        main()
