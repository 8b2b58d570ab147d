"""The one ``encode`` every embedder runs: check the arguments -> tokenise, sort and
batch -> run each batch -> put rows back in input order -> post-process
(:mod:`pe_core.model.output`). An embedder describes itself with an :class:`Encoder`
(its tokenizer, width, prompts, and how to run one batch); the input checks, the
training-mode restore and the output checks are written here once.

Example::

    def encode(self, texts, instruction=None, **kw):
        return run_encode(self._encoder(), texts, instruction, **kw)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pe_core import validate
from pe_core.errors import DimensionMismatchError
from pe_core.model import output
from pe_core.model.batching import encode_batches
from pe_core.validate import EncodeArgs

# (instruction, input_ids, attention_mask) -> pooled, not normalised vectors (B, d)
RunBatch = Callable[[str | None, Any, Any], Any]


@dataclass(frozen=True)
class Encoder:
    """What :func:`run_encode` needs from an embedder.

    ``run_batch`` gets CPU int64 tensors ``(B, T)`` and returns ``(B, width)`` (a torch
    tensor or numpy array) with no normalisation: the driver normalises after
    truncation. ``position_limit(instruction)`` is the number of text tokens the model's
    positions leave beside that instruction's prompt (None: unbounded). ``prepare`` turns
    the texts into what is tokenised (the LoRA baseline's query template). ``check``
    refuses, before any work, what this embedder cannot do (an ONNX graph: another
    instruction). ``module`` is put in eval mode for the call and restored after.
    """

    tokenizer: Any
    width: int
    run_batch: RunBatch
    max_length: int
    padding_side: str = "right"
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    default_instruction: str | None = None
    position_limit: Callable[[str | None], int | None] = lambda instruction: None
    prepare: Callable[[list[str], str | None], list[str]] | None = None
    check: Callable[[EncodeArgs], None] | None = None
    module: Any = None


def run_encode(
    enc: Encoder,
    texts: Any,
    instruction: Any = None,
    *,
    prompt_name: Any = None,
    prompt: Any = None,
    batch_size: Any = 32,
    normalize: Any = None,
    normalize_embeddings: Any = None,
    convert_to: Any = None,
    convert_to_numpy: Any = None,
    convert_to_tensor: Any = None,
    show_progress_bar: Any = None,
    max_length: Any = None,
    truncate_dim: Any = None,
    precision: Any = "float32",
    ranges: Any = None,
) -> Any:
    """Embed ``texts`` with ``enc``; the arguments are ``PromptEmbedder.encode``'s."""
    args = validate.encode_args(
        texts, instruction, prompt_name=prompt_name, prompt=prompt, prompts=enc.prompts,
        default_prompt_name=enc.default_prompt_name,
        default_instruction=enc.default_instruction, batch_size_=batch_size,
        normalize=normalize, normalize_embeddings=normalize_embeddings,
        convert_to_=convert_to, convert_to_numpy=convert_to_numpy,
        convert_to_tensor=convert_to_tensor, show_progress_bar=show_progress_bar,
        max_length_=max_length, truncate_dim_=truncate_dim, precision_=precision,
        ranges_=ranges, width=enc.width,
    )
    if isinstance(instruction, str) and instruction in enc.prompts:
        # sentence-transformers' second argument is prompt_name, pe's the instruction
        warnings.warn(
            f"instruction {instruction!r} is the name of one of the model's prompts; it is "
            f"used as the instruction text. For that prompt's instruction pass "
            f"prompt_name={instruction!r}", UserWarning, stacklevel=3,
        )
    limit = enc.position_limit(args.instruction)
    validate.max_length(args.max_length, limit)
    if enc.check is not None:
        enc.check(args)
    vectors = np.empty((len(args.texts), enc.width), dtype=np.float32)
    if args.texts:
        items = args.texts if enc.prepare is None else enc.prepare(args.texts,
                                                                   args.instruction)
        _fill(enc, args, items, validate.text_limit(args.max_length, enc.max_length, limit),
              vectors)
    return output.finish(vectors, args)


def _fill(enc: Encoder, args: EncodeArgs, items: Sequence[str], max_length: int,
          out: np.ndarray) -> None:
    import torch

    batches = encode_batches(enc.tokenizer, items, args.batch_size, max_length,
                             enc.padding_side, args.show_progress_bar)
    with evaluating(enc.module), torch.no_grad():
        for batch in batches:
            pooled = enc.run_batch(args.instruction, batch.input_ids, batch.attention_mask)
            if isinstance(pooled, torch.Tensor):
                pooled = pooled.detach().float().cpu().numpy()
            out[batch.order] = pooled


@contextmanager
def evaluating(module: Any) -> Iterator[None]:
    """``module`` in eval mode (no dropout) for the block, back in training mode after
    if it was, even when the block raises."""
    if module is None or not module.training:
        yield
        return
    module.eval()
    try:
        yield
    finally:
        module.train()


def encode_with_prompt(encode: Callable[..., Any], texts: Any, name: str,
                       kwargs: dict[str, Any]) -> Any:
    """``encode(texts, **kwargs)`` with ``prompt_name=name`` unless ``kwargs`` already
    chooses the instruction (sentence-transformers' ``encode_query`` /
    ``encode_document``)."""
    if all(kwargs.get(k) is None for k in ("instruction", "prompt", "prompt_name")):
        kwargs = {**kwargs, "prompt_name": name}
    return encode(texts, **kwargs)


def similarity(a: Any, b: Any) -> Any:
    """Cosine similarity matrix ``(len(a), len(b))``; one vector counts as one row.
    Torch in, torch out; otherwise numpy (float32 for any input dtype). Vectors of
    different widths (another ``truncate_dim``) are a :class:`DimensionMismatchError`."""
    wa, wb = np.shape(a)[-1], np.shape(b)[-1]
    if wa != wb:
        raise DimensionMismatchError(
            f"similarity of {wa}- and {wb}-dimensional vectors: encode both sides with the "
            "same truncate_dim (and binary precisions are not cosine-comparable to floats)"
        )
    if type(a).__module__.startswith("torch") or type(b).__module__.startswith("torch"):
        import torch

        ta, tb = (torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
                  for x in (a, b))
        ta, tb = (torch.atleast_2d(x).float() for x in (ta, tb))
        tn = torch.nn.functional.normalize
        return tn(ta, dim=-1) @ tn(tb, dim=-1).T
    na, nb = (np.atleast_2d(np.asarray(x, dtype=np.float32)) for x in (a, b))
    return output.normalized(na) @ output.normalized(nb).T
