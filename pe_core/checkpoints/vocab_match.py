"""Matching two vocabularies by the text their tokens decode to.

Vocabulary *strings* differ between tokenizer kinds for the same text: a byte-level BPE
(SmolLM2, Llama 3, Qwen) writes a word-initial ``the`` as ``Ġthe``, SentencePiece (Gemma,
Mistral, Llama 2) as ``▁the``, and SentencePiece's byte-fallback pieces are ``<0x41>``.
Matching raw strings between SmolLM2 and Gemma 3 finds 14,837 shared tokens and misses
almost every word-initial one; matching the decoded bytes finds 46,018. Everything in pe
that pairs tokens of two vocabularies (the least-squares alignment init, carrying an
alignment to a new backbone) goes through :func:`token_texts`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

SPACE = "\u2581"  # SentencePiece's word-boundary mark
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@functools.cache
def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character -> the byte it stands for.

    Bytes that are printable Latin-1 (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for
    themselves; the other 68 take the code points from 256 on, in byte order.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def is_byte_level(tokenizer: Any) -> bool:
    """Whether a (fast) tokenizer is byte-level BPE, read from its decoder."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return any(part.get("type") == "ByteLevel" for part in parts if part)


def piece_bytes(piece: str, byte_level: bool) -> bytes | None:
    """The bytes a vocabulary piece stands for (None if it is not a text piece)."""
    if byte_level:
        table = _byte_level_alphabet()
        if not all(ch in table for ch in piece):
            return None
        return bytes(table[ch] for ch in piece)
    byte = _BYTE_PIECE.match(piece)
    if byte:
        return bytes([int(byte.group(1), 16)])
    return piece.replace(SPACE, " ").encode("utf-8")


def token_texts(tokenizer: Any) -> dict[bytes, int]:
    """Decoded bytes -> token id for every non-special token (the lowest id where two
    tokens decode alike).

    Example::

        >>> token_texts(smollm2_tokenizer)[b" the"]   # doctest: +SKIP
        260
    """
    byte_level = is_byte_level(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", ()))
    added = getattr(tokenizer, "added_tokens_decoder", {})
    special |= {i for i, tok in added.items() if getattr(tok, "special", False)}
    out: dict[bytes, int] = {}
    for piece, idx in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if idx in special:
            continue
        text = piece_bytes(piece, byte_level)
        if text:
            out.setdefault(text, idx)
    return out


def text_vocab(vocab: Any) -> Mapping[Any, int]:
    """A tokenizer's :func:`token_texts`; a mapping is taken as an already-matched
    vocabulary (key -> id) as it is."""
    return vocab if isinstance(vocab, Mapping) else token_texts(vocab)
