"""The training loop shared by ``pe train``, ``pe align`` and the LoRA baseline.

Per step: form the global batch (one task), take this rank's slice, run the contrastive
step (plain or GradCache), stop with :class:`TrainingDivergedError` on a non-finite loss
or gradient *before* the optimizer touches the weights, clip, step, log; the divergence
guard (:mod:`pe_core.training.guard`) then reads the loss and any dev score and may roll
the weights back to the best state with a lower lr. Checkpoints
every ``save_every`` steps, on Ctrl-C/SIGTERM (at the end of the current step) and at
the end; ``resume=True`` continues from the newest one so that the loss curve is the
one an uninterrupted run draws.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pe_core.errors import ConfigError, TrainingDivergedError
from pe_core.training import distributed as dist_util
from pe_core.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pe_core.training.data import PairData, TaskBatches, negatives_per_example
from pe_core.training.dev_eval import MAIN_SCORE, retrieval_scores
from pe_core.training.gradcache import contrastive_step
from pe_core.training.guard import DivergenceGuard, chance_loss
from pe_core.training.methods import Method, StepInfo
from pe_core.training.metrics_log import LOG_NAME, MetricsLog, read_log
from pe_core.training.run_folder import CHECKPOINTS
from pe_core.training.schedule import gumbel_tau, make_scheduler, run_steps, warmup_count
from pe_core.training.settings import TrainSettings


@dataclass
class TrainResult:
    """What a finished run returns: the trained model and where everything went."""

    out: Path
    steps: int
    loss: float | None
    dev: dict[str, float] = field(default_factory=dict)
    model: Any = None

    @property
    def log(self) -> Path:
        return self.out / LOG_NAME


class _StopRequest:
    """Turns the first Ctrl-C / SIGTERM into "stop after this step"; a second Ctrl-C
    interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        main = threading.current_thread() is threading.main_thread()
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for signum, old in self._old.items():
                signal.signal(signum, old)
            self._old.clear()


def autocast_enabled(setting: bool | None, device: torch.device) -> bool:
    """bf16 autocast: on where CUDA supports bf16 unless switched off; ``True`` forces it
    (CPU autocast works too, e.g. on CPUs with AMX)."""
    if setting is None:
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(setting)


@contextlib.contextmanager
def deterministic_kernels(setting: bool | None, device: torch.device) -> Iterator[None]:
    """torch's deterministic kernels inside the block (``None``: on CPU only), warning
    rather than failing where an op has none; the process's previous choice is restored
    afterwards, so training does not change it for the caller."""
    enabled = device.type == "cpu" if setting is None else bool(setting)
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


class Trainer:
    """Runs a :class:`~pe_core.training.methods.Method` over :class:`PairData`.

    ``resumable=False`` says that a run which stops is discarded (it was to replace
    another run), so its messages do not point at ``--resume``.

    Example::

        trainer = Trainer(method, data, TrainSettings(steps=100), Path("runs/x"),
                          save_output=lambda folder, dev: embedder.save(folder))
        result = trainer.fit()
    """

    def __init__(
        self,
        method: Method,
        data: PairData,
        settings: TrainSettings,
        out: Path,
        save_output: Callable[[Path, dict[str, float]], None],
        dev: PairData | None = None,
        device: torch.device | None = None,
        on_step: Callable[[int, float], None] | None = None,
        resumable: bool = True,
    ) -> None:
        self.method = method
        self.resumable = resumable
        self.data = data
        self.settings = settings
        self.out = Path(out)
        self.save_output = save_output
        self.dev = dev if dev is not None and len(dev) else None
        self.device = device or torch.device("cpu")
        self.on_step = on_step
        self.dist = dist_util.info()
        self.batches = TaskBatches(data, settings.batch_size, settings.seed, self.dist.world)
        self.per_epoch = len(self.batches)
        self.total = run_steps(settings.steps, settings.epochs, self.per_epoch)
        self.log = MetricsLog(self.out / LOG_NAME, enabled=self.dist.is_main)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None
        self._candidates = 2  # documents each query of the last step was scored against
        self.guard: DivergenceGuard | None = None

    # -- setup -----------------------------------------------------------------------
    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        s = self.settings
        groups = self.method.param_groups(s)
        optimizer = torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=(0.9, 0.999))
        warmup = warmup_count(s.warmup, self.total)
        return optimizer, make_scheduler(optimizer, warmup, self.total)

    def _check_frozen(self, optimizer: torch.optim.Optimizer) -> None:
        """The frozen modules get no gradient and no optimizer state (docs/training.md, What
        trains): a frozen weight that moved would silently change the backbone."""
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for module in self.method.frozen_modules():
            for name, p in module.named_parameters():
                if p.requires_grad or p.grad is not None or id(p) in in_optimizer:
                    raise RuntimeError(
                        f"frozen parameter {name} requires grad, has a gradient or is in the "
                        "optimizer: the frozen model would change (a bug in pe)"
                    )
                if p in optimizer.state:
                    raise RuntimeError(f"frozen parameter {name} has optimizer state")

    def _global_batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.per_epoch)
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self.batches.epoch(epoch))
        return self._epoch_cache[1][index]

    def _step_info(self, step: int) -> StepInfo:
        s = self.settings
        anneal = s.gumbel_anneal_steps if s.gumbel_anneal_steps is not None else self.total
        tau = gumbel_tau(step, s.gumbel_tau_start, s.gumbel_tau_end, anneal)
        # the noise is a pure function of (seed, step): a resumed run draws the same
        seed = (s.seed * 1_000_003 + step) % (2**62) if s.gumbel_noise else None
        return StepInfo(step, tau, s.straight_through, seed)

    # -- the loop ----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        s = self.settings
        optimizer, scheduler = self._optimizer()
        params = self.method.named_trainable()
        ckpt_root = self.out / CHECKPOINTS
        start, elapsed = 0, 0.0
        if resume:
            found = latest_checkpoint(ckpt_root)
            if found is None:
                raise ConfigError(f"--resume: no checkpoint under {ckpt_root}")
            state = load_checkpoint(found, params, optimizer, scheduler)
            start, elapsed = int(state["step"]), float(state.get("train_time_s", 0.0))
            if state.get("data_hash") not in (None, self.data.data_hash):
                raise ConfigError(
                    f"--resume: {found} was trained on other data (hash "
                    f"{state['data_hash'][:12]}...); use a new output folder"
                )
            self.log.truncate_after(start)
        else:
            self.log.reset()
        self._check_frozen(optimizer)
        use_bf16 = autocast_enabled(s.bf16, self.device)
        last_loss: float | None = None
        dev_scores: dict[str, float] = {}
        if self.dev is not None and s.eval_every and start == 0:
            dev_scores = self._evaluate(0, 0.0)  # where training starts (zero-shot for align)
        if s.divergence_guard:
            self.guard = self._start_guard(params, optimizer, scheduler, start, dev_scores,
                                           resume)
        bar = self._progress(start)
        self.method.train_mode(True)
        stop = _StopRequest()
        with stop.installed(), deterministic_kernels(s.deterministic, self.device):
            for step in range(start, self.total):
                t0 = time.perf_counter()
                loss = self._one_step(step, optimizer, scheduler, use_bf16)
                dt = time.perf_counter() - t0
                elapsed += dt
                last_loss = loss
                lr = scheduler.get_last_lr()[0]
                record = {
                    "step": step + 1, "epoch": step // self.per_epoch, "loss": loss, "lr": lr,
                    "tau": self._step_info(step).tau,
                    "examples_per_s": s.batch_size / dt if dt > 0 else None,
                    "step_time_s": dt, "train_time_s": elapsed,
                    **self.method.step_stats(),
                }
                self.log.write(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                                    ex_s=f"{record['examples_per_s'] or 0:.1f}")
                    bar.update(1)
                if step == start:
                    self._check_frozen(optimizer)
                done = step + 1
                due = s.eval_every and done % s.eval_every == 0 and done < self.total
                if self.dev is not None and due:
                    dev_scores = self._evaluate(done, elapsed)
                if self.guard is not None:
                    self._watch(done, loss, dev_scores if self.dev is not None and due
                                else None)
                if self.on_step is not None:
                    self.on_step(done, loss)
                stopping = dist_util.any_rank(stop.requested, self.device)
                if done % s.save_every == 0 or stopping:
                    self._save(ckpt_root, done, params, optimizer, scheduler, elapsed)
                if stopping:
                    if bar is not None:
                        bar.close()
                    message = (f"stopped after step {done}; checkpoint written to {ckpt_root} "
                               "(continue with --resume)" if self.resumable else
                               f"stopped after step {done}; {self._discarded}")
                    if self.dist.is_main:
                        print(message, file=sys.stderr)
                    raise KeyboardInterrupt(message)
        if bar is not None:
            bar.close()
        self.method.train_mode(False)
        if start < self.total or not latest_checkpoint(ckpt_root):
            self._save(ckpt_root, self.total, params, optimizer, scheduler, elapsed)
        if self.dev is not None:
            dev_scores = self._evaluate(self.total, elapsed)
            if self.guard is not None:
                dev_scores = self._restore_best_at_end(dev_scores, ckpt_root, params,
                                                       optimizer, scheduler, elapsed)
        if self.dist.is_main:
            self._write_output(dev_scores)
        dist_util.barrier()
        return TrainResult(self.out, self.total, last_loss, dev_scores)

    def _one_step(
        self, step: int, optimizer: torch.optim.Optimizer, scheduler: Any, use_bf16: bool
    ) -> float:
        s = self.settings
        batch = self._global_batch(step)
        examples = [self.data.examples[i] for i in batch]
        n_neg = negatives_per_example(examples, s.hard_negatives)
        self._candidates = len(examples) * (1 + n_neg)
        per_rank = len(examples) // self.dist.world
        local = examples[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]
        rows = self.method.rows(local, n_neg)
        def ctx() -> Any:
            return (torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16
                    else contextlib.nullcontext())

        info = self._step_info(step)
        with ctx():
            loss = contrastive_step(self.method, rows, info, s.temperature, s.grad_cache_chunk,
                                    s.matryoshka_dims)
        loss = dist_util.mean_scalar(loss, self.device)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(
            params, s.max_grad_norm if s.max_grad_norm > 0 else float("inf")
        )
        if not (math.isfinite(loss) and math.isfinite(float(norm))):
            optimizer.zero_grad(set_to_none=True)
            last = latest_checkpoint(self.out / CHECKPOINTS) if self.resumable else None
            kept, then = ((f"the last good checkpoint is {last}", "resume with --resume")
                          if last else (self._discarded, "run it again"))
            raise TrainingDivergedError(
                f"loss became {'non-finite' if not math.isfinite(loss) else f'{loss:.4g}'} "
                f"(gradient norm {float(norm):.4g}) at step {step + 1}; weights were not "
                f"updated and {kept}. Lower the learning rate or the temperature, or turn "
                f"off bf16, then {then}"
            )
        with ctx():
            self.method.apply_step(optimizer, params, rows, info)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    # -- the divergence guard ----------------------------------------------------------------
    def _start_guard(self, params: dict[str, Any], optimizer: Any, scheduler: Any,
                     start: int, dev_scores: dict[str, float], resume: bool) -> DivergenceGuard:
        s = self.settings
        # a resumed run keeps the rollbacks it already made (the log holds them up to the
        # checkpoint; its lowered lrs are in the scheduler state the checkpoint restored)
        earlier = (sum(1 for r in read_log(self.log.path) if "rollback" in r)
                   if resume and self.log.enabled and self.log.path.is_file() else 0)
        guard = DivergenceGuard(params, optimizer, scheduler, s.guard_rollbacks,
                                s.guard_lr_factor, rollbacks=earlier)
        guard.start(start, dev_scores or None)
        return guard

    def _watch(self, done: int, loss: float, dev: dict[str, float] | None) -> None:
        """After step ``done``: ask the guard, roll back on every rank alike."""
        assert self.guard is not None
        reason = self.guard.loss_sign(done, loss, chance_loss(self._candidates))
        if dev:  # only the main process has dev scores
            reason = reason or self.guard.dev_sign(done, dev)
        elif self.dev is None or not self.settings.eval_every:
            self.guard.keep_if_best_loss(done)
        if not dist_util.any_rank(reason is not None, self.device):
            return
        reason = reason or "collapse seen on rank 0"
        if self.guard.exhausted:
            self.log.write({"step": done, "guard": "no rollbacks left", "reason": reason})
            return
        event = self.guard.roll_back(done, reason)
        self.log.write({"step": done, "rollback": event})
        if self.dist.is_main:
            print(f"pe: divergence guard: {reason} at step {done}; rolled back to step "
                  f"{event['to_step']}, lr x{event['lr_factor']:g} (rollback "
                  f"{event['rollback']} of {self.guard.max_rollbacks})", file=sys.stderr)

    def _restore_best_at_end(self, dev_scores: dict[str, float], root: Path,
                             params: dict[str, Any], optimizer: Any, scheduler: Any,
                             elapsed: float) -> dict[str, float]:
        """A run that ends collapsed saves its best state instead (and its checkpoint,
        so that the output and the newest checkpoint agree)."""
        assert self.guard is not None
        scores, event = self.guard.at_end(self.total, dev_scores)
        if not dist_util.any_rank(event is not None, self.device):
            return dev_scores
        if event is not None:
            self.log.write({"step": self.total, "restored_best": event, "dev": scores,
                            "dev_score": scores[MAIN_SCORE], "train_time_s": elapsed})
            print(f"pe: divergence guard: {event['reason']}; the saved model is the best "
                  f"state, from step {event['restored_step']}", file=sys.stderr)
        self._save(root, self.total, params, optimizer, scheduler, elapsed)
        return scores

    @property
    def _discarded(self) -> str:
        # what pe_core.training.run_folder does with a run that stops without a checkpoint
        # to resume from: it never touches what the output folder held before
        return "this run was discarded and the output folder left as it was"

    # -- side effects ---------------------------------------------------------------------
    def _progress(self, start: int) -> Any:
        if not (self.settings.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total, initial=start, unit="step", desc=self.settings.method,
                    dynamic_ncols=True)

    def _save(self, root: Path, step: int, params: dict[str, Any], optimizer: Any,
              scheduler: Any, elapsed: float) -> None:
        if self.dist.is_main:
            save_checkpoint(
                root, step, params, optimizer, scheduler,
                extra={"train_time_s": elapsed, "data_hash": self.data.data_hash,
                       "method": self.settings.method},
                keep=self.settings.keep_checkpoints,
            )
        dist_util.barrier()

    def _evaluate(self, step: int, elapsed: float) -> dict[str, float]:
        scores: dict[str, float] = {}
        if self.dist.is_main:
            assert self.dev is not None
            t0 = time.perf_counter()
            scores = retrieval_scores(self.method.evaluator(), self.dev.examples,
                                      self.settings.eval_batch_size)
            self.log.write({"step": step, "dev": scores, "dev_score": scores[MAIN_SCORE],
                            "train_time_s": elapsed, "eval_time_s": time.perf_counter() - t0})
        self.method.train_mode(step < self.total)
        dist_util.barrier()
        return scores

    def _write_output(self, dev_scores: dict[str, float]) -> None:
        """The method's artifacts, written in a temp folder then moved in, so a crash
        never leaves a half-written model in ``out``."""
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=".output."))
        try:
            self.save_output(tmp, dev_scores)
            if self.guard is not None and self.guard.events:
                _record_guard(tmp, self.guard.summary())
            for item in tmp.iterdir():
                target = self.out / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _record_guard(folder: Path, summary: dict[str, Any]) -> None:
    """The guard's rollbacks go into the saved config's ``eval_results["guard"]`` (the
    LoRA baseline's ``pe_lora_config.json`` alike), so a model says how it was trained."""
    import json

    for name in ("pe_config.json", "pe_lora_config.json"):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            data.setdefault("eval_results", {})["guard"] = summary
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
