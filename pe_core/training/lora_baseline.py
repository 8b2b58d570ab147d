"""The baseline PromptEmbedder is compared with: peft LoRA on the backbone itself.

The E5-mistral recipe: LoRA r=16 on every linear layer, last-token pooling, the task
instruction on the query side only (``"Instruct: {instruction}\\nQuery: {text}"``),
documents as they are. Same data, loss, and evaluation as ``pe train`` (the shared
contrastive step and :class:`LoraEmbedder.encode`, whose signature is PromptEmbedder's).
``method="full"`` fine-tunes every backbone weight instead (a benchmark reference).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pe_core.errors import ConfigError, MissingFileError
from pe_core.model.batching import length_groups, pad_rows, tokenize_texts
from pe_core.model.config import DEFAULT_QUERY_INSTRUCTION
from pe_core.model.embedding_api import EmbeddingAPI
from pe_core.model.encode_driver import Encoder, run_encode
from pe_core.model.encoder import max_positions
from pe_core.model.layout import Layout
from pe_core.model.pooling import pool
from pe_core.training.data import Example
from pe_core.training.distributed import active, unwrap
from pe_core.training.loss import text_keys
from pe_core.training.methods import Method, Rows, StepInfo, row_texts
from pe_core.training.settings import TrainSettings

E5_TEMPLATE = "Instruct: {instruction}\nQuery: {text}"
LORA_CONFIG_NAME = "pe_lora_config.json"


class LoraEmbedder(EmbeddingAPI, nn.Module):
    """A backbone (with a peft LoRA adapter, or fully fine-tuned) used as an embedder.

    Example::

        model = LoraEmbedder.load("runs/lora")
        vecs = model.encode(["a query"], instruction="Retrieve relevant passages")
    """

    def __init__(
        self, model: Any, tokenizer: Any, spec: Any, pooling: str = "last",
        max_length: int = 512, template: str = E5_TEMPLATE, meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.pooling = pooling
        self.max_length = max_length
        self.template = template
        self.meta = dict(meta or {})
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def format_query(self, text: str, instruction: str | None) -> str:
        return text if instruction is None else self.template.format(
            instruction=instruction, text=text
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled (not normalised) last hidden states ``(B, d)``: the text alone, with
        the positions and pooling of every other path."""
        lay = Layout(attention_mask)
        hidden = self.model(
            input_ids=input_ids, attention_mask=lay.mask, position_ids=lay.positions
        ).last_hidden_state
        return pool(hidden, lay, self.pooling)

    @property
    def prompts(self) -> dict[str, str]:
        """Named prompts as :attr:`EmbedderConfig.prompts`: a query gets the instruction
        in its template, a document none (the E5 recipe)."""
        return {"query": DEFAULT_QUERY_INSTRUCTION, "document": "",
                **self.meta.get("prompts", {})}

    def _encoder(self) -> Encoder:
        def run_batch(instruction: str | None, ids: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
            return self(ids.to(self.device), mask.to(self.device))

        def prepare(texts: list[str], instruction: str | None) -> list[str]:
            return [self.format_query(t, instruction) for t in texts]

        limit = max_positions(self.model)
        return Encoder(self.tokenizer, self.dim, run_batch, self.max_length,
                       self.spec.padding_side, self.prompts,
                       position_limit=lambda instruction: limit, prepare=prepare,
                       module=self)

    def encode(self, texts: str | Sequence[str], instruction: str | None = None,
               **kwargs: Any) -> Any:
        """Embed ``texts`` (an instruction marks them as queries); the keywords and
        conventions of :meth:`PromptEmbedder.encode` (``prompt_name="query"`` is
        :data:`DEFAULT_QUERY_INSTRUCTION`, ``"document"`` no instruction)."""
        return run_encode(self._encoder(), texts, instruction, **kwargs)

    # -- persistence -----------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """peft adapter (``adapter_model.safetensors`` + ``adapter_config.json``) or, fully
        fine-tuned, the whole model; plus ``pe_lora_config.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        if self.meta.get("method") == "full":
            self.tokenizer.save_pretrained(folder)
        meta = {**self.meta, "backbone": self.spec.name, "pooling": self.pooling,
                "max_length": self.max_length, "template": self.template}
        (folder / LORA_CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, model: str | None = None, device: str | None = None) -> Any:
        """Rebuild from :meth:`save`'s folder; ``model`` overrides the recorded backbone."""
        from transformers import AutoTokenizer

        from pe_core.loading import load_backbone
        from pe_core.model_refs import resolve_model
        from pe_core.plugins import get_backbone

        folder = Path(folder)
        path = folder / LORA_CONFIG_NAME
        if not path.is_file():
            raise MissingFileError(f"{path} not found: is {folder} a `pe train --method lora` run?")
        meta = json.loads(path.read_text())
        spec = get_backbone(meta["backbone"])
        if meta.get("method") == "full":
            base = load_backbone(spec, folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        else:
            from peft import PeftModel

            base_dir = resolve_model(model or meta["model_id"])
            base = load_backbone(spec, base_dir)
            base = PeftModel.from_pretrained(base, folder)
            tokenizer = AutoTokenizer.from_pretrained(base_dir)
        out = cls(base, tokenizer, spec, meta.get("pooling", "last"),
                  meta.get("max_length", 512), meta.get("template", E5_TEMPLATE), meta)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return out.to(device).eval()


def build_lora_embedder(
    spec: Any, model_dir: Path, settings: TrainSettings, model_id: str | None = None,
    max_length: int = 512, dtype: Any = None,
) -> LoraEmbedder:
    """A backbone with a fresh LoRA adapter (or all weights trainable for ``full``)."""
    from transformers import AutoTokenizer

    from pe_core.loading import load_backbone

    kw = {"dtype": dtype} if dtype is not None else {}
    base = load_backbone(spec, model_dir, **kw)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if settings.method == "full":
        base.requires_grad_(True)
        model = base
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(base, LoraConfig(
            r=settings.lora_r, lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout, target_modules="all-linear",
        ))
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    meta = {"method": settings.method, "model_id": model_id or str(model_dir)}
    return LoraEmbedder(model, tokenizer, spec, "last", max_length, E5_TEMPLATE, meta)


class LoraMethod(Method):
    """The baseline as a training method: the trainable part is inside the encoder, so
    there is no shared head, and DDP wraps the whole :class:`LoraEmbedder`."""

    def __init__(self, embedder: LoraEmbedder, settings: TrainSettings) -> None:
        if settings.method not in ("lora", "full"):
            raise ConfigError(f"LoraMethod trains method 'lora' or 'full', not {settings.method!r}")
        self.embedder = embedder
        self.settings = settings
        self.module = embedder

    def param_groups(self, s: TrainSettings) -> list[dict[str, Any]]:
        lr = s.lora_lr if s.method == "lora" else s.lr
        params = [p for p in unwrap(self.module).parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": s.weight_decay}]

    def rows(self, examples: Sequence[Example], n_neg: int) -> Rows:
        emb = self.embedder
        texts, _ = row_texts(examples, n_neg, lambda ex: emb.format_query(ex.query, ex.instruction))
        ids = [x[: emb.max_length] for x in tokenize_texts(emb.tokenizer, texts)]
        n = len(examples)
        return Rows(texts, ids, [-1] * len(texts), [], n, n, text_keys(texts[n:]))

    def head(self, rows: Rows, info: StepInfo) -> None:
        return None

    def encode(self, rows: Rows, index: list[int], head: torch.Tensor | None) -> torch.Tensor:
        emb: Any = unwrap(self.module)
        pad_id = emb.tokenizer.pad_token_id or 0
        grad = torch.is_grad_enabled()
        # DDP allows one forward per backward: under DDP everything goes in one call;
        # alone, rows run in groups of similar length (as PromptEmbedder's text pass)
        lengths = [len(rows.ids[r]) for r in index]
        groups = [list(range(len(index)))] if active() else length_groups(lengths)
        parts, order = [], []
        for group in groups:
            ids, mask = pad_rows([rows.ids[index[i]] for i in group], pad_id,
                                 emb.spec.padding_side, emb.device)
            module = self.module if grad else emb
            parts.append(F.normalize(module(ids, mask).float(), dim=-1))
            order += group
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        if order != sorted(order):  # back to the caller's row order
            out = out[torch.argsort(torch.tensor(order, device=out.device))]
        return out

    def evaluator(self) -> Any:
        return self.embedder
