"""What a training step computes, per method.

A *method* turns a batch of examples into rows of text (queries, positives, hard
negatives), owns the module that holds every trainable parameter (the one DDP wraps),
and encodes any subset of rows. The contrastive step in :mod:`pe_core.training.gradcache`
is shared by all methods, which is what makes the LoRA baseline use the same data, loss
and evaluation as PromptEmbedder.

Two methods live here (the LoRA baseline is in :mod:`pe_core.training.lora_baseline`):

* :class:`PromptEmbedderMethod` (stage 1): the Prompting LLM (full or LoRA) and the
  alignment train; the backbone is frozen. The Prompting LLM runs **once per step**, on
  the step's few unique instructions, whatever the batch size.
* :class:`AlignMethod` (transfer): the Prompting LLM is frozen too; each instruction's
  soft tokens ``s = pi @ E_P`` are computed once (no noise) and cached; only a new
  alignment trains.
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pe_core.errors import ConfigError
from pe_core.model.batching import pad_rows, tokenize_texts
from pe_core.model.encoder import BackboneEncoder
from pe_core.training.data import Example
from pe_core.training.distributed import unwrap
from pe_core.training.kvcache import TextKVStore, soft_pass, text_cache
from pe_core.training.loss import text_keys
from pe_core.training.settings import TrainSettings
from pe_core.training.sink_guard import SinkGuard, shortened_step


@dataclass
class Rows:
    """A batch laid out as rows: ``[queries ; positives ; negatives]``."""

    texts: list[str]
    ids: list[list[int]]
    prompt: list[int]  # index into ``instructions`` (the step's soft prompts), -1: none
    instructions: list[str]
    n_queries: int
    n_positives: int
    doc_keys: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class StepInfo:
    step: int
    tau: float = 1.0
    hard: bool = False
    noise_seed: int | None = None


def row_texts(
    examples: Sequence[Example], n_neg: int, query_text: Any = None
) -> tuple[list[str], list[str | None]]:
    """Texts and per-row instruction (queries carry theirs; documents get None here)."""
    fmt = query_text or (lambda ex: ex.query)
    texts = [fmt(ex) for ex in examples] + [ex.positive for ex in examples]
    texts += [neg for ex in examples for neg in ex.negatives[:n_neg]]
    instr: list[str | None] = [ex.instruction for ex in examples]
    return texts, instr + [None] * (len(texts) - len(examples))


class Method:
    """Interface every training method implements (see module docstring)."""

    module: nn.Module  # every trainable parameter; DDP wraps it

    def named_trainable(self) -> dict[str, nn.Parameter]:
        base = unwrap(self.module)
        return {n: p for n, p in base.named_parameters() if p.requires_grad}

    def param_groups(self, s: TrainSettings) -> list[dict[str, Any]]:
        raise NotImplementedError

    def rows(self, examples: Sequence[Example], n_neg: int) -> Rows:
        raise NotImplementedError

    def head(self, rows: Rows, info: StepInfo) -> torch.Tensor | None:
        """What the trainable part computes once per step (None: nothing shared)."""
        return None

    def encode(self, rows: Rows, index: list[int], head: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def head_penalty(self, head: torch.Tensor) -> torch.Tensor | None:
        """A term added to the step's loss that depends on ``head`` only (None: none)."""
        return None

    def step_stats(self) -> dict[str, float]:
        """Readings of the last step for the training log, beside the loss."""
        return {}

    def apply_step(self, optimizer: Any, params: list[torch.Tensor], rows: Rows,
                   info: StepInfo) -> None:
        """Update the parameters from their gradients (the optimizer's step)."""
        optimizer.step()

    @contextlib.contextmanager
    def no_sync(self, sync: bool) -> Iterator[None]:
        """Inside, backward does not all-reduce DDP gradients (unless ``sync``)."""
        no_sync: Any = getattr(self.module, "no_sync", None)
        if sync or no_sync is None:
            yield
        else:
            with no_sync():
                yield

    def train_mode(self, mode: bool) -> None:
        unwrap(self.module).train(mode)

    def evaluator(self) -> Any:
        """An object with ``encode(texts, instruction=None, ...)`` for the dev score."""
        raise NotImplementedError

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that must get no gradient and no optimizer state (checked)."""
        return []


class SoftPromptHead(nn.Module):
    """Prompting LLM + alignment: instructions -> aligned soft prompts ``(U, K, d_B)``."""

    def __init__(self, prompting: nn.Module, alignment: nn.Module, num_tokens: int) -> None:
        super().__init__()
        self.prompting = prompting
        self.alignment = alignment
        self.num_tokens = num_tokens

    def forward(
        self, instructions: list[str], tau: float, hard: bool, noise_seed: int | None
    ) -> torch.Tensor:
        soft, _ = self.prompting(instructions, self.num_tokens, tau, hard, noise_seed)
        return self.alignment(soft)


class CachedSoftTokenHead(nn.Module):
    """Frozen Prompting LLM: ``s = pi @ E_P`` per instruction computed once (no noise,
    as at inference) and kept; only ``alignment`` is a parameter of this module."""

    def __init__(self, prompting: nn.Module, alignment: nn.Module, num_tokens: int) -> None:
        super().__init__()
        self.alignment = alignment
        self.num_tokens = num_tokens
        self._prompting: list[Any] = [prompting]  # a list: not a submodule, DDP never sees it
        self.soft_tokens: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def cache(self, instructions: Sequence[str]) -> None:
        todo = [i for i in dict.fromkeys(instructions) if i not in self.soft_tokens]
        if todo:
            prompting = self._prompting[0]
            pi = prompting.distributions(todo, self.num_tokens)
            soft = prompting.soft_tokens(pi).float()
            for i, s in zip(todo, soft, strict=True):
                self.soft_tokens[i] = s

    def forward(self, instructions: list[str], *_: Any) -> torch.Tensor:
        self.cache(instructions)
        soft = torch.stack([self.soft_tokens[i] for i in instructions])
        return self.alignment(soft.to(next(self.alignment.parameters()).dtype))


class PromptEmbedderMethod(Method):
    """Stage 1: Prompting LLM (full or LoRA) + alignment train; backbone frozen.

    Example::

        method = PromptEmbedderMethod(embedder, TrainSettings())
        rows = method.rows(examples, n_neg=1)
        reps = method.encode(rows, list(range(len(rows))), method.head(rows, StepInfo(0)))
    """

    def __init__(self, embedder: Any, settings: TrainSettings) -> None:
        self.embedder = embedder
        self.settings = settings
        self.config = embedder.config
        self.backbone: BackboneEncoder = embedder.backbone
        self.backbone.requires_grad_(False)
        budget = int(settings.text_kv_cache_mb * 2**20)
        use_store = self.config.placement == "suffix" and budget > 0
        self.store = TextKVStore(budget, bf16=settings.text_pass_bf16) if use_store else None
        self._plain: dict[bytes, torch.Tensor] = {}  # rows with no prompt: constants
        self._checkpointing = False
        self.module = self._make_head()
        self.sink_guard = (SinkGuard(self.backbone, embedder.tokenizer, settings.sink_guard)
                           if settings.sink_guard > 0 else None)

    def _make_head(self) -> nn.Module:
        prompting = self.embedder.prompting
        if self.settings.prompting_lora:
            from peft import LoraConfig, get_peft_model

            prompting.model = get_peft_model(prompting.model, LoraConfig(
                r=self.settings.prompting_lora, lora_alpha=2 * self.settings.prompting_lora,
                lora_dropout=0.0, target_modules="all-linear",
            ))
        else:
            prompting.model.requires_grad_(True)
        self.embedder.alignment.requires_grad_(True)
        return SoftPromptHead(prompting, self.embedder.alignment, self.config.K)

    def param_groups(self, s: TrainSettings) -> list[dict[str, Any]]:
        p_lr = s.lora_lr if s.prompting_lora else s.lr
        base: Any = unwrap(self.module)
        decay = [p for n, p in base.prompting.named_parameters() if p.requires_grad and p.ndim >= 2]
        rest = [p for n, p in base.prompting.named_parameters() if p.requires_grad and p.ndim < 2]
        groups: list[dict[str, Any]] = [
            {"params": decay, "lr": p_lr, "weight_decay": s.weight_decay},
            {"params": rest, "lr": p_lr, "weight_decay": 0.0},
            {"params": [p for p in base.alignment.parameters() if p.requires_grad],
             "lr": s.alignment_lr, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.backbone]

    # -- rows ------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        # as encode reads texts (special-token strings are text), so training sees them alike
        ids = tokenize_texts(self.embedder.tokenizer, texts)
        return [x[: self.config.max_length] for x in ids]

    def rows(self, examples: Sequence[Example], n_neg: int) -> Rows:
        texts, instr = row_texts(examples, n_neg)
        doc_instruction = self.config.document_instruction
        # a query without instruction gets what encode(instruction=None) gives it
        per_row = [
            (i if i is not None else doc_instruction) if r < len(examples) else doc_instruction
            for r, i in enumerate(instr)
        ]
        unique = [i for i in dict.fromkeys(per_row) if i is not None]
        if not unique:
            raise ConfigError(
                "nothing would train: these records have no instruction and "
                "document_instruction is None, so no row gets a soft prompt; add "
                "instructions or set document_instruction"
            )
        prompt = [-1 if i is None else unique.index(i) for i in per_row]
        return Rows(
            texts, self._tokenize(texts), prompt, unique, len(examples), len(examples),
            text_keys(texts[len(examples):]),
        )

    # -- the step ----------------------------------------------------------------------
    def head(self, rows: Rows, info: StepInfo) -> torch.Tensor | None:
        if not rows.instructions:
            return None
        return self.module(rows.instructions, info.tau, info.hard, info.noise_seed)

    def head_penalty(self, head: torch.Tensor) -> torch.Tensor | None:
        return None if self.sink_guard is None else self.sink_guard(head)

    def step_stats(self) -> dict[str, float]:
        return {} if self.sink_guard is None else dict(self.sink_guard.last)

    def apply_step(self, optimizer: Any, params: list[torch.Tensor], rows: Rows,
                   info: StepInfo) -> None:
        """The optimizer's step, shortened where it would turn a soft token into a sink
        (:func:`~pe_core.training.sink_guard.shortened_step`)."""
        guard = self.sink_guard
        if guard is None or not rows.instructions:
            optimizer.step()
            return

        def ratio() -> float:
            head = self.module(rows.instructions, info.tau, info.hard, info.noise_seed)
            return float(guard.ratios(head).max())

        # a token already past the limit (the penalty is pulling it out) may stay there
        limit = max(guard.limit, guard.last.get("sink_ratio", 0.0))
        guard.last["sink_halvings"] = shortened_step(optimizer.step, params, ratio, limit)

    def encode(self, rows: Rows, index: list[int], head: torch.Tensor | None) -> torch.Tensor:
        """Normalised embeddings of ``rows[index]`` (grad follows ``head``)."""
        prompted = [r for r in index if rows.prompt[r] >= 0]
        plain = [r for r in index if rows.prompt[r] < 0]
        parts, order = [], []
        if prompted:
            assert head is not None
            soft = head[torch.tensor([rows.prompt[r] for r in prompted], device=head.device)]
            parts.append(self._encode_prompted([rows.ids[r] for r in prompted], soft))
            order += prompted
        if plain:
            parts.append(self._encode_plain([rows.ids[r] for r in plain]))
            order += plain
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        if order != index:
            where = {r: i for i, r in enumerate(order)}
            out = out[torch.tensor([where[r] for r in index], device=out.device)]
        return out

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.embedder.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        return pad_rows(ids, pad_id, self.backbone.spec.padding_side, self.embedder.device)

    def _encode_prompted(self, ids: list[list[int]], soft: torch.Tensor) -> torch.Tensor:
        input_ids, mask = self._pad(ids)
        if self.config.placement == "suffix":
            if self.store is not None:
                cache = self.store.cache(self.backbone, input_ids, mask)
            else:
                cache = text_cache(self.backbone, input_ids, mask,
                                   self.settings.text_pass_bf16)
            pooled = soft_pass(self.backbone, cache, mask, soft, self.config.pooling)
        else:
            with self._checkpointed():
                pooled = self.backbone(input_ids, mask, soft, "prefix", self.config.pooling)
        return F.normalize(pooled.float(), dim=-1)

    @torch.no_grad()
    def _encode_plain(self, ids: list[list[int]]) -> torch.Tensor:
        # no soft prompt: nothing trainable reaches these rows, so they are constants
        keys = [array("q", x).tobytes() for x in ids]
        todo = [i for i, k in enumerate(keys) if k not in self._plain]
        if todo:
            input_ids, mask = self._pad([ids[i] for i in todo])
            pooled = self.backbone(
                input_ids, mask, None, self.config.placement, self.config.pooling
            )
            reps = F.normalize(pooled.float(), dim=-1)
            if self.store is None:
                got = dict(zip(todo, reps, strict=True))
                return torch.stack([got[i] for i in range(len(ids))])
            for i, rep in zip(todo, reps, strict=True):
                self._plain[keys[i]] = rep
        return torch.stack([self._plain[k] for k in keys])

    @contextlib.contextmanager
    def _checkpointed(self) -> Iterator[None]:
        """Per-layer activation checkpointing of the frozen backbone (prefix placement).

        transformers checkpoints a layer only when the layer is in training mode; the
        frozen backbone stays in eval mode (no dropout), so only the layers' own flag is
        raised, for this forward."""
        if not (self.settings.gradient_checkpointing and torch.is_grad_enabled()):
            yield
            return
        from transformers.modeling_layers import GradientCheckpointingLayer

        model = self.backbone.model
        if not self._checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.eval()
            self._checkpointing = True
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        for m in layers:
            m.training = True
        try:
            yield
        finally:
            for m in layers:
                m.training = False

    def train_mode(self, mode: bool) -> None:
        self.embedder.train(mode)

    def evaluator(self) -> Any:
        return self.embedder


class AlignMethod(PromptEmbedderMethod):
    """Transfer to a new backbone: Prompting LLM frozen, cached soft tokens, only the new
    alignment trains (from its least-squares initialisation)."""

    def _make_head(self) -> nn.Module:
        self.embedder.prompting.requires_grad_(False)
        self.embedder.prompting.eval()
        self.embedder.alignment.requires_grad_(True)
        return CachedSoftTokenHead(self.embedder.prompting, self.embedder.alignment, self.config.K)

    def param_groups(self, s: TrainSettings) -> list[dict[str, Any]]:
        params = [p for p in unwrap(self.module).parameters() if p.requires_grad]
        return [{"params": params, "lr": s.alignment_lr, "weight_decay": 0.0}]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.backbone, self.embedder.prompting]

    def train_mode(self, mode: bool) -> None:
        self.embedder.train(mode)
        self.embedder.prompting.eval()  # frozen: its soft tokens are cached as at inference
