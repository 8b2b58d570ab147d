"""What every embedder does to its vectors before they leave ``encode``: refuse NaN/inf,
keep the first ``truncate_dim`` dimensions (Matryoshka), normalise, quantise
(sentence-transformers' precisions), and convert.

Example::

    finish(pooled, args)   # (n, d) float32 -> what encode returns for args
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np

from pe_core.errors import NonFiniteOutputError
from pe_core.validate import EncodeArgs

EPS = 1e-12  # as torch.nn.functional.normalize: a zero vector stays zero


def check_finite(vectors: np.ndarray) -> None:
    """Raise :class:`NonFiniteOutputError` naming the first text whose vector holds
    NaN or inf: such a vector would poison every similarity computed from it."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise NonFiniteOutputError(
            f"the model produced NaN or inf for {len(rows)} of {len(vectors)} texts "
            f"(first: texts[{rows[0]}]): its weights hold NaN/inf (a diverged or damaged "
            "alignment or Prompting LLM: retrain or re-download it) or its dtype overflowed "
            "(load with dtype='float32'); no vectors were returned"
        )


def normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, EPS)).astype(np.float32, copy=False)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None
             ) -> np.ndarray:
    """``vectors`` (2-D float32) at ``precision``, with sentence-transformers'
    ``quantize_embeddings`` meaning (int8/uint8: 256 buckets between each dimension's
    minimum and maximum, from ``ranges`` or else over these vectors; binary: one bit per
    dimension, > 0).

    sentence-transformers' own function is used when it is installed, so both agree by
    construction; pe-core does not depend on sentence-transformers (a large install for
    one small function), so without it the same definition runs here in numpy."""
    if precision == "float32":
        return vectors
    if importlib.util.find_spec("sentence_transformers") is not None:
        from sentence_transformers.util import quantize_embeddings

        return np.asarray(quantize_embeddings(vectors, precision,  # type: ignore[arg-type]
                                              ranges=ranges))
    return _quantize(vectors, precision, ranges)


def _quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None
              ) -> np.ndarray:
    if precision.endswith("int8"):
        if ranges is None:
            ranges = np.stack([vectors.min(axis=0), vectors.max(axis=0)])
        starts = ranges[0]
        steps = (ranges[1] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((vectors - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(
            np.int8)
    bits = np.packbits(vectors > 0, axis=-1).reshape(len(vectors), -1)
    return (bits - 128).astype(np.int8) if precision == "binary" else bits


def empty(width: int, precision: str) -> np.ndarray:
    """The ``(0, ...)`` array ``encode([])`` returns: the shape and dtype of ``precision``."""
    if precision in ("binary", "ubinary"):
        width = math.ceil(width / 8)
    dtype = {"float32": np.float32, "int8": np.int8, "binary": np.int8}.get(precision, np.uint8)
    return np.zeros((0, width), dtype=dtype)


def finish(vectors: np.ndarray, args: EncodeArgs) -> Any:
    """``encode``'s result from the pooled float32 vectors ``(n, d)`` in input order."""
    check_finite(vectors)
    if args.truncate_dim is not None:
        vectors = vectors[:, : args.truncate_dim]
    if args.normalize:
        vectors = normalized(vectors)
    if len(vectors):
        vectors = quantize(vectors, args.precision, args.ranges)
    else:
        vectors = empty(vectors.shape[1], args.precision)
    result = vectors[0] if args.single else vectors
    if args.convert_to == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(result))
    return result
