"""Tiny GGUF files written here, the way llama.cpp's converter lays them out, so GGUF
loading is tested on files whose every weight and token is known.

Example::

    path, model, tokenizer = write_tiny_gguf(tmp_path / "tiny.gguf", kind="llama")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPACE = "\u2581"
SP_TEXT = ["the quick brown fox jumps over the lazy dog", "a query is short and a document "
           "is long", "the fox returns the sum of the numbers", "open the file for reading"]


def _permute(weight: Any, heads: int) -> Any:
    """llama.cpp's row order for q/k projections (transformers undoes it on load)."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def sentencepiece_vocab() -> tuple[list[str], list[float], list[int], Any]:
    """A small SentencePiece-style BPE vocabulary (pieces, scores, token types) learnt
    from :data:`SP_TEXT`, and the ``tokenizers`` model it came from (the reference)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    ref = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    ref.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    ref.train_from_iterator(SP_TEXT * 4, trainer)
    ranks = {tuple(m.split(" ")) if isinstance(m, str) else tuple(m): r
             for r, m in enumerate(_merges(ref))}
    by_id = sorted(ref.get_vocab().items(), key=lambda kv: kv[1])
    pieces = [p for p, _ in by_id]
    merged_rank = {a + b: r for (a, b), r in ranks.items()}
    scores = [-float(merged_rank.get(p, 1000 + i)) for i, p in enumerate(pieces)]
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    pieces += bytes_
    scores += [-1e4] * 256
    types = [2, 3, 3] + [1] * (len(by_id) - 3) + [6] * 256
    return pieces, scores, types, ref


def _merges(tok: Any) -> list[Any]:
    import json

    return json.loads(tok.to_str())["model"]["merges"]


def write_tiny_gguf(path: Path, kind: str = "llama", seed: int = 0,
                    with_tokenizer: bool = True) -> tuple[Path, Any, Any]:
    """Write a tiny random Llama as GGUF (F32, so every weight round-trips exactly) with a
    ``kind`` tokenizer (``"llama"``: SentencePiece BPE; ``"gpt2"``: byte-level BPE).
    Returns the path, the model and the reference tokenizer."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pe_core.testing.tiny import tiny_tokenizer

    if kind == "llama":
        pieces, scores, types, ref = sentencepiece_vocab()
        bos, eos, unk = 1, 2, 0
    else:
        ref = tiny_tokenizer()
        vocab = sorted(ref.get_vocab().items(), key=lambda kv: kv[1])
        pieces = [p for p, _ in vocab]
        scores, types = [0.0] * len(pieces), [3 if p.startswith("<") else 1 for p in pieces]
        bos, eos, unk = ref.bos_token_id, ref.eos_token_id, None
    torch.manual_seed(seed)
    heads, kv_heads, hidden = 4, 2, 32
    config = LlamaConfig(vocab_size=len(pieces), hidden_size=hidden, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=256,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                         bos_token_id=bos, eos_token_id=eos)
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(pieces))
    if with_tokenizer:
        writer.add_tokenizer_model(kind)
        writer.add_token_list(pieces)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        if kind == "gpt2":
            writer.add_token_merges(
                [m if isinstance(m, str) else " ".join(m) for m in _merges(ref.backend_tokenizer)])
        writer.add_bos_token_id(bos)
        writer.add_eos_token_id(eos)
        if unk is not None:
            writer.add_unk_token_id(unk)
        writer.add_add_bos_token(kind == "llama")
        writer.add_add_space_prefix(False)
    names = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output"}
    layer = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, tensor in model.state_dict().items():
        w = tensor.detach().float()
        parts = name.removeprefix("model.").removesuffix(".weight").split(".")
        if parts[0] == "layers":
            sub = ".".join(parts[2:])
            target = f"blk.{parts[1]}.{layer[sub]}.weight"
            if sub == "self_attn.q_proj":
                w = _permute(w, heads)
            elif sub == "self_attn.k_proj":
                w = _permute(w, kv_heads)
        else:
            target = f"{names[parts[0]]}.weight"
        writer.add_tensor(target, w.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model, ref
