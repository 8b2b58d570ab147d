"""A pe model as a sentence-transformers module: ``SentenceTransformer(folder)`` on any
folder a pe model was saved to (``PromptEmbedder.save``, ``pe push``) gives pe's vectors.

The folder's ``modules.json`` names :class:`PEModule` (see
:mod:`pe_core.integrations.st_files`). sentence-transformers (5.x) resolves
``prompt_name`` / ``prompt`` / ``default_prompt_name`` to a prompt text and passes it to
the input module's ``preprocess``; pe's prompts are instructions, so PEModule makes the
soft prompt from that text rather than prepend it to each input. Tokenisation, the
length limit and the batch forward are the ones ``PromptEmbedder.encode`` runs (its
:class:`~pe_core.model.encode_driver.Encoder`), so the vectors agree with ``encode``'s.

What stays sentence-transformers' own: ``truncate_dim`` cuts the unit vector without
re-normalising it (pass ``normalize_embeddings=True`` for pe's re-normalised prefix;
cosine ``similarity`` is the same either way), and ``normalize_embeddings`` defaults to
False, which changes nothing here because PEModule already returns unit vectors.

Example::

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("runs/x")
    q = model.encode_query(["how do I open a file?"])
    d = model.encode_document(["open() returns a file object"])
    model.similarity(q, d)
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pe_core.extras import require_extra

require_extra(["sentence_transformers"], "pe-core[st]", "pe's sentence-transformers module")

from sentence_transformers.base.modules.input_module import InputModule  # noqa: E402

from pe_core import validate  # noqa: E402
from pe_core.errors import ConfigError  # noqa: E402
from pe_core.model import output  # noqa: E402
from pe_core.model.batching import tokenize_sorted  # noqa: E402
from pe_core.model.encode_driver import Encoder  # noqa: E402

INSTRUCTION_KEY = "pe_instruction"  # the feature that carries a batch's instruction


class PEModule(InputModule):
    """The whole pe model (Prompting LLM, alignment, frozen backbone) as one input module:
    ``preprocess`` tokenises and picks the instruction, ``forward`` embeds."""

    save_in_root = True

    def __init__(self, embedder: Any) -> None:
        super().__init__()
        self.embedder = embedder

    # -- what sentence-transformers reads off its first module ---------------------------
    @property
    def tokenizer(self) -> Any:  # type: ignore[override]
        return self.embedder.tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.embedder.config.max_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        value = validate.integer(value, "max_seq_length")
        self.embedder.config = replace(self.embedder.config, max_length=value)

    def get_embedding_dimension(self) -> int:
        return int(self.embedder.dim)

    get_sentence_embedding_dimension = get_embedding_dimension  # before 5.x's rename

    def _encoder(self) -> Encoder:
        return self.embedder._encoder()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # .to(device) / .half(): cached soft prompts would stay on the old device or dtype
        self.embedder.clear_prompt_cache()
        return super()._apply(fn, *args, **kwargs)

    # -- the two steps of sentence-transformers' encode ------------------------------------
    def preprocess(self, inputs: list[Any], prompt: str | None = None,
                   **kwargs: Any) -> dict[str, Any]:
        """Token ids of ``inputs`` (in their order, cut to the model's length limit with
        ``encode``'s warning) and the instruction ``prompt`` stands for: None is the
        model's default instruction, "" no soft prompt (as in ``encode``)."""
        texts, _ = validate.texts(inputs)
        cfg = self.embedder.config
        instruction = validate.chosen_instruction(
            None, prompt, None, cfg.prompts, cfg.default_prompt_name, cfg.document_instruction)
        enc = self._encoder()
        limit = validate.text_limit(None, enc.max_length, enc.position_limit(instruction))
        batch = next(tokenize_sorted(enc.tokenizer, texts, len(texts), limit, enc.padding_side))
        back = torch.argsort(torch.tensor(batch.order))  # tokenize_sorted sorts by length
        return {"input_ids": batch.input_ids[back], "attention_mask": batch.attention_mask[back],
                INSTRUCTION_KEY: instruction}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        pooled = self._encoder().run_batch(
            features[INSTRUCTION_KEY], features["input_ids"], features["attention_mask"])
        pooled = torch.as_tensor(pooled).float()
        output.check_finite(pooled.detach().cpu().numpy())  # as encode: never a NaN vector
        features["sentence_embedding"] = F.normalize(pooled, dim=-1)
        return features

    # -- persistence -------------------------------------------------------------------------
    def save(self, output_path: str, *args: Any, safe_serialization: bool = True,
             **kwargs: Any) -> None:
        """pe's own files (sentence-transformers writes ``modules.json`` and its config)."""
        self.embedder.save(output_path)

    @classmethod
    def load(  # type: ignore[override]
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
        **kwargs: Any,
    ) -> PEModule:
        """Load the pe model saved in ``model_name_or_path`` (a folder or a Hub repo);
        a missing or damaged pe file raises pe's typed error
        (:class:`~pe_core.errors.MissingFileError`, :class:`~pe_core.errors.CorruptFileError`,
        :class:`~pe_core.errors.ConfigError`)."""
        import pe_core
        from pe_core.model.config import EmbedderConfig

        if backend != "torch":
            raise ConfigError(
                f"a pe model runs on sentence-transformers' torch backend, not {backend!r}; "
                "for ONNX export it with `pe export onnx` (pe-registry)"
            )
        local = Path(model_name_or_path) / subfolder
        if os.path.isdir(local):
            folder = local
        else:
            found = cls.load_dir_path(model_name_or_path, subfolder, token=token,
                                      cache_folder=cache_folder, revision=revision,
                                      local_files_only=local_files_only)
            folder = Path(str(found))
        EmbedderConfig.load(folder)  # MissingFileError naming the folder, before anything loads
        dtype = (model_kwargs or {}).get("torch_dtype", (model_kwargs or {}).get("dtype"))
        # on the CPU: sentence-transformers moves its modules to their device afterwards
        return cls(pe_core.load(folder, device="cpu", dtype=dtype))
