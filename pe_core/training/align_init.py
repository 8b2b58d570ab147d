"""Where ``pe align``'s new alignment starts.

``init="source"`` (the default) carries the source run's *trained* alignment over:
``A' = A_source @ M`` with ``M`` the ridge least-squares map from the source backbone's
token embeddings to the new backbone's over the tokens both vocabularies share. What
stage 1 taught the alignment (where the soft tokens should land) survives the move, so
the transfer starts far above the plain fit (measured: docs/transfer.md).

``init="tokens"`` is the plain least-squares fit ``E_P[shared] @ A' ~= E_B'[shared]``: no
use of the source alignment. ``"source"`` falls back to it (with a warning) when the
source backbone's weights cannot be read offline or the two backbones share too few
tokens.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, PEError
from pe_core.model.alignment import Alignment, token_map
from pe_core.model.config import ALIGNMENT_WEIGHTS_NAME, EmbedderConfig

INITS = ("source", "tokens")


def carried_alignment(source: Path, src_cfg: EmbedderConfig, embedder: Any) -> Alignment | None:
    """The source run's alignment carried to ``embedder``'s backbone, or None (warned)
    when the source backbone cannot be read here. A missing or corrupt source alignment
    raises (:class:`MissingFileError`, :class:`CorruptFileError`): the run is broken."""
    from transformers import AutoTokenizer

    from pe_core.checkpoints.token_tables import read_token_embeddings
    from pe_core.model_refs import resolve_model

    trained = Alignment.load(source / ALIGNMENT_WEIGHTS_NAME, d_P=embedder.alignment.d_P)
    try:
        if src_cfg.model_id is None:
            raise ConfigError(f"{source} records no source model_id")
        folder = resolve_model(src_cfg.model_id)
        table = read_token_embeddings(folder)
        source_tokenizer = AutoTokenizer.from_pretrained(folder)
    except (PEError, OSError) as err:
        warnings.warn(f"cannot carry {source}'s alignment to the new backbone ({err}); "
                      "starting from the token least-squares fit instead", stacklevel=3)
        return None
    if table.shape[1] != trained.d_B:
        warnings.warn(f"{src_cfg.model_id}'s embeddings are {table.shape[1]} wide but the "
                      f"alignment maps to {trained.d_B}; using the token fit", stacklevel=3)
        return None
    m = token_map(table, embedder.backbone.embedding_table, source_tokenizer, embedder.tokenizer)
    if m is None:
        warnings.warn("the source and new backbones share too few tokens to carry the "
                      "alignment; using the token fit", stacklevel=3)
        return None
    return trained.carried_to(m)


def check_init(init: str) -> None:
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
