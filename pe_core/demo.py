"""``pe demo``: the whole product, offline, on CPU, on one of two model plans.

* the toy plan (default): the embedded default family. Build (or reuse) the default
  models; write training pairs from the local corpus's train split; score the frozen
  llama backbone without a prompt and BM25; train PromptEmbedder on llama; train the
  LoRA baseline on llama; transfer to mistral, qwen and gemma by alignment-only
  training; push every run to the local registry; export the llama embedder to ONNX
  (one graph per instruction) and score it with onnxruntime; print one table.
* ``--real``: the same on the real tier (``pe-real:*``, pretrained checkpoints that
  packages ship): PromptEmbedder on SmolLM2-135M-Instruct, transfer to Gemma 3 270M by
  alignment only, and LoRA's cost per step timed over a few steps beside PromptEmbedder's
  (training LoRA to a score on a 135M model takes longer than the whole demo may).

Scores are nDCG@10 on the local retrieval task's test split.

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


@dataclass(frozen=True)
class DemoPlan:
    """Which models the demo runs: the source backbone (name, model reference: None for
    the plugin's default), the transfer targets, and the Prompting LLM."""

    source: tuple[str, str | None]
    targets: tuple[tuple[str, str | None], ...]
    prompting: str | None = None
    lora_to_score: bool = True  # train LoRA for lora_steps and score it, else time it only
    label: str = "toy"


TOY = DemoPlan(("llama", None), (("mistral", None), ("qwen", None), ("gemma", None)))
REAL = DemoPlan(("llama", "pe-real:smollm2-135m"), (("gemma", "pe-real:gemma3-270m"),),
                lora_to_score=False, label="real")


@dataclass
class DemoSettings:
    """How long each training runs (steps of ``batch_size`` pairs)."""

    train_steps: int = 120
    lora_steps: int = 60
    align_steps: int = 40
    # pe's default LoRA lr is meant for billion-parameter backbones; these few-million-
    # parameter ones need a larger one (measured: docs/benchmarks/choices.md,
    # "LoRA learning rate of pe demo")
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

    @classmethod
    def real(cls) -> DemoSettings:
        """The real plan's budget: within 20 minutes on 2 cores, a fresh cache included
        (30-layer and 18-layer backbones cost ~100x the toy ones per step). Batches of 8
        pairs of 64-token texts: larger, fewer steps diverged on SmolLM2-135M where these
        learn on both real backbones (docs/benchmarks/demo.md)."""
        return cls(train_steps=40, lora_steps=2, align_steps=40, lora_lr=1e-4,
                   batch_size=8, max_length=64)


@dataclass
class Row:
    model: str
    backbone: str
    score: float | None
    seconds: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _say(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"[pe demo] {msg}")


def run_demo(out: str | Path = "pe-demo", settings: DemoSettings | None = None,
             plan: DemoPlan = TOY) -> list[Row]:
    """Run every step of ``plan``; returns the table rows (also printed)."""
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

    source, source_model = plan.source
    if plan is TOY:
        _say("building the default model family (cached after the first run)")
        for name in DEFAULT_NAMES:
            ensure_default(name)
    else:
        from pe_core.model_refs import resolve_model

        _say("the real tier: dequantizing each GGUF once into the cache (cached after)")
        refs = [source_model, *(m for _, m in plan.targets), plan.prompting]
        for ref in dict.fromkeys(r for r in refs if r is not None):  # in order, once each
            resolve_model(ref)
    models = dict(prompting=plan.prompting)
    data = out / "train.jsonl"
    n = write_training_jsonl(data, split="train")
    _say(f"{n} training pairs from the local corpus's train split -> {data}")

    def score(model: Any, label: str) -> float:
        return evaluate(model, [TASK], name=f"pe/{label}")[TASK]

    t = time.perf_counter()
    bm25 = bm25_baseline([TASK], eval_splits=["test"])[TASK]["test"]
    rows.append(Row("BM25 (bm25s)", "-", bm25, time.perf_counter() - t))
    rows.append(_minilm_row(score))
    for name in _shipped_for(plan):
        rows.append(_shipped_row(name, score))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frozen = pe_core.load(backbone=source, model=source_model, device="cpu",
                              max_length=s.max_length, allow_untrained=True, **models)
    t = time.perf_counter()
    rows.append(Row("frozen backbone, no prompt", source,
                    score(WithoutPrompt(frozen), "frozen"), time.perf_counter() - t))
    del frozen

    runs = out / "runs"
    _say(f"training PromptEmbedder on {source} ({s.train_steps} steps)")
    t = time.perf_counter()
    common = dict(batch_size=s.batch_size, max_length=s.max_length, overwrite=True,
                  device="cpu")
    result = pe_core.train(data, backbone=source, model=source_model, out=runs / source,
                           steps=s.train_steps, **models, **common)
    trained, seconds = result.model, time.perf_counter() - t
    pe_step = _step_seconds(runs / source)
    rows.append(Row("PromptEmbedder (train)", source, score(trained, f"pe-{source}"), seconds,
                    note=f"{pe_step:.2f} s/step"))

    what = "training" if plan.lora_to_score else "timing"
    _say(f"{what} the LoRA baseline on {source} ({s.lora_steps} steps)")
    t = time.perf_counter()
    lora = pe_core.train(data, backbone=source, model=source_model, out=runs / "lora",
                         method="lora", steps=s.lora_steps, lora_lr=s.lora_lr, **common).model
    seconds = time.perf_counter() - t
    lora_step = _step_seconds(runs / "lora")
    note = f"{lora_step:.2f} s/step ({lora_step / pe_step:.1f}x PromptEmbedder's)"
    value = score(lora, f"lora-{source}") if plan.lora_to_score else None
    rows.append(Row("LoRA r=16 baseline", source, value, seconds,
                    note=note if plan.lora_to_score else f"cost only: {note}"))
    del lora

    for target, target_model in plan.targets:
        _say(f"transfer to {target}: alignment only ({s.align_steps} steps)")
        t = time.perf_counter()
        moved = pe_core.align(runs / source, data, backbone=target, model=target_model,
                              out=runs / target, steps=s.align_steps, **common).model
        seconds = time.perf_counter() - t
        rows.append(Row("PromptEmbedder (align only)", target,
                        score(moved, f"pe-{target}"), seconds))
        del moved

    if s.publish:
        _publish(runs, [source, *(t for t, _ in plan.targets)], plan.label)
    if s.export:
        rows.append(_onnx_row(trained, source, out / "onnx", score))
    _say(f"done in {time.perf_counter() - started:.0f} s")
    print(format_rows(rows))
    return rows


def _minilm_row(score: Any) -> Row:
    """all-MiniLM-L6-v2 on the same task, or an empty row naming its install."""
    from pe_core.eval.minilm import INSTALL, NAME, MiniLM, available

    label = f"{NAME} (sentence-transformers)"
    if not available():
        return Row(label, "-", None, 0.0, note=f"not installed: {INSTALL}")
    t = time.perf_counter()
    return Row(label, "-", score(MiniLM(), "minilm"), time.perf_counter() - t)


def _shipped_for(plan: DemoPlan) -> list[str]:
    """The zoo entries trained for one of the plan's backbone models."""
    from pe_core import zoo
    from pe_core.model_refs import ref_id

    models = {ref_id(m) for _, m in (plan.source, *plan.targets) if m is not None}
    return [n for n in zoo.names() if zoo.ids(n)[1] in models]


def _shipped_row(name: str, score: Any) -> Row:
    """A trained model that ships with pe, loaded as a user does: no flag, nothing
    trained here."""
    from pe_core import zoo

    t = time.perf_counter()
    model = zoo.load(name, device="cpu")
    return Row(f"PromptEmbedder, shipped (pe-zoo:{name})", model.config.backbone,
               score(model, f"zoo-{name}"), time.perf_counter() - t,
               note="trained, ships with pe")


def _step_seconds(run: Path) -> float:
    """Median training-step time of a run, from its ``log.jsonl``."""
    import json
    import statistics

    rows = [json.loads(line) for line in (run / "log.jsonl").open(encoding="utf-8")]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r]
    return statistics.median(times) if times else float("nan")


def _publish(runs: Path, names: list[str], label: str = "toy") -> None:
    from pe_core.plugins import get_plugin_manager

    store = get_plugin_manager().publishers().get("registry")
    if store is None:
        _say("no local registry installed (pip install pe-registry): skipping push")
        return
    prefix = "demo" if label == "toy" else f"demo-{label}"
    for name in names:
        entry = store.publish(runs / name, f"{prefix}-{name}")
        refs = [e.ref for e in (entry, entry.prompting) if e is not None]
        _say(f"pushed {runs / name} -> local registry: {', '.join(refs)}")


def _onnx_row(trained: Any, source: str, folder: Path, score: Any) -> Row:
    """Export one graph per instruction (queries, documents) and score them together."""
    from pe_core.data.corpus import DOC_INSTRUCTION
    from pe_core.plugins import get_plugin_manager
    from pe_core.serving.backends import ServedModel

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
    # each encode call goes to the graph baked with its instruction, as `pe serve` routes
    value = score(ServedModel.from_encoders("pe", "onnx", graphs), f"pe-{source}-onnx")
    return Row("PromptEmbedder on onnxruntime", source, value, time.perf_counter() - t,
               note=f"export {export_s:.0f} s")


def format_rows(rows: list[Row]) -> str:
    lines = ["| model | backbone | nDCG@10 (test) | seconds | note |", "|---|---|---|---|---|"]
    for r in rows:
        value = "-" if r.score is None else f"{r.score:.4f}"
        lines.append(f"| {r.model} | {r.backbone} | {value} | {r.seconds:.0f} | {r.note} |")
    return "\n".join(lines)
