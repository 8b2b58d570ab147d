"""Which nodes lose the embedding when a real model's ONNX graph goes int8.

Exports the fp32 query graph once (``pe export onnx`` without ``--int8``), then, for each
variant, quantises it with :func:`pe_registry.onnx_int8.quantize_int8` keeping a
different set of modules fp32, and compares the int8 embeddings of ``--texts`` local
test texts (half documents, half queries) with fp32's: cosine mean / min, and the CPU
time of one pass over those texts at batch ``--batch`` (one thread, after one warm-up
pass; the median of ``--rounds`` interleaved passes) against the fp32 graph's. A variant
is a list of module-path tails, as ``quantize_int8(keep_fp32=...)`` takes them;
``embed_tokens`` keeps the embedding table's Gather fp32.

    python -m benchmarks.int8_sensitivity --backbone gemma --model pe-real:gemma3-270m \\
        --name gemma3
    python -m benchmarks.int8_sensitivity --backbone gemma --model pe-real:gemma3-270m \\
        --per-layer gate_proj up_proj       # only layer L's gate/up int8, for every L

``--per-layer M...`` adds one variant per layer in which only that layer's modules ``M``
are int8 (everything else fp32): which layers are the sensitive ones. ``--matmul-nbits
BITS:BLOCK...`` adds rows for onnxruntime's weight-only ``MatMulNBits`` instead
(symmetric, ``accuracy_level=4``: activations quantised to int8 per block of ``BLOCK``
inputs rather than per tensor), every projection quantised.

``--static METHOD...`` adds a static (calibrated) row of each variant: QDQ nodes whose
activation ranges are fixed beforehand from 32 local *training* texts (``MinMax`` or
``Percentile``), uint8 activations and per-channel int8 weights, instead of a range
measured on each batch at run time.

``--smooth ALPHA`` first folds SmoothQuant-style per-channel scales into the fp32 model
(before the export; the function is unchanged up to rounding, which is checked): input
channel ``j`` of a projection is divided by ``s_j = amax_j**ALPHA / wmax_j**(1-ALPHA)``
(``amax_j``: its largest input value on 64 local *training* texts, ``wmax_j``: its
largest weight) and its weights multiplied by ``s_j``. q/k/v and gate/up take the
division into the RMSNorm that feeds them, the down projection into the up
projection's output rows. Every row is then read against the smoothed fp32 graph.

``--score PAIRS`` reads what the export's bound is about, the retrieval score, instead
of the query graph's cosine: it exports the query *and* the document graph as ``pe
export onnx --int8`` does (smoothed with ``--smooth`` or the export's alpha, from
``--calibration`` local training texts), quantises both per variant and per
``--levels`` form, and reads MRR@10 / nDCG@10 on ``PAIRS`` local test pairs against
fp32, the queries whose paired document moved into or out of the top 10, and the
cosine. ``--alignment`` (a trained run) and ``--prompting`` load a trained embedder.
``--keep NAME=TAIL,TAIL`` adds a variant of module-path tails kept fp32 (e.g.
``layers.29``). The uint8 against 7-bit int8 weights comparison in the docs:

    python -m benchmarks.int8_sensitivity --backbone llama --model pe-real:smollm2-135m \\
        --prompting pe-real:smollm2-135m --alignment RUN --score 346 \\
        --levels 127:127:u8 127:64:s8 127:32:s8
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.inference import QUERY_INSTRUCTION, corpus_pairs, load_embedder, parse_args

QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
DOWN = ("mlp.down_proj",)
O_PROJ = ("self_attn.o_proj",)
GATE_UP = ("mlp.gate_proj", "mlp.up_proj")
GATHER = ("embed_tokens",)
ROTARY = ("rotary_emb",)  # the cos/sin tables' positions x frequencies MatMul
VARIANTS: dict[str, tuple[str, ...]] = {
    "everything int8": (),
    "everything int8 but rotary + Gather": ROTARY + GATHER,
    "everything int8 but rotary": ROTARY,
    "default (down + q/k/v fp32)": DOWN + QKV,
    "default + embedding Gather fp32": DOWN + QKV + GATHER,
    "default + o fp32": DOWN + QKV + O_PROJ,
    "default + o + Gather fp32 (gate/up int8 only)": DOWN + QKV + O_PROJ + GATHER,
    "default + gate/up + Gather fp32 (o int8 only)": DOWN + QKV + GATE_UP + GATHER,
    "Gather + q/k/v + o fp32 (MLP int8)": QKV + O_PROJ + GATHER,
}
MODULES = QKV + O_PROJ + GATE_UP + DOWN


def log(message: str) -> None:
    print(message, flush=True)


def embed(path: Path, texts: Sequence[str], tokenizer: Any, padding_side: str, batch: int,
          max_length: int) -> tuple[np.ndarray, float]:
    """Embeddings of ``texts`` in their order and the CPU seconds of the timed pass."""
    from pe_registry.onnx_embedder import make_session
    from pe_registry.onnx_int8 import run_batches, token_batches

    session = make_session(path, ["CPUExecutionProvider"], threads=1)
    batches = token_batches(tokenizer, texts, batch, max_length, padding_side)
    run_batches(session, batches)  # warm-up
    start = time.process_time()
    vecs = run_batches(session, batches)
    return vecs, time.process_time() - start


def matmul_nbits(src: Path, dst: Path, bits: int, block: int) -> Path:
    """Every MatMul but the pooled-row ones as ``MatMulNBits`` (``bits``-bit weights in
    blocks of ``block``, int8 activations per block)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )
    from pe_registry.onnx_int8 import fp32_nodes

    model = onnx.load(str(src))
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True,
                                          accuracy_level=4, bits=bits)
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True,
                                     accuracy_level=4, algo_config=config,
                                     nodes_to_exclude=fp32_nodes(model.graph, ()))
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)
    return dst


def static_qdq(src: Path, dst: Path, keep_fp32: Sequence[str], batches: Sequence[Any],
               method: str) -> Path:
    """Static (calibrated) int8: QDQ nodes around every MatMul but ``keep_fp32``'s and the
    pooled-row ones, with activation ranges fixed from ``batches`` (``method``: MinMax or
    Percentile) instead of measured per batch at run time; uint8 activations, int8 weights
    with one scale per output channel (onnxruntime's U8S8 for x86)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from pe_registry.onnx_embedder import INPUT_NAMES
    from pe_registry.onnx_int8 import fp32_nodes

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.left, None)
            return None if batch is None else {
                INPUT_NAMES[0]: batch.input_ids.numpy(),
                INPUT_NAMES[1]: batch.attention_mask.numpy()}

    graph = onnx.load(str(src), load_external_data=False).graph
    quantize_static(src, dst, Feeds(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul"], per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=fp32_nodes(graph, keep_fp32),
                    calibrate_method=getattr(CalibrationMethod, method),
                    use_external_data_format=True,
                    extra_options={"CalibMaxIntermediateOutputs": 64})
    return dst


def per_layer_variants(num_layers: int, modules: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """One variant per layer L: every module fp32 except ``modules`` of layer L."""
    wanted = [m for m in MODULES if m.rsplit(".", 1)[-1] in modules]
    out = {}
    for layer in range(num_layers):
        keep = [m for m in MODULES if m not in wanted] + list(GATHER)
        keep += [f"layers.{i}.{m}" for i in range(num_layers) if i != layer for m in wanted]
        out[f"layer {layer}: {'/'.join(modules)} int8"] = tuple(keep)
    return out


def parse_keep(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``NAME=TAIL,TAIL`` variants; a malformed one is an argparse error."""
    out = {}
    for spec in specs:
        name, sep, tails = spec.partition("=")
        if not sep or not name.strip() or not tails.strip():
            raise argparse.ArgumentTypeError(f"--keep {spec!r}: expected NAME=TAIL[,TAIL...]")
        out[name.strip()] = tuple(t.strip() for t in tails.split(",") if t.strip())
    return out


def parse_levels(specs: Sequence[str]) -> list[tuple[int, int, bool]]:
    """``ACT:WEIGHT[:u8|s8]`` int8 forms as ``quantize_int8``'s ``(act_max, weight_max,
    unsigned_weights)``; without the third field the weights are held as the export
    holds them. A malformed one is an argparse error."""
    from pe_registry.onnx_int8 import UNSIGNED_WEIGHTS

    out = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(x.isdigit() for x in parts[:2]) or (
                len(parts) == 3 and parts[2] not in ("u8", "s8")):
            raise argparse.ArgumentTypeError(f"--levels {spec!r}: expected ACT:WEIGHT[:u8|s8]")
        unsigned = UNSIGNED_WEIGHTS if len(parts) == 2 else parts[2] == "u8"
        out.append((int(parts[0]), int(parts[1]), unsigned))
    return out


def score_variants(embedder: Any, variants: dict[str, tuple[str, ...]], pairs: int,
                   alpha: float, calibration: int, max_length: int, work: Path,
                   levels: Sequence[tuple[int, int, bool]]) -> list[dict]:
    """Retrieval with int8 query and document graphs per variant against fp32 (see the
    module docstring's ``--score``)."""
    from pe_registry.int8_smooth import smoothed
    from pe_registry.onnx_embedder import make_session
    from pe_registry.onnx_export import MODEL_NAME, export_onnx
    from pe_registry.onnx_int8 import (
        calibration_texts,
        quantize_int8,
        run_batches,
        token_batches,
    )

    from benchmarks.inference import paired_rank, retrieval_scores

    queries, docs = corpus_pairs(pairs)
    sides = {"query": (QUERY_INSTRUCTION, queries),
             "document": (embedder.config.document_instruction, docs)}
    tok, side = embedder.tokenizer, embedder.backbone.spec.padding_side
    calib = calibration_texts(calibration)
    batches, fp32 = {}, {}
    for name, (instruction, texts) in sides.items():
        folder = work / f"{name}-a{alpha:g}-c{calibration}"
        if not (folder / MODEL_NAME).exists():
            log(f"exporting the smoothed fp32 {name} graph (alpha {alpha:g}, "
                f"{len(calib)} calibration texts) to {folder}")
            with smoothed(embedder, calib, alpha, instruction):
                export_onnx(embedder, instruction, folder, overwrite=True)
        batches[name] = token_batches(tok, texts, 32, max_length, side)
        session = make_session(folder / MODEL_NAME, ["CPUExecutionProvider"])
        fp32[name] = (folder, run_batches(session, batches[name]))
    base = retrieval_scores(fp32["query"][1], fp32["document"][1])
    base_top = paired_rank(fp32["query"][1], fp32["document"][1]) < 10
    log(f"fp32: MRR@10 {base[0]:.4f}, nDCG@10 {base[1]:.4f} on {len(queries)} pairs")
    rows = []
    for (variant, keep), form in itertools.product(variants.items(), levels):
        vecs = {}
        if len(levels) > 1:
            variant = f"{variant}, levels {form[0]}:{form[1]}:{'u8' if form[2] else 's8'}"
        for name, (folder, _) in fp32.items():
            dst = folder / "variant.onnx"
            quantize_int8(folder / MODEL_NAME, dst, keep, *form)
            session = make_session(dst, ["CPUExecutionProvider"])
            vecs[name] = run_batches(session, batches[name])
        mrr, ndcg = retrieval_scores(vecs["query"], vecs["document"])
        top = paired_rank(vecs["query"], vecs["document"]) < 10
        cos = np.concatenate([(vecs[n] * fp32[n][1]).sum(-1) for n in fp32])
        row = {"variant": variant, "keep_fp32": list(keep), "pairs": len(queries),
               "fp32_mrr10": base[0], "fp32_ndcg10": base[1], "mrr10": mrr, "ndcg10": ndcg,
               "mrr10_drop_pct": 100 * (base[0] - mrr) / base[0],
               "ndcg10_drop_pct": 100 * (base[1] - ndcg) / base[1],
               "moved": int((top != base_top).sum()),
               "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
        rows.append(row)
        log(f"{variant}: MRR@10 {mrr:.4f} ({row['mrr10_drop_pct']:+.2f} % drop), nDCG@10 "
            f"{ndcg:.4f} ({row['ndcg10_drop_pct']:+.2f} %), {row['moved']} moved, cosine "
            f"mean {cos.mean():.4f} min {cos.min():.4f}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = harness.parser(__doc__, threads=None,
                       threads_help="torch threads (default: 1 for the timed passes, 2 with "
                                    "--score)")
    p.add_argument("--backbone", default="gemma")
    p.add_argument("--model", default="pe-real:gemma3-270m")
    p.add_argument("--texts", type=int, default=64, help="local test texts compared")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), help="default: all")
    p.add_argument("--per-layer", nargs="+", metavar="MODULE",
                   help="also one variant per layer with only these modules int8 "
                        "(e.g. gate_proj up_proj)")
    p.add_argument("--matmul-nbits", nargs="+", default=[], metavar="BITS:BLOCK",
                   help="also MatMulNBits rows, e.g. 8:32 8:128")
    p.add_argument("--static", nargs="+", default=[], choices=("MinMax", "Percentile"),
                   help="also static (calibrated QDQ) rows of each variant, activation "
                        "ranges from 32 local training texts by this method")
    p.add_argument("--smooth", type=float, metavar="ALPHA",
                   help="fold SmoothQuant-style scales into the model first (e.g. 0.5)")
    p.add_argument("--keep", nargs="+", default=[], metavar="NAME=TAIL,TAIL",
                   help="a variant of your own: these module-path tails stay fp32")
    p.add_argument("--score", type=int, metavar="PAIRS",
                   help="read the retrieval score on PAIRS local test pairs instead "
                        "(query and document graphs, as pe export onnx --int8 makes them)")
    p.add_argument("--levels", nargs="+", default=[], metavar="ACT:WEIGHT[:u8|s8]",
                   help="--score: int8 forms to compare (largest |level| of activations "
                        "and weights, weights held as uint8 or int8; default: the export's)")
    p.add_argument("--calibration", type=int, default=None, metavar="TEXTS",
                   help="--score: smoothing calibration texts (default: the export's)")
    p.add_argument("--prompting", help="Prompting LLM (with --alignment)")
    p.add_argument("--alignment", help="a trained run or alignment to load")
    p.add_argument("--rounds", type=int, default=1,
                   help="timed passes per graph, interleaved (the median is reported)")
    p.add_argument("--work", help="keep the graphs here (default: a temp folder); a graph "
                                  "already there is reused, so use one folder per model")
    args = harness.parse(p, argv, quick={"texts": 4, "batch": 2, "max_length": 16})
    try:
        parse_keep(args.keep), parse_levels(args.levels)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    harness.run("int8_sensitivity", args, measure, argv)
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    custom, levels = parse_keep(args.keep), parse_levels(args.levels)
    import torch
    from pe_registry.int8_smooth import SMOOTH_ALPHA, smooth
    from pe_registry.onnx_export import MODEL_NAME, export_onnx
    from pe_registry.onnx_int8 import (
        ACT_MAX,
        CALIBRATION_TEXTS,
        UNSIGNED_WEIGHTS,
        WEIGHT_MAX,
        quantize_int8,
    )

    torch.set_num_threads(args.threads or 1)
    load = ["--backbone", args.backbone, "--model", args.model]
    load += ["--prompting", args.prompting] if args.prompting else []
    load += ["--alignment", args.alignment] if args.alignment else []
    embedder = load_embedder(parse_args(load))
    embedder.eval()
    work = Path(args.work or tempfile.mkdtemp(prefix="pe-int8-sensitivity-"))
    if args.score:
        torch.set_num_threads(args.threads or 2)
        # the export's recipe unless variants are named
        names = args.variants or ([] if custom else ["everything int8"])
        variants = {k: v for k, v in VARIANTS.items() if k in names}
        rows = score_variants(
            embedder, {**variants, **custom}, args.score,
            SMOOTH_ALPHA if args.smooth is None else args.smooth,
            args.calibration or CALIBRATION_TEXTS, args.max_length, work,
            levels or [(ACT_MAX, WEIGHT_MAX, UNSIGNED_WEIGHTS)])
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        lines = ["| int8 variant (fp32 kept) | MRR@10 drop | nDCG@10 drop | queries moved | "
                 "cosine mean / min |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['variant']} | {r['mrr10_drop_pct']:.2f} % | {r['ndcg10_drop_pct']:.2f} %"
                  f" | {r['moved']} of {r['pairs']} | {r['mean_cosine']:.4f} / "
                  f"{r['min_cosine']:.4f} |" for r in rows]
        print("\n".join(lines))
        return {"rows": rows}
    folder = work / ("query" if args.smooth is None else f"query-smooth{args.smooth:g}")
    queries, docs = corpus_pairs(-(-args.texts // 2))
    texts = (docs + queries)[: args.texts]
    if args.smooth is not None:
        from pe_core.data import load_pairs

        train = load_pairs("train")[:32]
        before = embedder.encode(texts[:16], instruction=QUERY_INSTRUCTION,
                                 max_length=args.max_length)
        groups = smooth(embedder, [x.document for x in train] + [x.query for x in train],
                        args.smooth, QUERY_INSTRUCTION, args.max_length)
        after = embedder.encode(texts[:16], instruction=QUERY_INSTRUCTION,
                                max_length=args.max_length)
        change = float((before * after).sum(-1).min())
        log(f"smoothing (alpha {args.smooth}) folded into {groups} groups; "
            f"min cosine to the unsmoothed model {change:.7f}")
        if change < 0.9999:
            raise SystemExit("smoothing changed the model's function: a bug")
    if not (folder / MODEL_NAME).exists():
        log(f"exporting the fp32 query graph to {folder}")
        export_onnx(embedder, QUERY_INSTRUCTION, folder, overwrite=True)
    tok, side = embedder.tokenizer, embedder.backbone.spec.padding_side
    variants = {k: v for k, v in VARIANTS.items() if not args.variants or k in args.variants}
    variants.update(custom)
    if args.per_layer:
        layers = embedder.backbone.model.config.num_hidden_layers
        variants.update(per_layer_variants(layers, args.per_layer))
    jobs: list[tuple[str, tuple[str, ...], Any]] = [
        (name, keep, None) for name, keep in variants.items()]
    for spec in args.matmul_nbits:
        bits, block = (int(x) for x in spec.split(":"))
        jobs.append((f"MatMulNBits {bits}-bit, block {block}", (), ("nbits", bits, block)))
    if args.static:
        from pe_registry.onnx_int8 import token_batches

        from pe_core.data import load_pairs

        train = load_pairs("train")[:16]
        # one batch: the Percentile collector cannot merge tensors of different lengths
        calib = token_batches(tok, [x.document for x in train] + [x.query for x in train],
                              32, args.max_length, side)
        jobs += [(f"static {method}: {name}", keep, ("static", method))
                 for method in args.static for name, keep in variants.items()]
    fp32, fp32_s = embed(folder / MODEL_NAME, texts, tok, side, args.batch, args.max_length)
    times: dict[str, list[float]] = {"fp32": [fp32_s]}
    log(f"fp32: {fp32_s:.2f} CPU s for {len(texts)} texts")
    rows, graphs = [], {}
    for i, (name, keep, how) in enumerate(jobs):
        dst = folder / f"variant_{i}.onnx"
        for old in folder.glob(dst.name + "*"):  # the external-data writer appends
            old.unlink()
        if how is None:
            quantize_int8(folder / MODEL_NAME, dst, keep_fp32=keep)
        elif how[0] == "nbits":
            matmul_nbits(folder / MODEL_NAME, dst, *how[1:])
        else:
            static_qdq(folder / MODEL_NAME, dst, keep, calib, how[1])
        vecs, seconds = embed(dst, texts, tok, side, args.batch, args.max_length)
        graphs[name], times[name] = dst, [seconds]
        if args.rounds == 1:  # no second pass: free the disk (a graph is ~1 GB)
            for f in folder.glob(dst.name + "*"):
                f.unlink()
        cos = (vecs * fp32).sum(-1)
        rows.append({"variant": name, "keep_fp32": list(keep), "mean_cosine": float(cos.mean()),
                     "min_cosine": float(cos.min())})
        log(f"{name}: cosine mean {cos.mean():.4f} min {cos.min():.4f}, "
            f"{fp32_s / seconds:.2f}x fp32 (first round)")
    for _ in range(args.rounds - 1):  # interleaved: fp32, then every variant, again
        for name, path in {"fp32": folder / MODEL_NAME, **graphs}.items():
            times[name].append(embed(path, texts, tok, side, args.batch, args.max_length)[1])
    fp32_s = statistics.median(times["fp32"])
    for row in rows:
        row["cpu_s"] = statistics.median(times[row["variant"]])
        row["cpu_s_rounds"] = times[row["variant"]]
        row["speedup"] = fp32_s / row["cpu_s"]
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| int8 variant | cosine mean | min | CPU speed-up vs fp32 |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['mean_cosine']:.4f} | {r['min_cosine']:.4f} | "
              f"{r['speedup']:.2f}x |" for r in rows]
    print("\n".join(lines))
    return {"texts": len(texts), "fp32_cpu_s": fp32_s, "fp32_cpu_s_rounds": times["fp32"],
            "rows": rows}


if __name__ == "__main__":
    raise SystemExit(main())
