"""What each embedded default model is: architecture, size, tokenizer, training budget.

Every number here is part of the artifact: changing one means bumping :data:`RECIPE_VERSION`
so cached builds made from the old recipe are not mistaken for new ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pe_core.defaults.tokenizer import SpecialTokens
from pe_core.errors import ConfigError

RECIPE_VERSION = "v2"
DEFAULT_NAMES = ("prompting", "llama", "mistral", "qwen", "gemma")


@dataclass(frozen=True)
class ModelRecipe:
    """How to build one default model.

    ``model_type`` is a transformers ``model_type`` (the config class is resolved through
    ``AutoConfig.for_model``, so no family is special-cased in code); ``config`` holds the
    architecture's own keyword arguments.

    Example::

        >>> r = recipe("gemma")
        >>> r.model_type, r.config["hidden_size"], r.vocab_size
        ('gemma', 128, 2048)
    """

    name: str
    model_type: str
    vocab_size: int
    config: dict[str, Any]
    specials: SpecialTokens
    seed: int
    # many small steps beat few big ones at this data size (measured:
    # docs/benchmarks/choices.md, "Pretraining budget")
    steps: int = 600
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 3e-3
    warmup_frac: float = 0.1
    weight_decay: float = 0.01
    text_pairs: int | None = None  # None: the whole train split
    eval_blocks: int = 256
    tiny: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["specials"] = asdict(self.specials)
        return out


_LLAMA_SPECIALS = SpecialTokens(bos="<s>", eos="</s>", pad="<pad>", order=("pad", "bos", "eos"))
_LLAMA3_SPECIALS = SpecialTokens(
    bos="<|begin_of_text|>",
    eos="<|end_of_text|>",
    pad="<|finetune_right_pad_id|>",
    order=("bos", "eos", "pad"),
    at_end=True,
)
_MISTRAL_SPECIALS = SpecialTokens(
    bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", order=("unk", "bos", "eos", "pad")
)
_QWEN_SPECIALS = SpecialTokens(
    bos="<|im_start|>",
    eos="<|endoftext|>",
    pad="<|pad|>",
    order=("eos", "bos", "pad"),
    at_end=True,
    add_bos=False,  # Qwen2 tokenizers add nothing in front
)
_GEMMA_SPECIALS = SpecialTokens(
    bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", order=("pad", "eos", "bos", "unk")
)


def _common(max_positions: int) -> dict[str, Any]:
    return {
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-5,
        "attention_dropout": 0.0,
    }


# Backbones need far more than the Prompting LLM: shallower ones trained on less text
# had hidden states no prompt could make useful for retrieval (measured:
# docs/benchmarks/choices.md, "Backbone depth and budget"). Building them takes
# minutes of CPU each, so the built weights ship with the package (``shipped.py``) and
# this recipe rebuilds them.
_BACKBONE_TRAINING: dict[str, Any] = dict(steps=1000, batch_size=16, seq_len=128, lr=2e-3)

_FULL: dict[str, ModelRecipe] = {
    # the Prompting LLM: smallest, widest vocabulary (it only has to emit K soft tokens)
    "prompting": ModelRecipe(
        name="prompting",
        model_type="llama",
        vocab_size=4096,
        config=dict(
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            **_common(512),
        ),
        specials=_LLAMA_SPECIALS,
        seed=1000,
    ),
    "llama": ModelRecipe(
        name="llama",
        model_type="llama",
        vocab_size=3072,
        config=dict(
            hidden_size=256,
            intermediate_size=672,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            **_common(512),
        ),
        specials=_LLAMA3_SPECIALS,
        seed=1001,
        **{**_BACKBONE_TRAINING, "steps": 2500},
    ),
    "mistral": ModelRecipe(
        name="mistral",
        model_type="mistral",
        vocab_size=2560,
        config=dict(
            hidden_size=224,
            intermediate_size=608,
            num_hidden_layers=4,
            num_attention_heads=7,
            num_key_value_heads=1,
            sliding_window=None,
            **_common(512),
        ),
        specials=_MISTRAL_SPECIALS,
        seed=1002,
        **_BACKBONE_TRAINING,
    ),
    "qwen": ModelRecipe(
        name="qwen",
        model_type="qwen2",
        vocab_size=3584,
        config=dict(
            hidden_size=192,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            use_sliding_window=False,
            **_common(512),
        ),
        specials=_QWEN_SPECIALS,
        seed=1003,
        **_BACKBONE_TRAINING,
    ),
    "gemma": ModelRecipe(
        name="gemma",
        model_type="gemma",
        vocab_size=2048,
        config=dict(
            hidden_size=192,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=48,
            hidden_activation="gelu_pytorch_tanh",
            **_common(512),
        ),
        specials=_GEMMA_SPECIALS,
        seed=1004,
        **_BACKBONE_TRAINING,
    ),
}


def _tiny(r: ModelRecipe, i: int) -> ModelRecipe:
    """Same family and code path, shrunk so all five build in seconds (tests)."""
    heads = 2
    cfg = dict(r.config)
    width = 32 + 8 * i  # still different widths: dimension bugs show up in tests
    cfg.update(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=1,
        num_attention_heads=heads,
        num_key_value_heads=1,
        max_position_embeddings=128,
    )
    if "head_dim" in cfg:
        cfg["head_dim"] = width // heads
    return replace(
        r,
        vocab_size=300 + 24 * i,
        config=cfg,
        steps=20,
        batch_size=4,
        seq_len=32,
        text_pairs=200,
        eval_blocks=8,
        tiny=True,
    )


_TINY = {name: _tiny(r, i) for i, (name, r) in enumerate(_FULL.items())}


def recipe(name: str, tiny: bool = False) -> ModelRecipe:
    """The recipe of default model ``name`` (one of :data:`DEFAULT_NAMES`)."""
    table = _TINY if tiny else _FULL
    if name not in table:
        raise ConfigError(
            f"unknown default model {name!r}; choose one of {', '.join(DEFAULT_NAMES)}"
        )
    return table[name]
