"""The alignment matrix ``A`` (``d_P x d_B``): soft tokens of the Prompting LLM -> the
backbone's raw token-embedding space (the plugin's hook does any further scaling)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pe_core.errors import CorruptFileError, DimensionMismatchError
from pe_core.model.config import ALIGNMENT_FORMAT
from pe_core.safe_io import load_tensors, save_tensors

logger = logging.getLogger(__name__)


class Alignment(nn.Module):
    """``u = s @ weight (+ bias)`` with ``weight`` of shape ``(d_P, d_B)``; with ``norm``
    set, each ``u`` is then rescaled to that L2 norm (``soft_norm="tokens"``: the
    embedder sets it from the backbone, so it is not saved with the weights).

    Example::

        A = Alignment.least_squares(prompting_embeddings, backbone_embeddings,
                                    prompting_vocab, backbone_vocab)
        A.save("runs/x/alignment.safetensors")
    """

    def __init__(self, d_P: int, d_B: int, bias: bool = False) -> None:
        super().__init__()
        self.d_P, self.d_B = d_P, d_B
        self.weight = nn.Parameter(torch.empty(d_P, d_B))
        self.bias = nn.Parameter(torch.zeros(d_B)) if bias else None
        self.norm: float | None = None
        nn.init.normal_(self.weight, std=d_P**-0.5)

    def forward(self, soft: torch.Tensor) -> torch.Tensor:
        out = soft @ self.weight.to(soft.dtype)
        if self.bias is not None:
            out = out + self.bias.to(soft.dtype)
        if self.norm is None:
            return out
        return out * (self.norm / out.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    # -- initialisation ------------------------------------------------------------
    @classmethod
    def least_squares(
        cls,
        prompting_table: torch.Tensor,
        backbone_table: torch.Tensor,
        prompting_vocab: Any,
        backbone_vocab: Any,
        ridge: float = 1e-3,
        min_shared: int = 16,
    ) -> Alignment:
        """Fit ``E_P[shared] @ A ~= E_B[shared]`` over the tokens both vocabularies share.

        The vocabularies are tokenizers, matched by the text their tokens decode to
        (:mod:`pe_core.checkpoints.vocab_match`), or prepared ``key -> id`` mappings.

        A small ridge term keeps the fit stable when few tokens are shared. With fewer
        than ``min_shared`` shared tokens a random init is returned (and logged).
        """
        d_P, d_B = prompting_table.shape[1], backbone_table.shape[1]
        align = cls(d_P, d_B)
        weight = token_map(prompting_table, backbone_table, prompting_vocab, backbone_vocab,
                           ridge, min_shared)
        if weight is None:
            logger.warning("fewer than %d tokens shared between the vocabularies; "
                           "alignment starts random", min_shared)
            return align
        with torch.no_grad():
            align.weight.copy_(weight)
        return align

    def carried_to(self, backbone_map: torch.Tensor) -> Alignment:
        """This alignment followed by a ``d_B x d_B'`` map into another backbone's
        token-embedding space: ``u' = (s @ A + b) @ M`` (see :func:`token_map`)."""
        if backbone_map.shape[0] != self.d_B:
            raise DimensionMismatchError(
                f"the backbone map has {backbone_map.shape[0]} rows, the alignment d_B={self.d_B}"
            )
        out = type(self)(self.d_P, int(backbone_map.shape[1]), bias=self.bias is not None)
        m = backbone_map.to(self.weight)
        with torch.no_grad():
            out.weight.copy_(self.weight @ m)
            if self.bias is not None and out.bias is not None:
                out.bias.copy_(self.bias @ m)
        return out

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write weights and ``d_P``/``d_B`` (plus ``metadata``) to a safetensors file."""
        header = {"format": ALIGNMENT_FORMAT, "d_P": str(self.d_P), "d_B": str(self.d_B)}
        header.update(metadata or {})
        tensors = {"weight": self.weight}
        if self.bias is not None:
            tensors["bias"] = self.bias
        return save_tensors(tensors, path, header)

    @classmethod
    def load(
        cls, path: str | Path, d_P: int | None = None, d_B: int | None = None
    ) -> Alignment:
        """Read a saved alignment; raise :class:`DimensionMismatchError` when its shape
        does not fit the expected ``d_P``/``d_B`` (or its own header)."""
        tensors, meta = load_tensors(path)
        if "weight" not in tensors or tensors["weight"].ndim != 2:
            raise DimensionMismatchError(f"{path} holds no 2-D 'weight' tensor")
        weight = tensors["weight"]
        rows, cols = weight.shape
        try:
            declared = (int(meta.get("d_P", rows)), int(meta.get("d_B", cols)))
        except ValueError:
            raise CorruptFileError(
                f"{path}: the header's d_P/d_B ({meta.get('d_P')!r}, {meta.get('d_B')!r}) are "
                "not integers; the file was edited or written by something else: save it again"
            ) from None
        if declared != (rows, cols):
            raise DimensionMismatchError(
                f"{path}: header declares d_P x d_B = {declared[0]} x {declared[1]} but the "
                f"weights are {rows} x {cols}; the file was written inconsistently"
            )
        _check_dims(path, rows, cols, d_P, d_B)
        bias = tensors.get("bias")
        if bias is not None and tuple(bias.shape) != (cols,):
            raise DimensionMismatchError(
                f"{path}: 'bias' has shape {tuple(bias.shape)}, the weight maps into "
                f"d_B={cols}; the file was written inconsistently: save it again"
            )
        align = cls(rows, cols, bias="bias" in tensors)
        with torch.no_grad():
            align.weight.copy_(weight)
            if align.bias is not None:
                align.bias.copy_(tensors["bias"])
        return align

    def extra_repr(self) -> str:
        norm = "" if self.norm is None else f", norm={self.norm:.4g}"
        return f"d_P={self.d_P}, d_B={self.d_B}, bias={self.bias is not None}{norm}"


def median_token_norm(table: torch.Tensor) -> float:
    """The median L2 norm of a token-embedding table's rows (``soft_norm="tokens"``)."""
    return float(table.detach().float().norm(dim=-1).median())


def _check_dims(path: Any, rows: int, cols: int, d_P: int | None, d_B: int | None) -> None:
    if d_P is not None and rows != d_P:
        raise DimensionMismatchError(
            f"alignment {path} expects a Prompting LLM of width d_P={rows}, but the loaded "
            f"one has {d_P}: use the prompting model the alignment was trained with"
        )
    if d_B is not None and cols != d_B:
        raise DimensionMismatchError(
            f"alignment {path} maps into d_B={cols}, but the backbone has width {d_B}: use "
            "an alignment trained for this backbone (or train one with `pe align`)"
        )


def token_map(
    source_table: torch.Tensor,
    target_table: torch.Tensor,
    source_vocab: Any,
    target_vocab: Any,
    ridge: float = 1e-3,
    min_shared: int = 16,
) -> torch.Tensor | None:
    """Ridge least-squares ``M`` with ``source_table[shared] @ M ~= target_table[shared]``
    over the tokens both vocabularies share (float32, ``d_source x d_target``); None
    with fewer than ``min_shared`` shared tokens. The vocabularies are tokenizers
    (matched by decoded text, see :func:`pe_core.checkpoints.vocab_match.token_texts`) or prepared
    ``key -> id`` mappings."""
    from pe_core.checkpoints.vocab_match import text_vocab

    source_vocab, target_vocab = text_vocab(source_vocab), text_vocab(target_vocab)
    shared = sorted(set(source_vocab) & set(target_vocab))
    if len(shared) < min_shared:
        return None
    s_idx = torch.tensor([source_vocab[t] for t in shared])
    t_idx = torch.tensor([target_vocab[t] for t in shared])
    x = source_table.detach().double().cpu()[s_idx]
    y = target_table.detach().double().cpu()[t_idx]
    gram = x.T @ x
    lam = ridge * gram.diagonal().mean().clamp(min=1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(gram + lam * eye, x.T @ y).float()
