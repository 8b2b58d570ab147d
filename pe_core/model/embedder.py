"""PromptEmbedder: Prompting LLM -> alignment -> frozen backbone -> pooled, normalised."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pe_core import validate
from pe_core.errors import DataError
from pe_core.integrations.st_files import write_st_files
from pe_core.model.alignment import Alignment, median_token_norm
from pe_core.model.config import ALIGNMENT_WEIGHTS_NAME, EmbedderConfig
from pe_core.model.embedding_api import EmbeddingAPI
from pe_core.model.encode_driver import Encoder, run_encode
from pe_core.model.encoder import BackboneEncoder, max_positions
from pe_core.model.prompting import PromptingLLM

NO_PROMPT = ""  # cache key of "encode without a soft prompt"


class PromptEmbedder(EmbeddingAPI, nn.Module):
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

    def _encoder(self) -> Encoder:
        def run_batch(instruction: str | None, ids: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
            soft = self.cached_soft_prompt(instruction)
            ids, mask = ids.to(self.device), mask.to(self.device)
            s = None if soft is None else soft.expand(len(ids), *soft.shape)
            return self(ids, mask, s, normalize=False)

        return Encoder(
            self.tokenizer, self.dim, run_batch, self.config.max_length,
            self.backbone.spec.padding_side, self.config.prompts,
            self.config.default_prompt_name, self.config.document_instruction,
            self._position_limit, module=self,
        )

    def encode(
        self,
        texts: str | Sequence[str],
        instruction: str | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        normalize: bool | None = None,
        normalize_embeddings: bool | None = None,
        convert_to: str | None = None,
        convert_to_numpy: bool | None = None,
        convert_to_tensor: bool | None = None,
        show_progress_bar: bool | None = None,
        max_length: int | None = None,
        truncate_dim: int | None = None,
        precision: str = "float32",
        ranges: Any = None,
    ) -> Any:
        """Embed ``texts``; returns ``(len(texts), d_B)`` in input order.

        ``texts`` is one string (returns one vector) or a list of strings. The soft
        prompt comes from ``instruction``, or ``prompt`` (the same, by
        sentence-transformers' name), or ``prompt_name`` (one of ``config.prompts``);
        with none of them, from ``config.default_prompt_name``'s prompt, else
        ``config.document_instruction`` (which may be None: no soft prompt). Give at most
        one of the three.

        Output: unit length unless ``normalize=False`` (pe normalises by default;
        sentence-transformers' ``normalize_embeddings`` is accepted and defaults to the
        same); ``truncate_dim`` keeps the first dimensions, re-normalised (Matryoshka);
        ``precision`` is ``float32``, ``int8``, ``uint8``, ``binary`` or ``ubinary`` as in
        sentence-transformers' ``quantize_embeddings`` (int8/uint8 bucket ranges: ``ranges``
        ``(2, dim)`` from a calibration set, else the vectors of this call, which one
        text alone cannot give); numpy unless ``convert_to="torch"`` (or
        ``convert_to_tensor=True`` / ``convert_to_numpy=False``). A NaN or inf vector is
        never returned: :class:`~pe_core.errors.NonFiniteOutputError`.

        Every argument is checked first (:mod:`pe_core.validate`): a wrong type or range
        raises a :class:`~pe_core.errors.PEError`. Texts longer than ``max_length``
        tokens (default ``config.max_length``, lowered to what the backbone's positions
        leave after the soft prompt) are truncated with one warning; a ``max_length``
        beyond those positions is an error. Special-token strings in a text (``"</s>"``)
        are read as text. Batches are sorted by length; ``show_progress_bar=None`` shows
        one for more than 8 batches.

        Example::

            model.encode(["what is pe?"], instruction="Retrieve a passage that answers")
            model.encode(["what is pe?"], prompt_name="query", truncate_dim=64)
        """
        return run_encode(
            self._encoder(), texts, instruction, prompt_name=prompt_name, prompt=prompt,
            batch_size=batch_size, normalize=normalize,
            normalize_embeddings=normalize_embeddings, convert_to=convert_to,
            convert_to_numpy=convert_to_numpy, convert_to_tensor=convert_to_tensor,
            show_progress_bar=show_progress_bar, max_length=max_length,
            truncate_dim=truncate_dim, precision=precision, ranges=ranges,
        )

    # -- persistence -------------------------------------------------------------------
    def save(self, folder: str | Path, save_prompting: bool = True) -> Path:
        """Write ``alignment.safetensors``, ``pe_config.json`` (named prompts included)
        and the Prompting LLM with its tokenizer under ``prompting/``: what another
        machine needs besides the frozen backbone, which ``config.model_id`` names (a
        Hub or ``pe-real:`` id travels; a local folder path does not: there, load with
        ``pe_core.load(folder, model=...)``). ``save_prompting=False`` leaves the
        Prompting LLM out (an alignment trained for an unchanged, published Prompting
        LLM that ``config.prompting_id`` names)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.alignment.save(folder / ALIGNMENT_WEIGHTS_NAME)
        if save_prompting:
            self.prompting.model.save_pretrained(folder / "prompting", safe_serialization=True)
            self.prompting.tokenizer.save_pretrained(folder / "prompting")
        self.config.save(folder)
        write_st_files(folder, self.config)  # also a sentence-transformers model folder
        return folder

