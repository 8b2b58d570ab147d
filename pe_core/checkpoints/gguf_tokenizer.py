"""The tokenizer of a GGUF file, rebuilt from its ``tokenizer.ggml.*`` metadata.

GGUF files carry one of two tokenizer kinds:

* ``gpt2``: byte-level BPE with explicit merges (SmolLM2, Llama 3, Qwen). transformers'
  GGUF converter builds it correctly, so pe uses that.
* ``llama``: a SentencePiece *BPE* model stored as pieces, scores and token types
  (Gemma, Mistral, Llama 2). transformers' converter turns Gemma's into a *Unigram* model
  over the same scores, which splits ordinary words ("The quick brown fox" ->
  ``The, ▁qu, ick, ▁b, ro, wn, …``; perplexity 239 instead of 8 on plain English). pe
  rebuilds the BPE itself: SentencePiece BPE merges the adjacent pair whose joined piece
  scores highest, so every split ``t = a + b`` of a normal piece ``t`` into two pieces of
  the vocabulary is a merge ranked by ``score(t)``. Control tokens become special tokens,
  user-defined ones (Gemma's runs of newlines, say) are matched whole as SentencePiece
  does, and ``<0x..>`` pieces give byte fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, MissingFileError

# SentencePiece token types as GGUF stores them
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # SentencePiece's word-boundary mark


def tokenizer_kind(metadata: dict[str, Any], source: str | Path) -> str:
    """``"gpt2"`` or ``"llama"``; a typed error when the file has no tokenizer."""
    kind = metadata.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in metadata:
        raise MissingFileError(
            f"{source} carries no tokenizer (no tokenizer.ggml.* metadata): re-export it "
            "with its tokenizer (llama.cpp's convert_hf_to_gguf.py writes one)"
        )
    if kind not in ("gpt2", "llama"):
        raise ConfigError(
            f"{source} has a {kind!r} tokenizer; pe reads the 'gpt2' (byte-level BPE) and "
            "'llama' (SentencePiece BPE) kinds"
        )
    return str(kind)


def sentencepiece_merges(pieces: list[str], scores: list[float],
                         types: list[int]) -> list[tuple[str, str]]:
    """BPE merges of a SentencePiece-BPE vocabulary, first merge first.

    Example::

        >>> sentencepiece_merges(["a", "b", "ab"], [0.0, 0.0, -1.0], [1, 1, 1])
        [('a', 'b')]
    """
    vocab = {p: i for i, p in enumerate(pieces) if types[i] in (NORMAL, USER_DEFINED, UNUSED)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for i, piece in enumerate(pieces):
        if types[i] != NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                # higher score first; ties in the vocabulary's order, then the longer left
                ranked.append((-scores[i], i, -cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def sentencepiece_backend(metadata: dict[str, Any]) -> Any:
    """A ``tokenizers.Tokenizer`` for a ``llama``-kind (SentencePiece BPE) GGUF tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    pieces = [str(p) for p in metadata["tokenizer.ggml.tokens"]]
    n = len(pieces)
    scores = [float(s) for s in metadata.get("tokenizer.ggml.scores", [0.0] * n)]
    types = [int(t) for t in metadata.get("tokenizer.ggml.token_type", [NORMAL] * n)]
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    model = models.BPE(
        vocab={p: i for i, p in enumerate(pieces)},
        merges=sentencepiece_merges(pieces, scores, types),
        unk_token=pieces[int(unk_id)] if unk_id is not None else None,
        byte_fallback=True, fuse_unk=True,
    )
    tok = Tokenizer(model)
    prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend(SPACE)] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE)])
    decode = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence([*decode, decoders.Strip(" ", 1, 0)] if prefix else decode)
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False)
                            for i in range(n) if types[i] == CONTROL])
    tok.add_tokens([AddedToken(pieces[i], special=False, normalized=False)
                    for i in range(n) if types[i] == USER_DEFINED])
    return tok


def gguf_tokenizer(path: Path, metadata: dict[str, Any]) -> Any:
    """The tokenizer of the GGUF file ``path`` (its metadata already read), as a
    ``PreTrainedTokenizerFast`` that adds BOS/EOS exactly as the file's
    ``add_bos_token``/``add_eos_token`` flags say."""
    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if tokenizer_kind(metadata, path) == "llama":
        backend = sentencepiece_backend(metadata)
    else:  # transformers' byte-level conversion is right; its BOS default is not ours
        backend = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).backend_tokenizer
    pieces = [str(p) for p in metadata["tokenizer.ggml.tokens"]]

    def special(name: str) -> str | None:
        idx = metadata.get(f"tokenizer.ggml.{name}_token_id")
        return pieces[int(idx)] if idx is not None and 0 <= int(idx) < len(pieces) else None

    bos, eos = special("bos"), special("eos")
    add = {bos: bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
           eos: bool(metadata.get("tokenizer.ggml.add_eos_token", False))}
    head = [bos] if bos and add[bos] else []
    tail = [eos] if eos and add[eos] else []
    backend.post_processor = processors.TemplateProcessing(
        single=[*head, "$A", *tail], pair=[*head, "$A", *tail, "$B:1", *tail],
        special_tokens=[(t, pieces.index(t)) for t in {*head, *tail}],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token=special("unknown"),
        pad_token=special("padding"), chat_template=metadata.get("tokenizer.chat_template"),
    )
