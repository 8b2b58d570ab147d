"""One contrastive step, plain or GradCache-style (cached embedding gradients).

GradCache (Gao et al., 2021) makes the effective batch independent of memory: embed
every row without grad, take the loss and its gradient with respect to the embeddings,
then re-encode the rows chunk by chunk *with* grad and back-propagate the cached
embedding gradients. It is exact only if the second pass computes the same embeddings
as the first.

For PromptEmbedder that means the same Gumbel noise. pe goes one step further than
replaying the noise: the trainable part (Prompting LLM + alignment) runs **once** per
step, producing the step's soft prompts from a seed derived from the step number; both
passes read those same soft prompts through a detached leaf, and the leaf's
accumulated gradient is back-propagated into the Prompting LLM once at the end. The
noise is therefore identical by construction (and replays after a resume), and the
Prompting LLM costs one pass per step instead of one per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pe_core.training.loss import contrastive_loss
from pe_core.training.methods import Method, Rows, StepInfo


def _loss(rows: Rows, reps: torch.Tensor, temperature: float,
          dims: Sequence[int] = ()) -> torch.Tensor:
    nq, npos = rows.n_queries, rows.n_positives
    negatives = reps[nq + npos :] if len(reps) > nq + npos else None
    keys = rows.doc_keys if len(rows.doc_keys) else None
    return contrastive_loss(reps[:nq], reps[nq : nq + npos], negatives, temperature, keys,
                            dims)


def contrastive_step(
    method: Method, rows: Rows, info: StepInfo, temperature: float, chunk: int = 0,
    dims: Sequence[int] = (),
) -> float:
    """Forward and backward of one step's InfoNCE (plus the method's
    :meth:`~pe_core.training.methods.Method.head_penalty`); returns the InfoNCE loss.
    Gradients are left in ``.grad`` (the optimizer step is the caller's).

    ``chunk`` > 0 encodes at most that many rows at a time with grad (GradCache); the
    resulting gradients equal the plain step's. ``dims``: Matryoshka widths
    (:func:`~pe_core.training.loss.matryoshka_info_nce`).

    Example::

        loss = contrastive_step(method, method.rows(batch, 1), StepInfo(step=0), 0.05)
    """
    n = len(rows)
    head = method.head(rows, info)
    penalty = None if head is None else method.head_penalty(head)
    if chunk <= 0 or chunk >= n:
        reps = method.encode(rows, list(range(n)), head)
        loss = _loss(rows, reps, temperature, dims)
        (loss if penalty is None else loss + penalty).backward()
        return float(loss.detach())

    leaf = None if head is None else head.detach().requires_grad_(True)
    chunks = [list(range(i, min(n, i + chunk))) for i in range(0, n, chunk)]
    with torch.no_grad():
        reps = torch.cat([method.encode(rows, c, leaf) for c in chunks])
    reps.requires_grad_(True)
    loss = _loss(rows, reps, temperature, dims)
    loss.backward()
    grads = reps.grad
    assert grads is not None  # the loss depends on every row
    for i, c in enumerate(chunks):
        # with no shared head, the last chunk's backward is the one DDP synchronises
        sync = head is None and i == len(chunks) - 1
        with method.no_sync(sync):
            again = method.encode(rows, c, leaf)
            if again.requires_grad:
                again.backward(grads[c[0] : c[-1] + 1])
    if head is not None and leaf is not None:
        # always backward through the head, even with a zero gradient: under DDP every
        # rank must reach the all-reduce
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(head)
        # one backward through the head for both terms: one all-reduce under DDP
        if penalty is None:
            head.backward(grad)
        else:
            torch.autograd.backward([head, penalty], [grad, torch.ones_like(penalty)])
    return float(loss.detach())
