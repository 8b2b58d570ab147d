"""How many tokens two vocabularies share: by raw vocabulary strings and by the text the
tokens decode to (what pe's token maps use). For the README's real-tier table.

    python -m benchmarks.vocab_overlap pe-real:smollm2-135m pe-real:gemma3-270m
"""

from __future__ import annotations

import json

from benchmarks import harness


def overlap(a_ref: str, b_ref: str) -> dict[str, object]:
    from transformers import AutoTokenizer

    from pe_core.checkpoints.vocab_match import token_texts
    from pe_core.model_refs import resolve_model

    a = AutoTokenizer.from_pretrained(resolve_model(a_ref))
    b = AutoTokenizer.from_pretrained(resolve_model(b_ref))
    a_text, b_text = token_texts(a), token_texts(b)
    shared = set(a_text) & set(b_text)
    word_initial = sum(1 for t in shared if t.startswith(b" "))
    return {
        "a": a_ref, "b": b_ref, "vocab_a": len(a), "vocab_b": len(b),
        "shared_raw_strings": len(set(a.get_vocab()) & set(b.get_vocab())),
        "shared_decoded_text": len(shared), "shared_word_initial": word_initial,
        "a_text_tokens": len(a_text), "b_text_tokens": len(b_text),
    }


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__.splitlines()[0], seed=None)
    parser.add_argument("a")
    parser.add_argument("b")
    args = harness.parse(parser, argv)
    rec = harness.run("vocab_overlap", args, lambda a: overlap(a.a, a.b), argv)
    print(json.dumps(rec["results"], indent=2))


if __name__ == "__main__":
    main()
