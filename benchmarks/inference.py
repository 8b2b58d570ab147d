"""Inference throughput: torch eager vs ONNX fp32 vs ONNX int8 (and the CUDA provider).

Records (and prints as a markdown table) texts/s at batch 1 and 32, the soft prompt's
cost against the plain backbone, the int8 graph's retrieval score against fp32, and how
often the Prompting LLM runs per batch (never: its soft prompt is cached / baked in).

The default model is CPU-sized and random (hidden 256, 4 layers, 8 heads / 4 KV heads,
the training benchmark's size), so the numbers do not depend on a trained model existing;
``--model`` / ``--prompting`` / ``--alignment`` measure a real one instead. Retrieval
uses the local corpus' test pairs (``pe_core.data``): queries get the instruction,
documents the config's document instruction, one graph each.

On a shared machine wall-clock times swing with other load: ``--threads 1 --clock cpu``
times process CPU time instead (one thread: no spinning workers), and every runtime is
timed once per round, in turn, for ``--repeats`` rounds (median), so a load change hits
all rows alike. ``--optimum`` adds optimum's ``ORTOptimizer`` (level 2) applied to the
``--no-optimize`` graph, when optimum-onnx is installed.

Rows: "ONNX fp32/int8" is what ``pe export onnx [--int8]`` writes by default (fused for
onnxruntime, last layer for the pooled row only: :mod:`pe_registry.onnx_optimize`);
"fused, full last layer" the same without the pooled-row rewrite (what that rewrite is
worth: it saves ~1/num_layers of the work, a quarter on this 4-layer model, 3-4 % on a
24-32-layer one); ``--no-optimize`` the plain exported graph. onnxruntime flushes
denormals on the calling thread from its first session on, so torch runs that way too;
"torch eager, denormals kept" turns that off for torch (no systematic difference).

Results: ``benchmarks/results/inference/`` (rendered on the docs' benchmark record pages).

Example::

    python -m benchmarks.inference                      # ~5 min on 2 CPU cores
    python -m benchmarks.inference --backbone llama --model pe-real:smollm2-135m \
        --graphs default --texts 64 --texts-b1 16 --pairs 128 --repeats 3 \
        --score-length 128 --threads 1 --clock cpu      # ~15 min
    python -m benchmarks.inference --threads 1 --clock cpu --name toy
    python -m benchmarks.inference --backbone qwen --model Qwen/Qwen2.5-0.5B
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

QUERY_INSTRUCTION = "Retrieve the documentation that matches the summary"
CPU_MODEL = dict(
    hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
    num_key_value_heads=4, max_position_embeddings=1024,
)


def log(msg: str) -> None:
    print(f"[inference] {msg}", file=sys.stderr, flush=True)


# -- the model ---------------------------------------------------------------------------
def random_embedder(backbone: str, model_type: str | None, seed: int = 0) -> Any:
    """A CPU-sized random backbone with a tiny Prompting LLM; the alignment is scaled so
    soft vectors have the spread of real token embeddings (a random Prompting LLM's are
    near 0, which would make the soft prompt look free)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from pe_core.loading import build_embedder
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_prompting, tiny_tokenizer

    spec = get_backbone(backbone)
    model_type = model_type or spec.model_types[0]
    tokenizer = tiny_tokenizer(1024)
    extra = dict(head_dim=32) if backbone == "gemma" else {}
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        **CPU_MODEL, **extra,
    )
    if spec.attn_implementation:
        config._attn_implementation = spec.attn_implementation
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no trained alignment": intended here
        embedder = build_embedder(
            spec, model, tokenizer, tiny_prompting(tokenizer, hidden=64), tiny_tokenizer(1024)
        )
    soft = embedder.soft_prompts([QUERY_INSTRUCTION])[0].detach()
    with torch.no_grad():
        embedder.alignment.weight.mul_(embedder.backbone.embedding_table.std() / soft.std())
    embedder.clear_prompt_cache()
    return embedder


def load_embedder(args: argparse.Namespace) -> Any:
    if args.model is None and args.alignment is None:
        log(f"building a random CPU-sized {args.backbone} ({CPU_MODEL})")
        return random_embedder(args.backbone, args.model_type)
    import pe_core

    log(f"loading {args.backbone} model={args.model} alignment={args.alignment}")
    return pe_core.load(
        backbone=args.backbone, model=args.model, prompting=args.prompting,
        alignment=args.alignment, device="cpu", dtype="float32",
        allow_untrained=True,  # speed, not quality: an untrained alignment times the same
    )


# -- data ----------------------------------------------------------------------------------
def corpus_pairs(limit: int) -> tuple[list[str], list[str]]:
    """(queries, documents) from the local corpus' test split; synthetic if unavailable."""
    try:
        from pe_core.data import load_pairs

        pairs = load_pairs("test")[:limit]
        if pairs:
            return [p.query for p in pairs], [p.document for p in pairs]
    except Exception as exc:  # the corpus is built from this machine's text: may be absent
        log(f"no local corpus ({exc}); using synthetic pairs")
    rng = np.random.default_rng(0)
    words = "file open read write sum number parse argument return value class object".split()
    docs = [" ".join(rng.choice(words, 40)) for _ in range(limit)]
    return [" ".join(d.split()[:6]) for d in docs], docs


def long_texts(tokenizer: Any, docs: Sequence[str], n: int, seq: int) -> list[str]:
    """``n`` texts of at least ``seq`` tokens (documents glued together), so every
    batch is exactly ``seq`` long after truncation: throughput at a known length."""
    out, i = [], 0
    while len(out) < n:
        text = ""
        while len(tokenizer(text)["input_ids"]) < seq:
            text += docs[i % len(docs)] + " "
            i += 1
        out.append(text)
    return out


# -- timing --------------------------------------------------------------------------------
def interleaved_throughput(runners: dict[str, Callable[[list[str], int], Any]],
                           texts: list[str], batch: int, repeats: int,
                           clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Texts/s of every ``fn(texts, batch)``: one warm-up run each, then ``repeats``
    rounds that time every runner once in turn; the median per runner. Interleaving puts
    a load change on a shared machine into every runner's rounds alike, instead of into
    whichever runner happened to be timed then."""
    for fn in runners.values():
        fn(texts[:batch], batch)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            start = clock()
            fn(texts, batch)
            times[name].append(clock() - start)
    return {name: len(texts) / statistics.median(t) for name, t in times.items()}


@contextmanager
def count_calls(module: Any) -> Any:
    """Count forward calls of ``module`` inside the block: ``with count_calls(m) as n``."""
    calls = [0]
    handle = module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


# -- retrieval score -------------------------------------------------------------------------
def paired_rank(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """0-based rank of document i among all documents for query i."""
    scores = queries @ docs.T
    return (scores > scores[np.arange(len(scores)), np.arange(len(scores))][:, None]).sum(1)


def retrieval_scores(queries: np.ndarray, docs: np.ndarray) -> tuple[float, float]:
    """(MRR@10, nDCG@10) of the paired document (query i <-> document i, the only
    relevant one)."""
    rank = paired_rank(queries, docs)
    top = rank < 10
    return (float(np.where(top, 1.0 / (rank + 1), 0.0).mean()),
            float(np.where(top, 1.0 / np.log2(rank + 2), 0.0).mean()))


# -- main ------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = harness.parser(__doc__.split("\n\n")[0], threads=os.cpu_count())
    p.add_argument("--backbone", default="llama")
    p.add_argument("--model-type", help="transformers model_type of the random model")
    p.add_argument("--model", help="a real backbone (folder or Hub id) instead of random")
    p.add_argument("--prompting", help="Prompting LLM for --model")
    p.add_argument("--alignment", help="alignment for --model")
    p.add_argument("--instruction", default=QUERY_INSTRUCTION,
                   help="the query instruction (a trained run scores best with the one it "
                        "was trained on: pe's local training data uses \"Given a one-line "
                        "summary, retrieve the documentation that it summarizes\")")
    p.add_argument("--seq", type=int, default=128, help="tokens per text")
    p.add_argument("--texts", type=int, default=256, help="texts per timed run at batch 32")
    p.add_argument("--texts-b1", type=int, default=48, help="texts per timed run at batch 1")
    p.add_argument("--pairs", type=int, default=346, help="query/document pairs for the score")
    p.add_argument("--score-length", type=int,
                   help="truncate the scored texts to this many tokens (default: the "
                   "config's max_length; long documents cost minutes on a real model)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock, or process CPU time (use with --threads 1)")
    p.add_argument("--graphs", choices=("all", "default"), default="all",
                   help="all: the default export plus the ablations (full last layer, "
                   "--no-optimize, plain backbone); default: only what `pe export onnx "
                   "[--int8]` writes (for real models, where each export takes minutes)")
    p.add_argument("--optimum", action="store_true",
                   help="also time optimum's ORTOptimizer on the fp32 graph (if installed)")
    p.add_argument("--out", help="keep the exported graphs here (default: a temp folder)")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return harness.parse(parser(), argv, quick={"seq": 16, "texts": 8, "texts_b1": 2,
                                                 "pairs": 8, "repeats": 1, "graphs": "default"})


# (folder, instruction side, export options): one graph per instruction; the default
# export (fused for onnxruntime, last layer for the pooled row only), the fused graph
# with its full last layer (an ablation: what the pooled-row rewrite alone is worth) and
# the plain exported graph (--no-optimize)
GRAPHS = (
    ("query", "query", {"int8": True}),
    ("query-full-last", "query", {"int8": True, "full_last_layer": True}),
    ("query-unfused", "query", {"int8": True, "optimize": False}),
    ("document", "document", {"int8": True}),
    ("document-unfused", "document", {"int8": True, "optimize": False}),
    ("plain", None, {"plain": True}),
)


@contextmanager
def full_last_layer() -> Any:
    """Export with the fusions but without the pooled-row rewrite (for the ablation)."""
    from pe_registry import onnx_optimize

    saved = onnx_optimize.pooled_row_only
    onnx_optimize.pooled_row_only = lambda model: 0
    try:
        yield
    finally:
        onnx_optimize.pooled_row_only = saved


DEFAULT_GRAPHS = ("query", "document")


def export_graphs(embedder: Any, root: Path, only: Sequence[str] | None = None,
                  query_instruction: str = QUERY_INSTRUCTION) -> dict[str, Path]:
    from contextlib import nullcontext

    from pe_registry.onnx_embedder import read_onnx_config
    from pe_registry.onnx_export import export_onnx

    instructions = {"query": query_instruction,
                    "document": embedder.config.document_instruction, None: None}
    graphs = {}
    for name, side, kw in GRAPHS:
        if only is not None and name not in only:
            continue
        log(f"exporting the {name} graph to {root / name}")
        kw = dict(kw)
        patch = full_last_layer() if kw.pop("full_last_layer", False) else nullcontext()
        start = time.perf_counter()
        with patch:
            # forced: the benchmark reports the int8 graph's score whatever its check says
            graphs[name] = export_onnx(embedder, instructions[side], root / name,
                                       overwrite=True, force_int8=True, **kw)
        log(f"  {time.perf_counter() - start:.1f} s")
        check = read_onnx_config(graphs[name])[1].get("int8_check")
        if check:
            log(f"  int8 check on {check['texts']} dev texts: cosine mean "
                f"{check['mean_cosine']:.4f}, min {check['min_cosine']:.4f}")
    return graphs


def optimum_graph(embedder: Any, folder: Path, out: Path) -> Path | None:
    """optimum's ORTOptimizer (level 2) on an exported fp32 graph, as an OnnxEmbedder
    folder; None when optimum-onnx is not installed."""
    import json
    import shutil

    try:
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import OptimizationConfig
    except ImportError:
        log("--optimum: optimum-onnx is not installed (pip install 'pe-registry[optimum]')")
        return None
    src = out.with_name(out.name + "-src")
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(folder, src)
    embedder.backbone.model.config.save_pretrained(src)  # ORTOptimizer reads model_type
    optimizer = ORTOptimizer.from_pretrained(src, file_names=["model.onnx"])
    optimizer.optimize(save_dir=out, optimization_config=OptimizationConfig(optimization_level=2))
    config = json.loads((folder / "pe_config.json").read_text())
    config["onnx"].update(files={"fp32": "model_optimized.onnx"}, default="fp32")
    (out / "pe_config.json").write_text(json.dumps(config, indent=2))
    from pe_registry.onnx_folder import seal_export

    seal_export(out)  # a folder of our own making: OnnxEmbedder checks its hashes
    return out


def main(argv: Sequence[str] | None = None) -> int:
    harness.run("inference", parse_args(argv), measure, argv)
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from pe_registry.onnx_embedder import OnnxEmbedder, import_onnxruntime

    warnings.filterwarnings("ignore", message=".*longer than max_length")  # on purpose
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    embedder = load_embedder(args).eval()
    doc_instruction = embedder.config.document_instruction
    queries, docs = corpus_pairs(args.pairs)
    texts = long_texts(embedder.tokenizer, docs, max(args.texts, args.texts_b1), args.seq)
    root = Path(args.out or tempfile.mkdtemp(prefix="pe-inference-"))
    graphs = export_graphs(embedder, root, DEFAULT_GRAPHS if args.graphs == "default" else None,
                           args.instruction)

    def torch_fn(instruction: str | None) -> Callable[[list[str], int], Any]:
        def run(batch_texts: list[str], b: int) -> Any:
            return embedder.encode(batch_texts, instruction=instruction, batch_size=b,
                                   max_length=args.seq, show_progress_bar=False)
        return run

    def torch_plain(batch_texts: list[str], b: int) -> Any:
        saved, embedder.config.document_instruction = doc_instruction, None
        try:
            return embedder.encode(batch_texts, batch_size=b, max_length=args.seq,
                                   show_progress_bar=False)
        finally:
            embedder.config.document_instruction = saved

    def onnx_fn(folder: Path, precision: str, providers: Sequence[str] = ("CPUExecutionProvider",)
                ) -> Callable[[list[str], int], Any]:
        model = OnnxEmbedder(folder, list(providers), precision, args.threads)

        def run(batch_texts: list[str], b: int) -> Any:
            return model.encode(batch_texts, batch_size=b, max_length=args.seq,
                                show_progress_bar=False)
        return run

    def torch_denormals_kept(batch_texts: list[str], b: int) -> Any:
        torch.set_flush_denormal(False)  # the thread's state before onnxruntime set it
        try:
            return torch_fn(args.instruction)(batch_texts, b)
        finally:
            torch.set_flush_denormal(True)

    # onnxruntime flushes denormals on this thread from its first session on (see
    # make_session), so every runner, torch included, runs with flushing on; the
    # "denormals kept" row shows what torch does without it
    runners: dict[str, Callable[[list[str], int], Any]] = {
        "torch eager": torch_fn(args.instruction),
        "ONNX fp32": onnx_fn(graphs["query"], "fp32"),
        "ONNX int8": onnx_fn(graphs["query"], "int8"),
    }
    if args.graphs == "all":
        runners.update({
            "ONNX fp32, fused, full last layer": onnx_fn(graphs["query-full-last"], "fp32"),
            "ONNX int8, fused, full last layer": onnx_fn(graphs["query-full-last"], "int8"),
            "ONNX fp32 --no-optimize": onnx_fn(graphs["query-unfused"], "fp32"),
            "ONNX int8 --no-optimize": onnx_fn(graphs["query-unfused"], "int8"),
            "torch eager, plain backbone": torch_plain,
            "ONNX fp32, plain backbone": onnx_fn(graphs["plain"], "fp32"),
        })
    if args.optimum and args.graphs == "all":
        folder = optimum_graph(embedder, graphs["query-unfused"], root / "query-optimum")
        if folder is not None:
            runners["ONNX fp32 --no-optimize + optimum ORTOptimizer O2"] = onnx_fn(folder, "fp32")
    if torch.set_flush_denormal(True) and args.graphs == "all":
        runners["torch eager, denormals kept"] = torch_denormals_kept
    if "CUDAExecutionProvider" in import_onnxruntime().get_available_providers():
        runners["ONNX fp32, CUDA EP"] = onnx_fn(graphs["query"], "fp32", ["CUDAExecutionProvider"])
    if torch.cuda.is_available():
        log("torch CUDA is available, but this table compares CPU runtimes only")

    results: dict[str, dict[int, float]] = {name: {} for name in runners}
    with count_calls(embedder.prompting.model) as prompting_calls:
        embedder.cached_soft_prompt(args.instruction)  # the one call, before timing
        before, n_batches = prompting_calls[0], 0
        for batch, n in ((1, args.texts_b1), (32, args.texts)):
            log(f"timing {len(runners)} runtimes at batch {batch} ({n} texts x {args.seq} "
                f"tokens, {args.repeats} interleaved rounds)")
            speeds = interleaved_throughput(runners, texts[:n], batch, args.repeats, clock)
            for name, speed in speeds.items():
                results[name][batch] = speed
                log(f"  {name}: {speed:.1f} texts/s")
            n_batches += len(runners) * (args.repeats * -(-n // batch) + 1)
        per_batch = (prompting_calls[0] - before) / n_batches

    log(f"scoring retrieval (MRR@10, nDCG@10) on {len(queries)} test pairs")
    limit = args.score_length
    scores = {"torch eager": retrieval_scores(
        embedder.encode(queries, instruction=args.instruction, show_progress_bar=False,
                        max_length=limit),
        embedder.encode(docs, instruction=doc_instruction, show_progress_bar=False,
                        max_length=limit),
    )}
    cosines = {}
    moved = {}
    for suffix in ("", "-unfused") if args.graphs == "all" else ("",):
        vecs, top10 = {}, {}
        for precision in ("fp32", "int8"):
            q = OnnxEmbedder(graphs["query" + suffix], None, precision, args.threads).encode(
                queries, max_length=limit)
            d = OnnxEmbedder(graphs["document" + suffix], None, precision, args.threads).encode(
                docs, max_length=limit)
            vecs[precision] = np.concatenate([q, d])
            top10[precision] = paired_rank(q, d) < 10
            name = f"ONNX {precision}{' --no-optimize' if suffix else ''}"
            scores[name] = retrieval_scores(q, d)
        cosines[suffix] = (vecs["int8"] * vecs["fp32"]).sum(-1)
        moved[suffix] = int((top10["int8"] != top10["fp32"]).sum())

    record = {
        "versions": {"torch": torch.__version__,
                     "onnxruntime": import_onnxruntime().__version__},
        "model": f"random {CPU_MODEL}" if args.model is None else args.model,
        "texts_per_s": {name: {str(b): v for b, v in row.items()}
                        for name, row in results.items()},
        "pairs": len(queries),
        "scores": {name: {"mrr10": m, "ndcg10": n} for name, (m, n) in scores.items()},
        "int8_vs_fp32": {label or "default": {"cosine_mean": float(cos.mean()),
                                              "cosine_min": float(cos.min()),
                                              "moved": moved[label]}
                         for label, cos in cosines.items()},
        "prompting_calls_per_batch": per_batch,
    }
    print(markdown(record, vars(args)))
    return record


def markdown(results: dict[str, Any], args: dict[str, Any]) -> str | None:
    """The table and readings of one record (for the console and for ``python -m
    benchmarks.render``; None for a record in another shape)."""
    if "texts_per_s" not in results:
        return None
    speeds = {name: {int(b): v for b, v in row.items()}
              for name, row in results["texts_per_s"].items()}
    base = speeds["torch eager"]
    lines = [
        f"Inference, {args.get('backbone')} ({results['model']}), {args.get('seq')} tokens "
        f"per text, {args.get('threads')} CPU thread(s), {args.get('clock')} clock; torch "
        f"{results['versions']['torch']}, onnxruntime {results['versions']['onnxruntime']}",
        "",
        "| runtime | texts/s, batch 1 | texts/s, batch 32 | vs torch eager (b1 / b32) |",
        "|---|---:|---:|---:|",
    ]
    for name, row in speeds.items():
        lines.append(
            f"| {name} | {row[1]:.1f} | {row[32]:.1f} | "
            f"{row[1] / base[1]:.2f}x / {row[32] / base[32]:.2f}x |"
        )
    plain = {"torch eager": "torch eager, plain backbone", "ONNX fp32": "ONNX fp32, plain backbone"}
    if all(p in speeds for p in plain.values()):
        lines += ["", "Soft prompt's cost (throughput with the prompt / plain backbone):", ""]
        for runtime, base_name in plain.items():
            r, p = speeds[runtime], speeds[base_name]
            lines.append(f"- {runtime}: batch 1 {r[1] / p[1]:.2f}, batch 32 {r[32] / p[32]:.2f}")
    n_pairs, scores = results["pairs"], results["scores"]
    lines += ["", f"Retrieval on {n_pairs} test pairs (queries with the instruction, "
              "documents with the document instruction), MRR@10 / nDCG@10:", ""]
    lines += [f"- {name}: {s['mrr10']:.4f} / {s['ndcg10']:.4f}" for name, s in scores.items()]
    for label, cmp in results["int8_vs_fp32"].items():
        suffix = "" if label == "default" else " --no-optimize"
        fp32, int8 = scores[f"ONNX fp32{suffix}"], scores[f"ONNX int8{suffix}"]
        drops = [100 * (fp32[k] - int8[k]) / fp32[k] if fp32[k] else float("nan")
                 for k in ("mrr10", "ndcg10")]
        lines.append(
            f"- int8{suffix} vs fp32{suffix}: relative drop MRR@10 {drops[0]:.2f} %, "
            f"nDCG@10 {drops[1]:.2f} %; cosine mean {cmp['cosine_mean']:.4f}, min "
            f"{cmp['cosine_min']:.4f}; {cmp['moved']} of {n_pairs} queries' paired document "
            "moved into or out of the top 10"
        )
    lines += [
        "",
        f"Prompting-LLM calls per batch at inference: {results['prompting_calls_per_batch']:g}"
        " (torch: the soft prompt "
        "is cached per instruction; ONNX: baked in, the graph has no Prompting LLM)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
