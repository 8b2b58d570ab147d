"""Request and response bodies of OpenAI's embeddings API, as typed models.

``input`` is a string or a non-empty list of non-empty strings. OpenAI also takes token
ids; pe refuses them, because the ids clients send are OpenAI's tokenizer's (LangChain
tokenizes with tiktoken unless ``check_embedding_ctx_length=False``), which mean other
words to pe's backbone. ``instruction`` and ``prompt_name`` (a named prompt of the
model's config) are pe's own fields: the ``openai`` client sends them with
``extra_body={...}``. ``dimensions`` shortens the vectors (re-normalised). Unknown
fields are refused, so a misspelt one is not silently ignored.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``.

    Example::

        EmbeddingRequest(input=["hello", "world"], model="pe", encoding_format="base64")
    """

    model_config = ConfigDict(extra="forbid")

    input: list[str]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    dimensions: StrictInt | None = None  # 1..width, checked against the model's width
    instruction: str | None = None
    prompt_name: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError("must be a string or a list of strings")
        if not items:
            raise ValueError("must not be an empty list: send at least one text")
        for i, item in enumerate(items):
            if isinstance(item, int | list):
                raise ValueError(
                    f"item {i} is a token id or a list of them: pe serve takes text only, "
                    "send strings (LangChain's OpenAIEmbeddings sends token ids unless "
                    "given check_embedding_ctx_length=False)"
                )
            if not isinstance(item, str):
                raise ValueError(f"item {i} is {type(item).__name__}, not a string")
            if not item:
                raise ValueError(f"item {i} is an empty string: send non-empty text")
        return items


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage

    @classmethod
    def build(
        cls, vectors: np.ndarray, model: str, tokens: int, encoding_format: str
    ) -> EmbeddingResponse:
        """``base64`` is the little-endian float32 bytes, as OpenAI sends them (its
        client decodes them with ``np.frombuffer(..., dtype="float32")``)."""
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        if encoding_format == "base64":
            data = [Embedding(index=i, embedding=base64.b64encode(r.tobytes()).decode("ascii"))
                    for i, r in enumerate(rows)]
        else:
            data = [Embedding(index=i, embedding=r.tolist()) for i, r in enumerate(rows)]
        return cls(data=data, model=model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``; ``pe`` says how it is served."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "pe"
    pe: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail
