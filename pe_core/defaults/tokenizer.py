"""Byte-level BPE tokenizers trained on local text, wrapped for transformers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens of one family and where they sit in the vocabulary.

    ``order`` lists the roles in id order; ``at_end`` puts them after the learned tokens
    (Llama 3 / Qwen style) instead of first (SentencePiece style). Families differ here on
    purpose, so a token shared by two vocabularies usually has two different ids and code
    that confuses ids with strings fails in tests. ``add_bos``: encoding prepends ``bos``.
    """

    bos: str = "<s>"
    eos: str = "</s>"
    pad: str = "<pad>"
    unk: str | None = None
    order: tuple[str, ...] = ("pad", "bos", "eos")
    at_end: bool = False
    add_bos: bool = True

    def tokens(self) -> list[str]:
        return [getattr(self, role) for role in self.order]


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, specials: SpecialTokens, max_length: int = 2048
) -> Any:
    """Train a byte-level BPE on ``texts`` and return a ``PreTrainedTokenizerFast``.

    The 256 byte symbols are always in the vocabulary, so any string can be encoded whatever
    the training text. Training is deterministic for a given text sequence and vocabulary
    size (checked across processes).

    Example::

        >>> tok = train_tokenizer(["hello world"] * 10, 300, SpecialTokens())
        >>> tok.decode(tok("hello world")["input_ids"], skip_special_tokens=True)
        'hello world'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials_list = specials.tokens()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - (len(specials_list) if specials.at_end else 0),
        min_frequency=2,
        special_tokens=[] if specials.at_end else specials_list,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if specials.at_end:
        tok.add_special_tokens(specials_list)
    byte_level = processors.ByteLevel(trim_offsets=False)
    if specials.add_bos:
        bos_id = tok.token_to_id(specials.bos)
        template = processors.TemplateProcessing(
            single=f"{specials.bos} $A",
            pair=f"{specials.bos} $A {specials.bos} $B",
            special_tokens=[(specials.bos, bos_id)],
        )
        tok.post_processor = processors.Sequence([byte_level, template])
    else:
        tok.post_processor = byte_level
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=specials.bos,
        eos_token=specials.eos,
        pad_token=specials.pad,
        unk_token=specials.unk,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
        # decoder LMs take no token_type_ids; returning them breaks model(**batch)
        model_input_names=["input_ids", "attention_mask"],
    )
