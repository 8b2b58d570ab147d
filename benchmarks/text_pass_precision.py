"""The frozen text pass of suffix training in bf16 autocast against fp32: its speed, and
what the rounding does to the training signal.

On a 30-layer backbone the text pass is most of a first-epoch PromptEmbedder step
(``python -m benchmarks.train_efficiency --profile``). The backbone is frozen and the
pass has no grad, so it may run in a cheaper precision if training does not suffer.
This script measures, on one batch of training pairs (queries with the task
instruction, documents with the document instruction), interleaved over ``--rounds``:

* the text pass as the first epoch runs it (length groups, early exit), fp32 vs bf16:
  wall and CPU ms;
* the pooled embeddings of the soft pass over either cache (cosine), and the gradient
  of one contrastive step with respect to every trainable weight (cosine, norm ratio);
* with ``--train-steps N``: per seed of ``--seeds``, two ``pe train`` runs, same seed
  and data, fp32 and bf16 text pass, their dev nDCG@10 every ``--eval-every`` steps.

    python -m benchmarks.text_pass_precision --model pe-real:smollm2-135m --threads 1
    python -m benchmarks.text_pass_precision --train-steps 20 --batch 16 --name bf16-train

* with ``--int8-linears`` (instead of the above): each projection of the backbone's
  layers as the text pass runs it (the batch's real tokens as rows), fp32 against
  dynamic int8 as onnxruntime does it (torch's fbgemm kernel: weights int8 per output
  channel, activations quantised per tensor at run time), and what the text pass would
  cost with every projection int8 or with only those the int8 ONNX recipe quantises
  (gate, up, output).

bf16 pays off only where the CPU has bf16 matrix units (AMX or avx512_bf16; ``lscpu``).
Its rounding is the same on any CPU, so ``--train-steps`` measures its score anywhere
(slowly where bf16 is emulated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.curves import read_curve
from benchmarks.tiers import TOY_PROMPTING, short
from benchmarks.train_efficiency import resolve_backbone

INSTRUCTION = "Given a one-line summary, retrieve the documentation that it summarizes"
# the projections whose inputs carry activation outliers on SmolLM2 (per-tensor int8 loses
# the embedding there; the "safe" int8 recipe leaves them fp32)
OUTLIER_MODULES = ("mlp.down_proj", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def first_epoch_batch(args: argparse.Namespace) -> tuple:
    """``(method, settings, rows, ids, mask)``: one batch of training pairs as the first
    epoch of suffix training sees it."""
    import torch

    from pe_core.data import load_pairs
    from pe_core.training import api
    from pe_core.training.data import read_pairs
    from pe_core.training.settings import TrainSettings

    backbone, model = resolve_backbone(args.model)
    pairs = load_pairs("train")[: args.batch]
    examples = [{"query": x.query, "positive": x.document, "instruction": INSTRUCTION}
                for x in pairs]
    data = read_pairs(examples)
    s = TrainSettings(steps=1, batch_size=args.batch, hard_negatives=0, progress=False,
                      text_kv_cache_mb=0.0, seed=0)
    _, meth, _ = api._prompt_embedder(
        backbone, model, args.prompting, None, s,
        {"placement": "suffix", "max_length": args.max_length}, torch.device("cpu"), None, data,
    )
    rows = meth.rows(data.examples, 0)
    ids, mask = meth._pad(rows.ids)
    return meth, s, rows, ids, mask


def measure(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.kvcache import TextKVStore, soft_pass
    from pe_core.training.methods import StepInfo

    meth, s, rows, ids, mask = first_epoch_batch(args)
    timing: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []}
                                                  for k in ("fp32", "bf16")}
    caches = {}
    for _ in range(args.rounds):
        for name in ("fp32", "bf16"):
            store = TextKVStore(2**40, bf16=name == "bf16")  # fresh: every text is new
            t, c = time.perf_counter(), time.process_time()
            caches[name] = store.cache(meth.backbone, ids, mask)
            timing[name]["wall"].append(1000 * (time.perf_counter() - t))
            timing[name]["cpu"].append(1000 * (time.process_time() - c))
    key_err = max(float((a.keys - b.keys).abs().max() / b.keys.abs().max())
                  for a, b in zip(caches["bf16"].layers, caches["fp32"].layers, strict=True))
    with torch.no_grad():
        head = meth.head(rows, StepInfo(0))
        soft = head[torch.tensor(rows.prompt)]
        pooled = {}
        for name in ("fp32", "bf16"):
            cache = TextKVStore(2**40, bf16=name == "bf16").cache(meth.backbone, ids, mask)
            pooled[name] = F.normalize(soft_pass(meth.backbone, cache, mask, soft).float(), dim=-1)
    emb_cos = (pooled["fp32"] * pooled["bf16"]).sum(-1)
    grads = {}
    for name in ("fp32", "fp32 again", "bf16"):  # fp32 twice: the noise floor
        meth.settings.text_pass_bf16 = name == "bf16"
        meth.train_mode(True)
        contrastive_step(meth, rows, StepInfo(0, noise_seed=0), s.temperature)
        params = meth.named_trainable().values()
        grads[name] = torch.cat([p.grad.reshape(-1).double() for p in params
                                 if p.grad is not None])
        for p in params:
            p.grad = None
    g32, g16, again = grads["fp32"], grads["bf16"], grads["fp32 again"]
    return {
        "model": short(args.model), "texts": len(rows.ids), "max_length": args.max_length,
        "threads": args.threads, "rounds": args.rounds,
        "text_pass_ms": {k: {m: statistics.median(v) for m, v in d.items()}
                         for k, d in timing.items()},
        "key_max_rel_err": key_err,
        "embedding_cosine": {"min": float(emb_cos.min()), "mean": float(emb_cos.mean())},
        "grad_cosine": float(F.cosine_similarity(g32, g16, dim=0)),
        "grad_norm_ratio": float(g16.norm() / g32.norm()),
        "fp32_repeat_grad_cosine": float(F.cosine_similarity(g32, again, dim=0)),
        "fp32_repeat_grad_norm_ratio": float(again.norm() / g32.norm()),
    }


def int8_linears(args: argparse.Namespace) -> dict:
    """The fp32 text pass of one first-epoch batch (CPU ms, median of ``--rounds``), and
    each distinct projection of the backbone's layers timed fp32 and dynamic int8 on as
    many rows as that batch has real tokens; the text pass's cost projected for each
    int8 recipe by taking each projection's saving off the measured pass."""
    import warnings

    import torch

    from pe_core.training.kvcache import TextKVStore

    meth, _, _, ids, mask = first_epoch_batch(args)
    passes = []
    for _ in range(args.rounds):
        c = time.process_time()
        TextKVStore(2**40).cache(meth.backbone, ids, mask)  # fresh: every text is new
        passes.append(1000 * (time.process_time() - c))
    text_pass_ms = statistics.median(passes)
    tokens = int(mask.sum())
    layers: dict[str, list] = {}
    for name, mod in meth.backbone.model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "layers." in name:
            # "mlp.down_proj": the names the int8 ONNX recipe keeps fp32 by
            layers.setdefault(".".join(name.split(".")[-2:]), []).append(mod)
    n_layers = len(next(iter(layers.values())))
    rows = []
    x_cache: dict[int, torch.Tensor] = {}
    for role, mods in layers.items():
        lin = mods[len(mods) // 2]
        x = x_cache.setdefault(lin.in_features, torch.randn(tokens, lin.in_features))
        w = lin.weight.detach().float()
        scale = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's eager int8 API is deprecated
            qw = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long),
                                            0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(qw, None)
        timed = {"fp32": lambda x=x, w=w: x @ w.T,
                 "int8": lambda x=x, p=packed: torch.ops.quantized.linear_dynamic(x, p)}
        ms: dict[str, list[float]] = {k: [] for k in timed}
        with torch.no_grad():
            for _ in range(args.rounds + 1):  # the first round warms up
                for k, f in timed.items():
                    c = time.process_time()
                    f()
                    ms[k].append(1000 * (time.process_time() - c))
        med = {k: statistics.median(v[1:]) for k, v in ms.items()}
        rows.append({"proj": role.rsplit(".", 1)[-1], "safe": role not in OUTLIER_MODULES,
                     "in": lin.in_features, "out": lin.out_features,
                     "fp32_ms": med["fp32"], "int8_ms": med["int8"],
                     "speedup": med["fp32"] / med["int8"]})
    fp32 = n_layers * sum(r["fp32_ms"] for r in rows)
    saved_all = n_layers * sum(r["fp32_ms"] - r["int8_ms"] for r in rows)
    saved_safe = n_layers * sum(r["fp32_ms"] - r["int8_ms"] for r in rows
                                if r["safe"])
    return {"tokens": tokens, "layers": n_layers, "projections": rows,
            "projections_fp32_cpu_ms": fp32, "text_pass_fp32_cpu_ms": text_pass_ms,
            "projection_share": fp32 / text_pass_ms,
            "text_pass_speedup_all_int8": text_pass_ms / (text_pass_ms - saved_all),
            "text_pass_speedup_safe_int8": text_pass_ms / (text_pass_ms - saved_safe)}


def train_pair(args: argparse.Namespace) -> dict:
    """Per seed, two short ``pe train`` runs, fp32 and bf16 text pass; their dev curves
    (``{"fp32 seed N": curve, "bf16 seed N": curve, ...}``)."""
    import pe_core
    from pe_core.data import DOC_INSTRUCTION, load_pairs
    from pe_core.data.corpus import write_training_jsonl

    backbone, model = resolve_backbone(args.model)
    work = Path(tempfile.mkdtemp(prefix="pe-text-precision-"))
    data = work / "train.jsonl"
    write_training_jsonl(data, split="train")
    dev = [{"query": x.query, "positive": x.document, "instruction": DOC_INSTRUCTION}
           for x in load_pairs("dev")[: args.dev]]
    lr = {} if args.alignment_lr is None else {"alignment_lr": args.alignment_lr}
    out = {}
    for seed in args.seeds:
        for name in ("fp32", "bf16"):
            print(f"== pe train, text pass {name}, seed {seed}", flush=True)
            run = work / f"{name}-s{seed}"
            pe_core.train(data, backbone=backbone, model=model, prompting=args.prompting,
                          out=run, steps=args.train_steps, batch_size=args.batch,
                          max_length=args.max_length, dev_data=dev,
                          eval_every=args.eval_every, save_every=10**9, overwrite=True,
                          device="cpu", seed=seed, progress=False,
                          text_pass_bf16=name == "bf16", **lr)
            out[f"{name} seed {seed}"] = read_curve(run / "log.jsonl")
    return out


def plot_panels(results: dict) -> dict[str, dict[str, list]]:
    """For ``python -m benchmarks.render``: one panel per seed of :func:`train_pair`'s
    runs, the fp32 and bf16 curves in each."""
    panels: dict[str, dict[str, list]] = {}
    for key, run in results.get("train", {}).items():
        name, _, seed = key.partition(" seed ")
        panels.setdefault(f"seed {seed or 0}", {})[f"text pass {name}"] = run["curve"]
    return panels


def run(args: argparse.Namespace) -> dict:
    if args.int8_linears:
        result = {"int8_linears": int8_linears(args)}
        print(json.dumps(result["int8_linears"], indent=2), flush=True)
    else:
        result = {"measure": measure(args)}
        print(json.dumps(result["measure"], indent=2), flush=True)
    if args.train_steps:
        result["train"] = train_pair(args)
        for name, one in result["train"].items():
            print(name, f"{one['ms_per_step']:.0f} ms/step", one["curve"], flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__, threads=1)
    p.add_argument("--model", default="pe-real:smollm2-135m")
    p.add_argument("--prompting", default=TOY_PROMPTING)
    p.add_argument("--batch", type=int, default=32, help="pairs (x2 texts)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=0, help="also the two training runs")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--dev", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="training seeds (each: an fp32 and a bf16 run)")
    p.add_argument("--alignment-lr", type=float, help="pe train's (default: its own)")
    p.add_argument("--int8-linears", action="store_true",
                   help="instead of bf16: the projections fp32 vs dynamic int8")
    args = harness.parse(p, argv, quick={"batch": 2, "max_length": 16, "rounds": 1, "dev": 8})
    harness.run("text_pass_precision", args, run, argv)


if __name__ == "__main__":
    main()
