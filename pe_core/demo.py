"""``pe demo``: the whole product on the embedded default family, offline, on CPU.

Steps: build (or reuse) the default models; write training pairs from the local corpus's
train split; score the frozen llama backbone without a prompt and BM25; train
PromptEmbedder on llama; train the LoRA baseline on llama; transfer to mistral, qwen and
gemma by alignment-only training; push every run to the local registry; export the llama
embedder to ONNX (one graph per instruction) and score it with onnxruntime; print one
table. Scores are nDCG@10 on the local retrieval task's test split.

Example::

    from pe_core.demo import run_demo
    rows = run_demo("pe-demo")
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASK = "PELocalDocstringRetrieval"
SOURCE = "llama"
TARGETS = ("mistral", "qwen", "gemma")


@dataclass
class DemoSettings:
    """How long each training runs (steps of ``batch_size`` pairs)."""

    train_steps: int = 120
    lora_steps: int = 60
    align_steps: int = 40
    # LoRA lr for these few-million-parameter backbones, picked on the dev split (100
    # steps, dev nDCG@10): 1e-3 0.14, 3e-3 0.33, 6e-3 0.32, 1e-2 collapses (0.02). The
    # E5 recipe's 2e-4 (pe's default, for billion-parameter backbones) stays at 0.06.
    lora_lr: float = 3e-3
    batch_size: int = 32
    max_length: int = 128  # tokens per text: docstrings are long, CPU time is short
    publish: bool = True
    export: bool = True

    def __post_init__(self) -> None:
        from pe_core import validate

        for name in ("train_steps", "lora_steps", "align_steps", "batch_size", "max_length"):
            validate.integer(getattr(self, name), name)
        validate.learning_rate(self.lora_lr, "lora_lr")


@dataclass
class Row:
    model: str
    backbone: str
    score: float
    seconds: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _say(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"[pe demo] {msg}")


def run_demo(out: str | Path = "pe-demo", settings: DemoSettings | None = None) -> list[Row]:
    """Run every step; returns the table rows (also printed)."""
    from pe_core.eval.mteb_env import prepare_mteb

    prepare_mteb()
    import pe_core
    from pe_core.data.corpus import write_training_jsonl
    from pe_core.defaults import DEFAULT_NAMES, ensure_default
    from pe_core.eval.bm25 import bm25_baseline
    from pe_core.eval.run import WithoutPrompt, evaluate

    s = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    started = time.perf_counter()

    _say("building the default model family (cached after the first run)")
    for name in DEFAULT_NAMES:
        ensure_default(name)
    data = out / "train.jsonl"
    n = write_training_jsonl(data, split="train")
    _say(f"{n} training pairs from the local corpus's train split -> {data}")

    def score(model: Any, label: str) -> float:
        return evaluate(model, [TASK], name=f"pe/{label}")[TASK]

    t = time.perf_counter()
    bm25 = bm25_baseline([TASK], eval_splits=["test"])[TASK]["test"]
    rows.append(Row("BM25 (bm25s)", "-", bm25, time.perf_counter() - t))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frozen = pe_core.load(backbone=SOURCE, device="cpu", max_length=s.max_length)
    t = time.perf_counter()
    rows.append(Row("frozen backbone, no prompt", SOURCE,
                    score(WithoutPrompt(frozen), "frozen"), time.perf_counter() - t))
    del frozen

    runs = out / "runs"
    _say(f"training PromptEmbedder on {SOURCE} ({s.train_steps} steps)")
    t = time.perf_counter()
    common = dict(batch_size=s.batch_size, max_length=s.max_length, overwrite=True,
                  device="cpu")
    trained = pe_core.train(data, backbone=SOURCE, out=runs / SOURCE, steps=s.train_steps,
                            **common).model
    seconds = time.perf_counter() - t
    rows.append(Row("PromptEmbedder (train)", SOURCE, score(trained, "pe-llama"), seconds))

    _say(f"training the LoRA baseline on {SOURCE} ({s.lora_steps} steps)")
    t = time.perf_counter()
    lora = pe_core.train(data, backbone=SOURCE, out=runs / "lora", method="lora",
                         steps=s.lora_steps, lora_lr=s.lora_lr, **common).model
    seconds = time.perf_counter() - t
    rows.append(Row("LoRA r=16 baseline", SOURCE, score(lora, "lora-llama"), seconds))
    del lora

    for target in TARGETS:
        _say(f"transfer to {target}: alignment only ({s.align_steps} steps)")
        t = time.perf_counter()
        moved = pe_core.align(runs / SOURCE, data, backbone=target, out=runs / target,
                              steps=s.align_steps, **common).model
        seconds = time.perf_counter() - t
        rows.append(Row("PromptEmbedder (align only)", target,
                        score(moved, f"pe-{target}"), seconds))
        del moved

    if s.publish:
        _publish(runs, rows)
    if s.export:
        rows.append(_onnx_row(trained, out / "onnx", score))
    _say(f"done in {time.perf_counter() - started:.0f} s")
    print(format_rows(rows))
    return rows


def _publish(runs: Path, rows: list[Row]) -> None:
    from pe_core.plugins import get_plugin_manager

    store = get_plugin_manager().resolvers().get("registry")
    if store is None or store.publish is None:
        _say("no local registry installed (pip install pe-registry): skipping push")
        return
    for name in (SOURCE, *TARGETS):
        entry = store.publish(runs / name, f"demo-{name}")
        refs = [e.ref for e in (entry, entry.prompting) if e is not None]
        _say(f"pushed {runs / name} -> local registry: {', '.join(refs)}")


def _onnx_row(trained: Any, folder: Path, score: Any) -> Row:
    """Export one graph per instruction (queries, documents) and score them together."""
    from pe_core.data.corpus import DOC_INSTRUCTION
    from pe_core.plugins import get_plugin_manager

    onnx = get_plugin_manager().exporters().get("onnx")
    doc = trained.config.document_instruction
    t = time.perf_counter()
    graphs = {
        DOC_INSTRUCTION: onnx.load(onnx.export(trained, DOC_INSTRUCTION, folder / "query",
                                               overwrite=True)),
        doc: onnx.load(onnx.export(trained, doc, folder / "document", overwrite=True)),
    }
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    value = score(_ByInstruction(graphs, doc), "pe-llama-onnx")
    return Row("PromptEmbedder on onnxruntime", SOURCE, value, time.perf_counter() - t,
               note=f"export {export_s:.0f} s")


class _ByInstruction:
    """Route each encode call to the ONNX graph baked with its instruction."""

    def __init__(self, graphs: dict[Any, Any], default: Any) -> None:
        self.graphs, self.default = graphs, default

    def encode(self, texts: Any, instruction: str | None = None, **kw: Any) -> Any:
        graph = self.graphs[instruction if instruction is not None else self.default]
        return graph.encode(texts, **kw)


def format_rows(rows: list[Row]) -> str:
    lines = ["| model | backbone | nDCG@10 (test) | seconds | note |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.backbone} | {r.score:.4f} | {r.seconds:.0f} | {r.note} |")
    return "\n".join(lines)
