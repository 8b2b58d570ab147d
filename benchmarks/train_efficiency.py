"""Training cost per step: PromptEmbedder (prefix, suffix, suffix with the text KV store)
vs LoRA r=16 on all linear layers vs full fine-tuning, on one frozen backbone.

Each mode runs in its own process (so peak memory is its own), through the real training
loop (data -> rows -> contrastive step -> AdamW), with rounds interleaved so that load on
the machine hits every mode alike. Reported: median wall ms/step, median CPU ms/step,
peak resident memory above the loaded models (VmHWM reset after loading), and ratios to
LoRA; with ``--profile``, where each step's time goes (Prompting LLM, text pass, soft
pass, backward, optimizer). Not a test: run it by hand.

    python -m benchmarks.train_efficiency             # random Llama, hidden 256, 4 layers
    python -m benchmarks.train_efficiency --bf16 --hidden 1024 --layers 8   # GPU table
    python -m benchmarks.train_efficiency --model pe-real:smollm2-135m --threads 2 \
        --rounds 1 --steps 3 --warmup 1 --batches 2 --profile    # a real backbone

Backbone: a random Llama built here (``--hidden``, ``--layers``), or ``--model`` (a real-tier
id such as ``pe-real:smollm2-135m`` / ``pe-real:gemma3-270m``, or ``family:model``) with
``--prompting`` as Prompting LLM (default ``pe-default:prompting``).

Modes:
    prefix          [soft ; text]: backward runs over every position (the naive design)
    suffix          [text ; soft] over a no-grad KV cache with early exit, first epoch
                    (every text's keys/values computed in the step)
    suffix-bf16     suffix with the frozen text pass under bf16 autocast (keys/values come
                    back fp32; the soft pass, backward and trainable weights stay fp32)
    suffix-store    the same from the second epoch on: texts' keys/values come from the
                    store kept across epochs (the backbone is frozen, so they are constants)
    lora            peft LoRA r=16 on all linear layers of the backbone (E5-mistral recipe)
    full            every backbone weight trains
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.tiers import TIERS, TOY_PROMPTING, parse_ref, short

MODES = ("prefix", "suffix", "suffix-bf16", "suffix-store", "lora", "full")
INSTRUCTION = "Given a one-line summary, retrieve the documentation that it summarizes"


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def build_models(root: Path, hidden: int, layers: int, vocab_size: int) -> dict[str, str]:
    """A random Llama backbone and a small random Prompting LLM, saved as folders."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    from pe_core.testing.tiny import tiny_tokenizer

    tok = tiny_tokenizer(vocab_size)
    special = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                   eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    backbone = LlamaModel(LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=int(hidden * 2.6875),
        num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
        max_position_embeddings=1024, **special,
    ))
    prompting = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=344, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **special,
    ))
    out = {"model": str(root / "backbone"), "prompting": str(root / "prompting")}
    backbone.save_pretrained(out["model"])
    prompting.save_pretrained(out["prompting"])
    tok.save_pretrained(out["model"])
    tok.save_pretrained(out["prompting"])
    return out


def records(n: int, words_per_text: int, seed: int) -> list[dict]:
    """Texts long enough that every one is truncated to exactly --seq tokens."""
    import random

    from pe_core.testing.tiny import _TEXT

    words = _TEXT.split()
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(words_per_text))

    return [{"query": text(), "positive": text(), "instruction": INSTRUCTION} for _ in range(n)]


class PhaseTimer:
    """Wall seconds spent inside wrapped functions, per phase (the worker's profile)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.active = False

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                if self.active:
                    self.seconds[phase] += time.perf_counter() - t

        setattr(owner, name, timed)


def install_profile(meth: Any) -> PhaseTimer:
    """Time the step's phases: the Prompting LLM's relaxed generation, the frozen text
    pass (the store's bookkeeping included; ``text forward`` is the model itself), the
    soft pass, every backward, the optimizer."""
    import torch

    from pe_core.training import kvcache, methods

    timer = PhaseTimer()
    timer.wrap(meth, "head", "prompting LLM")
    timer.wrap(methods, "text_cache", "text pass")  # no store: the method calls it
    timer.wrap(kvcache.TextKVStore, "cache", "text pass")
    timer.wrap(kvcache, "text_cache", "text forward")  # inside the store
    timer.wrap(methods, "soft_pass", "soft pass")
    timer.wrap(torch.Tensor, "backward", "backward")
    timer.wrap(torch.optim.AdamW, "step", "optimizer")
    return timer


def resolve_backbone(ref: str) -> tuple[str, str]:
    """``--model``: ``family:model``, or a real-tier id whose family the tiers know."""
    known = {parse_ref(r)[1]: parse_ref(r)[0] for t in TIERS.values() for r in t.backbones}
    if ref in known:
        return known[ref], ref
    family, model = parse_ref(ref)
    if model is None:
        raise SystemExit(f"--model {ref!r}: write family:model (e.g. llama:path/to/model)")
    return family, model


def text_pass_linears(model: Any) -> list[tuple[int, int]]:
    """``(in, out)`` of every projection the suffix text pass runs per text token: every
    ``nn.Linear`` of every layer, except that the last layer stops after its keys/values
    (early exit), so only its q/k/v projections count there."""
    from torch import nn

    layers = [m for name, m in model.named_modules()
              if name.split(".")[-1].isdigit() and name.split(".")[-2] == "layers"]
    shapes = []
    for i, layer in enumerate(layers):
        for name, lin in layer.named_modules():
            if isinstance(lin, nn.Linear) and (
                    i < len(layers) - 1 or name.split(".")[-1] in ("q_proj", "k_proj", "v_proj")):
                shapes.append((lin.in_features, lin.out_features))
    return shapes


def floor_worker(args: argparse.Namespace) -> dict:
    """The text pass's matrix-multiply floor: each of its projections timed alone as one
    ``F.linear`` over the step's ``batch x 2 x seq`` tokens (the fastest of 3 calls), in
    fp32 and in bf16, summed over the layers. Nothing else of the pass (attention, norms,
    activations) is in it, so a step cannot be faster than this at this precision."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel

    from pe_core.model_refs import resolve_model

    torch.set_num_threads(args.threads)
    model = AutoModel.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    shapes = text_pass_linears(model)
    del model
    tokens = args.batch * 2 * args.seq
    out: dict[str, Any] = {"mode": "floor", "tokens": tokens, "projections": len(shapes)}
    flops = 2 * tokens * sum(i * o for i, o in shapes)
    for dtype in (torch.float32, torch.bfloat16):
        cost: dict[tuple[int, int], float] = {}
        for shape in set(shapes):
            x = torch.randn(tokens, shape[0]).to(dtype)
            w = torch.randn(shape[1], shape[0]).to(dtype)
            F.linear(x, w)  # warm-up (oneDNN builds its bf16 kernels on first use)
            times = []
            for _ in range(3):
                t = time.perf_counter()
                F.linear(x, w)
                times.append(time.perf_counter() - t)
            cost[shape] = min(times)
        seconds = sum(cost[s] for s in shapes)
        key = "fp32" if dtype == torch.float32 else "bf16"
        out[f"{key}_ms"] = 1000 * seconds
        out[f"{key}_gflops"] = flops / seconds / 1e9
    out["gflop"] = flops / 1e9
    return out


def worker(args: argparse.Namespace) -> dict:
    import torch

    if args.worker == "floor":
        return floor_worker(args)
    torch.set_num_threads(args.threads)
    from pe_core.training import api
    from pe_core.training.data import read_pairs
    from pe_core.training.settings import TrainSettings
    from pe_core.training.trainer import Trainer

    mode = args.worker
    method = {"lora": "lora", "full": "full"}.get(mode, "pe")
    store = mode == "suffix-store"
    warm_steps = args.batches if store else args.warmup  # the store fills in epoch 1
    steps = warm_steps + args.steps
    s = TrainSettings(
        method=method, steps=steps, batch_size=args.batch, hard_negatives=0, progress=False,
        save_every=10**9, lr=1e-5, bf16=args.bf16 or None, seed=0,
        text_kv_cache_mb=4096.0 if store else 0.0, lora_dropout=args.lora_dropout,
        text_pass_bf16=mode == "suffix-bf16",
        prompting_lora=args.prompting_lora if method == "pe" else 0,
    )
    data = read_pairs(records(args.batch * args.batches, args.seq * 2, seed=1))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if method == "pe":
        placement = "prefix" if mode == "prefix" else "suffix"
        _, meth, save = api._prompt_embedder(
            args.backbone, args.model, args.prompting, None, s,
            {"placement": placement, "max_length": args.seq}, device, None, data,
        )
    else:
        _, meth, save = api._lora(args.backbone, args.model, s, {"max_length": args.seq},
                                  device, None, data)
    timer = install_profile(meth) if args.profile else None
    n_trainable = sum(p.numel() for p in meth.named_trainable().values())
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _status("VmRSS")
        _reset_peak()
    wall, cpu, peak = [], [], [0.0]
    clock = {"wall": time.perf_counter(), "cpu": time.process_time()}

    def on_step(step: int, loss: float) -> None:
        if cuda:
            torch.cuda.synchronize()
        now, now_cpu = time.perf_counter(), time.process_time()
        if timer is not None:
            timer.active = step >= warm_steps  # from the next step on: the measured ones
        if step > warm_steps:
            wall.append(now - clock["wall"])
            cpu.append(now_cpu - clock["cpu"])
            if step == steps:  # before the final checkpoint and output are written
                peak[0] = (torch.cuda.max_memory_allocated() / 2**20 if cuda
                           else _status("VmHWM")) - base
        clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

    with tempfile.TemporaryDirectory() as out:
        Trainer(meth, data, s, Path(out), save, None, device, on_step).fit()
    result = {
        "mode": mode, "wall_ms": 1000 * statistics.median(wall),
        "cpu_ms": 1000 * statistics.median(cpu), "peak_mb": peak[0],
        "trainable": n_trainable,
    }
    if timer is not None:
        result["phases_ms"] = {k: 1000 * v / len(wall) for k, v in timer.seconds.items()}
    store_obj = getattr(meth, "store", None)
    if store_obj is not None and store:
        result["store_mb"] = store_obj.bytes / 2**20
        result["store_hits"] = store_obj.hits
    return result


def parser() -> argparse.ArgumentParser:
    # one torch thread per run by default: on a shared machine, 2+ threads spend most of a
    # small op waiting for each other
    p = harness.parser(__doc__, threads=1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--steps", type=int, default=6, help="measured steps per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batches", type=int, default=4, help="batches per epoch (suffix-store)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for every mode")
    p.add_argument("--lora-dropout", type=float, default=0.0,
                   help="LoRA dropout (0: the cheapest LoRA; E5-mistral used 0.1)")
    p.add_argument("--model", help="a real backbone instead of the random Llama: "
                                    "pe-real:smollm2-135m, pe-real:gemma3-270m or family:model")
    p.add_argument("--prompting", help=f"Prompting LLM with --model (default {TOY_PROMPTING})")
    p.add_argument("--prompting-lora", type=int, default=0, metavar="R",
                   help="PromptEmbedder modes: train the Prompting LLM through LoRA of rank R "
                        "(0: in full, pe train's default)")
    p.add_argument("--profile", action="store_true",
                   help="also time the phases of each step (adds a little overhead)")
    p.add_argument("--modes", default=",".join(m for m in MODES if m != "suffix-bf16"),
                   help=f"comma-separated, of {', '.join(MODES)} (suffix-bf16 is not in the "
                        "default: without bf16 units a CPU runs it slower than fp32)")
    p.add_argument("--floor", action="store_true",
                   help="with --model: also time the text pass's projections alone (fp32 and "
                        "bf16), the matrix-multiply floor under any suffix step")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = harness.parse(p, argv, quick={"hidden": 64, "layers": 2, "batch": 4, "seq": 32,
                                         "steps": 1, "warmup": 1, "batches": 2, "rounds": 1})
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    unknown = sorted(set(args.modes.split(",")) - set(MODES))
    if unknown:
        p.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.floor and not args.model:
        p.error("--floor needs --model (a real backbone)")
    harness.run("train_efficiency", args, measure, argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Each mode in its own worker process, rounds interleaved; the medians as a table."""
    modes = args.modes.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    floor: dict | None = None
    with tempfile.TemporaryDirectory() as root:
        if args.model:
            backbone, model = resolve_backbone(args.model)
            folders = {"model": model, "prompting": args.prompting or TOY_PROMPTING}
        else:
            backbone = "llama"
            folders = build_models(Path(root), args.hidden, args.layers, args.vocab)
        base_cmd = [sys.executable, "-m", "benchmarks.train_efficiency", "--backbone", backbone,
                    "--model",
                    folders["model"], "--prompting", folders["prompting"]]
        for name in ("hidden", "layers", "batch", "seq", "steps", "warmup", "batches", "threads",
                     "lora_dropout", "prompting_lora"):
            base_cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        base_cmd += [f"--{flag}" for flag in ("bf16", "profile") if getattr(args, flag)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}

        def run(mode: str) -> dict:
            proc = subprocess.run(base_cmd + ["--worker", mode], capture_output=True,
                                  text=True, env=env, cwd=harness.ROOT)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            return dict(json.loads(line[0][7:]))

        for r in range(args.rounds):
            for mode in modes:
                runs[mode].append(run(mode))
                print(f"round {r + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
        if args.floor:
            floor = run("floor")
    table = summarise(runs)
    print(render(table, args))
    if floor is not None:
        print("\n" + render_floor(floor, table))
    return {"runs": runs, "table": table, "floor": floor}


def markdown(results: dict, args: dict) -> str | None:
    """For ``python -m benchmarks.render``: the table the run printed (None for a record
    without one)."""
    if not isinstance(results.get("table"), list):
        return None
    full = argparse.Namespace(**{**vars(parser().parse_args([])), **args})
    text = render(results["table"], full)
    if results.get("floor"):
        text += "\n\n" + render_floor(results["floor"], results["table"])
    return text


def summarise(runs: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for mode, results in runs.items():
        row = {"mode": mode}
        for key in ("wall_ms", "cpu_ms", "peak_mb", "store_mb"):
            values = [r[key] for r in results if key in r]
            if values:
                row[key] = statistics.median(values)
        row["trainable"] = results[0]["trainable"]
        phases = [r["phases_ms"] for r in results if "phases_ms" in r]
        if phases:
            row["phases_ms"] = {k: statistics.median(x.get(k, 0.0) for x in phases)
                                for k in phases[0]}
        rows.append(row)
    ref = next((r for r in rows if r["mode"] == "lora"), None)
    for row in rows:
        if ref:
            row["speedup"] = ref["wall_ms"] / row["wall_ms"]
            row["cpu_speedup"] = ref["cpu_ms"] / row["cpu_ms"]
            row["memory_ratio"] = row["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else None
    return rows


def ratio_text(row: dict, key: str) -> str:
    """``1.23x``, or ``n/a`` where the run had no LoRA mode to divide by."""
    value = row.get(key)
    return "n/a" if value is None else f"{value:.2f}x"


def render_floor(floor: dict, rows: list[dict]) -> str:
    """The floor against LoRA's step: the best ratio a suffix step could read here."""
    lora = next((r["wall_ms"] for r in rows if r["mode"] == "lora"), None)
    lines = [f"Text-pass matrix-multiply floor ({floor['projections']} projections over "
             f"{floor['tokens']:,} tokens, {floor['gflop']:.0f} GFLOP; each projection alone, "
             "fastest of 3):", "",
             "| precision | floor ms | GFLOP/s | LoRA step / floor (the bound on the ratio) |",
             "|---|---:|---:|---:|"]
    for key in ("fp32", "bf16"):
        bound = "n/a" if lora is None else f"{lora / floor[f'{key}_ms']:.2f}x"
        lines.append(f"| {key} | {floor[f'{key}_ms']:.0f} | {floor[f'{key}_gflops']:.0f} | "
                     f"{bound} |")
    return "\n".join(lines)


def render(rows: list[dict], args: argparse.Namespace) -> str:
    model = (short(args.model) if args.model else
             f"Llama hidden {args.hidden}, {args.layers} layers (random)")
    head = (f"backbone {model}; batch {args.batch} "
            f"pairs (x2 texts), seq {args.seq}; {args.threads} threads; "
            f"{'bf16 autocast' if args.bf16 else 'fp32'}; "
            f"Prompting LLM "
            f"{f'LoRA r={args.prompting_lora}' if args.prompting_lora else 'trained in full'}; "
            f"LoRA dropout {args.lora_dropout}; "
            f"median of {args.rounds} runs")
    lines = [head, "",
             "| mode | ms/step | CPU ms/step | speed vs LoRA (wall) | speed vs LoRA (CPU) | "
             "peak MB above model | memory vs LoRA | trainable params |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = f"{r['peak_mb']:.0f}"
        if "store_mb" in r:
            mem += f" (incl. {r['store_mb']:.0f} store)"
        lines.append(
            f"| {r['mode']} | {r['wall_ms']:.0f} | {r['cpu_ms']:.0f} | "
            f"{ratio_text(r, 'speedup')} | {ratio_text(r, 'cpu_speedup')} | "
            f"{mem} | "
            f"{ratio_text(r, 'memory_ratio')} | {r['trainable']:,} |"
        )
    profiled = [r for r in rows if "phases_ms" in r]
    if profiled:
        names = list(dict.fromkeys(k for r in profiled for k in r["phases_ms"]))
        lines += ["", "Where a step's time goes (ms/step; text forward is inside text pass; "
                  "other = the rest of the step: loss, rows, clipping):", "",
                  "| mode | " + " | ".join(names) + " | other |", "|---" * (len(names) + 2) + "|"]
        for r in profiled:
            ph = r["phases_ms"]
            other = r["wall_ms"] - sum(v for k, v in ph.items() if k != "text forward")
            lines.append(f"| {r['mode']} | " + " | ".join(f"{ph.get(k, 0.0):.0f}" for k in names)
                         + f" | {other:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
