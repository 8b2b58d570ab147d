"""Two vocabularies are matched by the text their tokens decode to, not by their strings:
a byte-level BPE (``Ġthe``) and a SentencePiece vocabulary (``▁the``) share word-initial
tokens that raw strings never match."""

from __future__ import annotations

from pathlib import Path

import torch

from pe_core.checkpoints.vocab_match import is_byte_level, piece_bytes, token_texts
from pe_core.model.alignment import Alignment, token_map
from pe_core.testing.tiny import tiny_tokenizer


def _sentencepiece_tokenizer(tmp_path: Path):
    from transformers import AutoTokenizer

    from pe_core.model_refs import resolve_model
    from pe_core.testing.tiny_gguf import write_tiny_gguf

    path, _, _ = write_tiny_gguf(tmp_path / "sp.gguf", "llama")
    return AutoTokenizer.from_pretrained(resolve_model(str(path)))


def test_pieces_decode_to_their_bytes():
    assert piece_bytes("Ġthe", byte_level=True) == b" the"
    assert piece_bytes("Ċ", byte_level=True) == b"\n"
    assert piece_bytes("\u2581the", byte_level=False) == b" the"
    assert piece_bytes("<0x0A>", byte_level=False) == b"\n"
    assert piece_bytes("<0xC3>", byte_level=False) == b"\xc3"


def test_byte_level_and_sentencepiece_share_word_initial_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("PE_CACHE", str(tmp_path / "cache"))
    bl, sp = tiny_tokenizer(), _sentencepiece_tokenizer(tmp_path)
    assert is_byte_level(bl) and not is_byte_level(sp)
    bl_texts, sp_texts = token_texts(bl), token_texts(sp)
    assert bl_texts[b" the"] == bl.get_vocab()["Ġthe"]
    assert sp_texts[b" the"] == sp.get_vocab()["\u2581the"]
    raw = set(bl.get_vocab()) & set(sp.get_vocab())
    decoded = set(bl_texts) & set(sp_texts)
    assert b" the" in decoded and "Ġthe" not in raw
    assert len(decoded) > len(raw) + 10
    # special tokens never pair up
    assert all(i not in bl.all_special_ids for i in bl_texts.values())
    assert all(i not in sp.all_special_ids for i in sp_texts.values())


def test_least_squares_init_uses_decoded_text(tmp_path, monkeypatch):
    """A map that is exact on decoded-text pairs is recovered across the two kinds."""
    monkeypatch.setenv("PE_CACHE", str(tmp_path / "cache"))
    bl, sp = tiny_tokenizer(), _sentencepiece_tokenizer(tmp_path)
    gen = torch.Generator().manual_seed(0)
    bl_table = torch.randn(len(bl), 8, generator=gen)
    true_map = torch.randn(8, 6, generator=gen)
    sp_table = torch.randn(len(sp), 6, generator=gen)
    bl_texts, sp_texts = token_texts(bl), token_texts(sp)
    for text in set(bl_texts) & set(sp_texts):
        sp_table[sp_texts[text]] = bl_table[bl_texts[text]] @ true_map
    fit = token_map(bl_table, sp_table, bl, sp, ridge=1e-10)
    torch.testing.assert_close(fit, true_map, atol=1e-4, rtol=0)
    align = Alignment.least_squares(bl_table, sp_table, bl, sp, ridge=1e-10)
    torch.testing.assert_close(align.weight.detach(), true_map, atol=1e-4, rtol=0)
