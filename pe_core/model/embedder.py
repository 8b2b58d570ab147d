"""PromptEmbedder: Prompting LLM -> alignment -> frozen backbone -> pooled, normalised."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pe_core import validate
from pe_core.errors import DataError
from pe_core.model.alignment import Alignment, median_token_norm
from pe_core.model.batching import encode_batches
from pe_core.model.config import ALIGNMENT_WEIGHTS_NAME, EmbedderConfig
from pe_core.model.encoder import BackboneEncoder, max_positions
from pe_core.model.prompting import PromptingLLM

NO_PROMPT = ""  # cache key of "encode without a soft prompt"


class PromptEmbedder(nn.Module):
    """A text embedder: ``encode(texts, instruction=...)`` like sentence-transformers.

    The soft prompt depends only on the instruction, so at inference it is computed
    once per instruction and cached; the cache is dropped whenever the module is put
    in training mode.

    Example::

        model = pe_core.load(backbone="llama")
        vecs = model.encode(["a query"], instruction="Retrieve relevant passages")
    """

    def __init__(
        self,
        prompting: PromptingLLM,
        alignment: Alignment,
        backbone: BackboneEncoder,
        tokenizer: Any,
        config: EmbedderConfig,
    ) -> None:
        super().__init__()
        self.prompting = prompting
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self._prompt_cache: dict[str, torch.Tensor | None] = {}
        self.set_alignment(alignment)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return self.alignment.weight.device

    @property
    def dim(self) -> int:
        return self.backbone.d

    def train(self, mode: bool = True) -> PromptEmbedder:
        super().train(mode)
        if mode:  # parameters may change: cached prompts would go stale
            self._prompt_cache.clear()
        return self

    def clear_prompt_cache(self) -> None:
        self._prompt_cache.clear()

    def set_alignment(self, alignment: Alignment) -> None:
        """Use ``alignment`` from now on, with the soft-token norm ``config.soft_norm``
        asks for (the median norm of this backbone's token embeddings, or none)."""
        tokens = self.config.soft_norm == "tokens"
        alignment.norm = median_token_norm(self.backbone.embedding_table) if tokens else None
        self.alignment = alignment
        self._prompt_cache.clear()

    # -- soft prompts ----------------------------------------------------------------
    def soft_prompts(
        self,
        instructions: Sequence[str],
        tau: float = 1.0,
        hard: bool = False,
        noise_seed: int | None = None,
    ) -> torch.Tensor:
        """Aligned soft prompts ``(B, K, d_B)``; the Prompting LLM runs once per unique
        instruction in the batch."""
        unique = list(dict.fromkeys(instructions))
        soft, _ = self.prompting(unique, self.config.K, tau, hard, noise_seed)
        aligned = self.alignment(soft)
        index = torch.tensor([unique.index(i) for i in instructions], device=aligned.device)
        return aligned[index]

    def cached_soft_prompt(self, instruction: str | None) -> torch.Tensor | None:
        """``(K, d_B)`` soft prompt for one instruction, computed once (no grad)."""
        key = NO_PROMPT if instruction is None else instruction
        if key not in self._prompt_cache:
            if instruction is None:
                self._prompt_cache[key] = None
            else:
                with torch.no_grad():
                    self._prompt_cache[key] = self.soft_prompts([instruction])[0]
        return self._prompt_cache[key]

    # -- forward -----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        soft: torch.Tensor | None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Embeddings ``(B, d_B)`` for token ids and aligned soft prompts ``(B, K, d_B)``."""
        pooled = self.backbone(
            input_ids, attention_mask, soft, self.config.placement, self.config.pooling
        )
        return F.normalize(pooled.float(), dim=-1) if normalize else pooled

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        instructions: Sequence[str | None],
        tau: float = 1.0,
        hard: bool = False,
        noise_seed: int | None = None,
    ) -> torch.Tensor:
        """Training path: soft prompts with grad, then :meth:`forward`. Rows whose
        instruction is None get no prompt (only allowed when all rows are None)."""
        if all(i is None for i in instructions):
            return self(input_ids, attention_mask, None)
        if any(i is None for i in instructions):
            raise DataError("a batch mixes rows with and without instruction: give every row "
                            "an instruction, or none")
        soft = self.soft_prompts([str(i) for i in instructions], tau, hard, noise_seed)
        return self(input_ids, attention_mask, soft)

    # -- inference -----------------------------------------------------------------------
    @torch.inference_mode()
    def _position_limit(self, instruction: str | None) -> int | None:
        """Text tokens the backbone's positions leave beside ``instruction``'s prompt."""
        positions = max_positions(self.backbone.model)
        return None if positions is None else positions - (
            0 if instruction is None else self.config.K)

    def max_text_tokens(self, instruction: str | None = None) -> int:
        """Tokens a text keeps when encoded with ``instruction`` (None: the document
        instruction) and no ``max_length``: ``config.max_length``, lowered to what the
        backbone's positions leave after the soft prompt."""
        if instruction is None:
            instruction = self.config.document_instruction
        return validate.text_limit(None, self.config.max_length,
                                   self._position_limit(instruction))

    def encode(
        self,
        texts: str | Sequence[str],
        instruction: str | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        convert_to: str = "numpy",
        show_progress_bar: bool | None = None,
        max_length: int | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed ``texts``; returns ``(len(texts), d_B)`` in input order.

        ``texts`` is one string (returns one vector) or a list of strings;
        ``instruction=None`` uses ``config.document_instruction`` (which may itself be
        None: no soft prompt). Every argument is checked first (:mod:`pe_core.validate`):
        a wrong type or range raises a :class:`~pe_core.errors.PEError`. Texts longer
        than ``max_length`` tokens (default ``config.max_length``, lowered to what the
        backbone's positions leave after the soft prompt) are truncated with one
        warning; a ``max_length`` beyond those positions is an error. Batches are sorted by
        length; ``show_progress_bar=None`` shows one for more than 8 batches.

        Example::

            model.encode(["what is pe?"], instruction="Retrieve a passage that answers")
        """
        if instruction is None:
            instruction = self.config.document_instruction
        limit = self._position_limit(instruction)
        args = validate.encode_args(
            texts, instruction, batch_size, normalize, convert_to, show_progress_bar,
            max_length, limit,
        )
        if not args.texts:
            empty = torch.zeros((0, self.dim), dtype=torch.float32)
            return empty if convert_to == "torch" else empty.numpy()
        was_training = self.training
        self.eval()
        out = torch.empty((len(args.texts), self.dim), dtype=torch.float32)
        soft = self.cached_soft_prompt(args.instruction)
        batches = encode_batches(
            self.tokenizer, args.texts, args.batch_size,
            validate.text_limit(args.max_length, self.config.max_length, limit),
            self.backbone.spec.padding_side, args.show_progress_bar,
        )
        for batch in batches:
            ids = batch.input_ids.to(self.device)
            mask = batch.attention_mask.to(self.device)
            s = None if soft is None else soft.expand(len(ids), *soft.shape)
            out[batch.order] = self(ids, mask, s, normalize=args.normalize).float().cpu()
        if was_training:
            self.train()
        result = out[0] if args.single else out
        return result if convert_to == "torch" else result.numpy()

    # -- persistence -------------------------------------------------------------------
    def save(self, folder: str | Path, save_prompting: bool = False) -> Path:
        """Write ``alignment.safetensors`` + ``pe_config.json`` (and, with
        ``save_prompting``, the Prompting LLM under ``prompting/``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.alignment.save(folder / ALIGNMENT_WEIGHTS_NAME)
        if save_prompting:
            self.prompting.model.save_pretrained(folder / "prompting", safe_serialization=True)
            self.prompting.tokenizer.save_pretrained(folder / "prompting")
        self.config.save(folder)
        return folder

