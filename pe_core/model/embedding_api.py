"""The sentence-transformers-style methods every pe embedder shares (the torch embedder,
the LoRA baseline, the ONNX embedder), written once over the class's own ``encode`` and
``dim``. Torch-free at import, so the ONNX embedder stays torch-free too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class _Embedder(Protocol):
    @property
    def dim(self) -> int: ...

    def encode(self, texts: Any, instruction: str | None = None, **kwargs: Any) -> Any: ...


class EmbeddingAPI:
    """``encode_query``, ``encode_document``, ``similarity`` and the embedding width, for a
    class that has ``encode(texts, instruction=None, **kwargs)`` and ``dim``.

    Example::

        model.similarity(model.encode_query(["what is pe?"]), model.encode_document(docs))
    """

    similarity_fn_name = "cosine"

    def encode_query(self: _Embedder, texts: str | Sequence[str], **kwargs: Any) -> Any:
        """:meth:`encode` with the prompt named "query" (unless ``kwargs`` picks one)."""
        from pe_core.model.encode_driver import encode_with_prompt

        return encode_with_prompt(self.encode, texts, "query", kwargs)

    def encode_document(self: _Embedder, texts: str | Sequence[str], **kwargs: Any) -> Any:
        """:meth:`encode` with the prompt named "document" (unless ``kwargs`` picks one)."""
        from pe_core.model.encode_driver import encode_with_prompt

        return encode_with_prompt(self.encode, texts, "document", kwargs)

    @staticmethod
    def similarity(a: Any, b: Any) -> Any:
        """Cosine similarity matrix ``(len(a), len(b))`` of two sets of vectors."""
        from pe_core.model.encode_driver import similarity

        return similarity(a, b)

    def get_sentence_embedding_dimension(self: _Embedder) -> int:
        """The width of :meth:`encode`'s vectors (before ``truncate_dim``)."""
        return self.dim
