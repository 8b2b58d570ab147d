"""InfoNCE over in-batch negatives plus hard negatives (docs/training.md, Loss).

Every query is scored against every document of the (global) batch: all positives and all
hard negatives. A document whose text equals the query's positive is not counted as a
negative (duplicates in a batch would otherwise be false negatives).

With Matryoshka widths (Kusupati et al., 2022) the same InfoNCE is also taken on each
prefix of the embeddings, re-normalised, so that a vector cut to that width still ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pe_core.errors import ConfigError
from pe_core.training.distributed import gather_nograd, gather_with_grad, info

DEFAULT_TEMPERATURE = 0.05


def text_keys(texts: list[str]) -> torch.Tensor:
    """Stable 63-bit ids of texts (identical texts, identical ids, on every rank)."""
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big") >> 1
         for t in texts],
        dtype=torch.long,
    )


def info_nce(
    queries: torch.Tensor,
    docs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    doc_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``queries @ docs.T / temperature`` against ``labels``.

    Both inputs are L2-normalised embeddings. With ``doc_keys`` (one id per document),
    documents equal to a query's positive are masked out of its negatives.

    Example::

        loss = info_nce(q, torch.cat([pos, neg]), torch.arange(len(q)), 0.05)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scores = queries.float() @ docs.float().T / temperature
    if doc_keys is not None:
        positive_keys = doc_keys[labels]
        same = doc_keys[None, :] == positive_keys[:, None]
        same[torch.arange(len(labels)), labels] = False
        scores = scores.masked_fill(same.to(scores.device), float("-inf"))
    return F.cross_entropy(scores, labels.to(scores.device))


def check_matryoshka_dims(dims: Sequence[int], width: int) -> None:
    """:class:`ConfigError` unless every Matryoshka width is a prefix of ``width``-wide
    embeddings (checked when a run is built, before it trains or writes anything)."""
    over = sorted(d for d in set(dims) if d > width)
    if over:
        raise ConfigError(
            f"matryoshka_dims {over} exceed the embedding width {width} (the backbone's "
            f"hidden size d_B): give widths up to {width}, e.g. "
            f"{','.join(str(width // 2**i) for i in (3, 2, 1))}"
        )


def matryoshka_info_nce(
    queries: torch.Tensor,
    docs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    doc_keys: torch.Tensor | None = None,
    dims: Sequence[int] = (),
) -> torch.Tensor:
    """The mean of :func:`info_nce` at the full width and at every width in ``dims``, each
    on the re-normalised prefix of the embeddings (the vector ``truncate_dim`` serves).

    The mean, not the sum: the loss keeps one InfoNCE's scale (chance is still log of the
    batch's documents) whatever the number of widths, so temperature, learning rate and
    the checks that watch the loss read as without widths.

    Example::

        loss = matryoshka_info_nce(q, d, torch.arange(len(q)), 0.05, dims=(64, 128))
    """
    width = queries.shape[-1]
    check_matryoshka_dims(dims, width)
    losses = [
        info_nce(F.normalize(queries[..., :w].float(), dim=-1),
                 F.normalize(docs[..., :w].float(), dim=-1), labels, temperature, doc_keys)
        for w in sorted(set(dims) | {width})
    ]
    return torch.stack(losses).mean()


def contrastive_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None,
    temperature: float,
    doc_keys: torch.Tensor | None = None,
    dims: Sequence[int] = (),
) -> torch.Tensor:
    """This rank's InfoNCE with documents gathered from every rank (with gradients).

    Documents are laid out ``[positives ; negatives]`` per rank and concatenated in rank
    order. The loss is the mean over this rank's queries; DDP's gradient averaging then
    makes the update equal to one process computing the mean over the global batch.
    ``doc_keys`` are the local documents' text ids, in the same layout. ``dims``: the
    Matryoshka widths (:func:`matryoshka_info_nce`); none, plain InfoNCE.
    """
    local = positives if negatives is None else torch.cat([positives, negatives])
    docs = gather_with_grad(local)
    keys = None if doc_keys is None else gather_nograd(doc_keys.to(local.device))
    dist_info = info()
    labels = dist_info.rank * local.shape[0] + torch.arange(len(queries), device=docs.device)
    if dims:
        return matryoshka_info_nce(queries, docs, labels, temperature, keys, dims)
    return info_nce(queries, docs, labels, temperature, keys)
