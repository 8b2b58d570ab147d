"""Tiny random models and a tiny tokenizer, built locally in milliseconds."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pe_core.plugins.backbones import BackboneSpec

_TEXT = """
Retrieval finds the passage that answers a question. A query is short; a document is long.
Embeddings map text to vectors so that similar meanings lie close together.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Python is a programming language. Functions return values; classes define objects.
Return the sum of the numbers. Open a file for reading and writing. Parse the arguments.
Soft prompts steer a frozen language model. Alignment maps one space into another.
"""


@functools.cache
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TEXT.strip().splitlines() * 4, trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer (pad ``<pad>``, bos ``<s>``, eos ``</s>``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        pad_token="<pad>", bos_token="<s>", eos_token="</s>",
    )


def tiny_config(spec: BackboneSpec, model_type: str, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    kwargs = dict(spec.tiny_configs.get(model_type, {}))
    kwargs.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_backbone(spec: BackboneSpec, model_type: str, tokenizer: Any, seed: int = 0) -> Any:
    """A random base model (no LM head) of ``model_type`` from the plugin's tiny config."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    config = tiny_config(spec, model_type, tokenizer)
    attention = spec.attention_for(model_type)
    if attention:
        config._attn_implementation = attention
    return AutoModel.from_config(config).eval()


def tiny_prompting(tokenizer: Any, hidden: int = 24, seed: int = 1) -> Any:
    """A random tiny Llama causal LM to serve as the Prompting LLM."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


def tiny_embedder(spec: BackboneSpec, model_type: str | None = None, **config: Any) -> Any:
    """A complete random :class:`~pe_core.model.embedder.PromptEmbedder` for ``spec``."""
    import warnings

    from pe_core.loading import build_embedder

    tokenizer = tiny_tokenizer()
    backbone = tiny_backbone(spec, model_type or spec.model_types[0], tokenizer)
    prompting = tiny_prompting(tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_embedder(spec, backbone, tokenizer, prompting, tiny_tokenizer(), **config)


def save_tiny_folders(spec: BackboneSpec, root: Path, model_type: str | None = None) -> dict:
    """Write a tiny backbone and Prompting LLM as transformers folders (safetensors +
    tokenizer) under ``root``; returns ``{"model": path, "prompting": path}``."""
    tokenizer = tiny_tokenizer()
    model_dir, prompting_dir = root / "backbone", root / "prompting"
    tiny_backbone(spec, model_type or spec.model_types[0], tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    tiny_prompting(tokenizer).save_pretrained(prompting_dir)
    tokenizer.save_pretrained(prompting_dir)
    return {"model": model_dir, "prompting": prompting_dir}
