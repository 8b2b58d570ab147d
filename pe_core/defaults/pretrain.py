"""Next-token pretraining of a small causal LM on local text, and its perplexity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pe_core.errors import DataError, TrainingDivergedError


@dataclass
class TokenStream:
    """Documents tokenized and concatenated (each closed by ``eos``), with their byte count."""

    ids: Any  # 1-D torch.LongTensor
    n_bytes: int

    def blocks(self, seq_len: int) -> Any:
        """The stream cut into non-overlapping ``(n, seq_len)`` blocks (the tail is dropped)."""
        n = len(self.ids) // seq_len
        if n == 0:
            raise DataError(f"text too short for one block of {seq_len} tokens")
        return self.ids[: n * seq_len].view(n, seq_len)


def tokenize_stream(tokenizer: Any, texts: Sequence[str]) -> TokenStream:
    """Tokenize ``texts`` (with the tokenizer's own bos handling) into one stream."""
    import torch

    if not texts:
        raise DataError("no text to tokenize")
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for row in tokenizer(list(texts))["input_ids"]:
        ids.extend(row)
        ids.append(eos)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return TokenStream(torch.tensor(ids, dtype=torch.long), n_bytes)


@dataclass
class Perplexity:
    """Token-level perplexity, and bits per byte (comparable across tokenizers)."""

    ppl: float
    bits_per_byte: float
    tokens: int


def perplexity(model: Any, stream: TokenStream, seq_len: int, max_blocks: int) -> Perplexity:
    """Perplexity of ``model`` over the first ``max_blocks`` blocks of ``stream``.

    Example::

        >>> perplexity(model, tokenize_stream(tok, dev_texts), 128, 64).ppl  # doctest: +SKIP
        41.7
    """
    import torch

    blocks = stream.blocks(seq_len)[:max_blocks]
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for chunk in blocks.split(16):
            out = model(input_ids=chunk, labels=chunk)
            # HF averages over the (seq_len - 1) predicted positions of every row
            predicted = chunk.shape[0] * (chunk.shape[1] - 1)
            nll += float(out.loss) * predicted
            count += predicted
    mean = nll / count
    # bytes per token of the whole stream converts nats/token into bits/byte
    bytes_per_token = stream.n_bytes / len(stream.ids)
    return Perplexity(math.exp(mean), mean / math.log(2) / bytes_per_token, count)


def pretrain(
    model: Any,
    stream: TokenStream,
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    warmup_frac: float,
    weight_decay: float,
    seed: int,
    desc: str = "pretrain",
) -> list[float]:
    """Train ``model`` for ``steps`` steps on random ``seq_len`` windows of ``stream``.

    AdamW, linear warmup then cosine decay to 10 %, gradient clipping at 1. Batches come
    from a generator seeded with ``seed``, so the run is reproducible. Returns the losses.

    Example::

        >>> losses = pretrain(model, stream, steps=20, batch_size=4, seq_len=32, lr=3e-3,
        ...                   warmup_frac=0.1, weight_decay=0.01, seed=0)  # doctest: +SKIP
    """
    import torch
    from tqdm.auto import tqdm

    if len(stream.ids) <= seq_len + 1:
        raise DataError(f"training text has {len(stream.ids)} tokens, fewer than one window")
    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, int(steps * warmup_frac))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    offsets = torch.arange(seq_len)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, leave=False, dynamic_ncols=True)
    for _ in bar:
        starts = torch.randint(0, len(stream.ids) - seq_len, (batch_size,), generator=gen)
        batch = stream.ids[starts[:, None] + offsets]
        loss = model(input_ids=batch, labels=batch).loss
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"{desc}: loss became {float(loss)} at step {len(losses)}; lower the lr"
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses
