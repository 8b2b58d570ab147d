"""The alignment matrix ``A`` (``d_P x d_B``): soft tokens of the Prompting LLM -> the
backbone's raw token-embedding space (the plugin's hook does any further scaling)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pe_core.config import ALIGNMENT_FORMAT
from pe_core.errors import DimensionMismatchError
from pe_core.safe_io import load_tensors, save_tensors

logger = logging.getLogger(__name__)


class Alignment(nn.Module):
    """``u = s @ weight (+ bias)`` with ``weight`` of shape ``(d_P, d_B)``.

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
        nn.init.normal_(self.weight, std=d_P**-0.5)

    def forward(self, soft: torch.Tensor) -> torch.Tensor:
        out = soft @ self.weight.to(soft.dtype)
        return out if self.bias is None else out + self.bias.to(soft.dtype)

    # -- initialisation ------------------------------------------------------------
    @classmethod
    def least_squares(
        cls,
        prompting_table: torch.Tensor,
        backbone_table: torch.Tensor,
        prompting_vocab: dict[str, int],
        backbone_vocab: dict[str, int],
        ridge: float = 1e-3,
        min_shared: int = 16,
    ) -> Alignment:
        """Fit ``E_P[shared] @ A ~= E_B[shared]`` over the tokens both vocabularies share.

        A small ridge term keeps the fit stable when few tokens are shared. With fewer
        than ``min_shared`` shared tokens a random init is returned (and logged).
        """
        d_P, d_B = prompting_table.shape[1], backbone_table.shape[1]
        shared = sorted(set(prompting_vocab) & set(backbone_vocab))
        align = cls(d_P, d_B)
        if len(shared) < min_shared:
            logger.warning(
                "only %d tokens shared between the vocabularies; alignment starts random",
                len(shared),
            )
            return align
        p_idx = torch.tensor([prompting_vocab[t] for t in shared])
        b_idx = torch.tensor([backbone_vocab[t] for t in shared])
        x = prompting_table.detach().double().cpu()[p_idx]
        y = backbone_table.detach().double().cpu()[b_idx]
        gram = x.T @ x
        lam = ridge * gram.diagonal().mean().clamp(min=1e-12)
        weight = torch.linalg.solve(gram + lam * torch.eye(d_P, dtype=gram.dtype), x.T @ y)
        with torch.no_grad():
            align.weight.copy_(weight.float())
        return align

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
        declared = (int(meta.get("d_P", rows)), int(meta.get("d_B", cols)))
        if declared != (rows, cols):
            raise DimensionMismatchError(
                f"{path}: header declares d_P x d_B = {declared[0]} x {declared[1]} but the "
                f"weights are {rows} x {cols}; the file was written inconsistently"
            )
        _check_dims(path, rows, cols, d_P, d_B)
        align = cls(rows, cols, bias="bias" in tensors)
        with torch.no_grad():
            align.weight.copy_(weight)
            if align.bias is not None:
                align.bias.copy_(tensors["bias"])
        return align

    def extra_repr(self) -> str:
        return f"d_P={self.d_P}, d_B={self.d_B}, bias={self.bias is not None}"


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
