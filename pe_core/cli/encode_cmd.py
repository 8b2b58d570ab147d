"""``pe encode``: text lines or JSONL in, ``.npy`` or JSONL out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pe_core import validate
from pe_core.errors import ConfigError, DataError

OUTPUT_KINDS = ("npy", "jsonl")


def add_model_args(
    p: argparse.ArgumentParser, alignment: bool = True, required: bool = True
) -> None:
    """The arguments every command that loads an embedder takes."""
    p.add_argument("--backbone", required=required, help="registered backbone name")
    p.add_argument("--model", help="backbone model: folder or Hub id[@revision]")
    p.add_argument("--prompting", help="Prompting LLM: folder or Hub id[@revision]")
    if alignment:
        p.add_argument("--alignment", help="alignment: registry name, Hub repo or folder")
        p.add_argument("--allow-untrained", action="store_true",
                       help="with no trained alignment for a real model, use the untrained "
                       "one (it ranks below the frozen backbone) instead of stopping")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", help="float32, bfloat16 or float16")


def register(sub: Any) -> None:
    p = sub.add_parser("encode", help="embed text lines or JSONL records")
    add_model_args(p, required=False)
    p.add_argument("input", help="UTF-8 text file (one text per line, blank lines too) or "
                   ".jsonl; '-' for stdin")
    p.add_argument("--output", "-o", required=True, help="output .npy or .jsonl")
    p.add_argument("--field", default="text", help="JSONL field holding the text")
    p.add_argument("--instruction", help="task instruction (query side)")
    p.add_argument("--prompt-name", help="one of the model's named prompts (pe_config.json "
                   "'prompts', e.g. query or document) instead of --instruction")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int)
    p.add_argument("--truncate-dim", type=int, help="keep the first N dimensions, "
                   "re-normalised (Matryoshka)")
    p.add_argument("--precision", default="float32", choices=validate.PRECISIONS,
                   help="output precision, as sentence-transformers' quantize_embeddings "
                   "(int8/uint8 ranges come from the vectors of this run)")
    p.set_defaults(func=run)


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` split at "\\n" alone (a trailing "\\r" dropped: CRLF files):
    ``str.splitlines`` also splits at U+2028, U+0085, \\f and others, which occur inside
    real texts and would shift every later row."""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line starts no text
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_texts(source: str, field: str) -> list[str]:
    """Texts of a UTF-8 file (``-``: stdin): every line of a text file is one text, blank
    lines included, so output row ``i`` is input line ``i``; a ``.jsonl`` file gives one
    text per record (blank lines between records are skipped). No text is a
    :class:`DataError`; a lone surrogate (a JSON escape such as ``"\\ud800"``) is an
    :class:`~pe_core.errors.ArgumentTypeError` naming the line."""
    if source == "-":
        text = validate.decode_text(sys.stdin.buffer.read(), "<stdin>")
    else:
        text = validate.read_text_file(source)
    lines = split_lines(text)
    is_jsonl = source.endswith(".jsonl")
    texts = []
    for n, line in enumerate(lines, 1):
        if not is_jsonl:
            texts.append(line)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}:{n}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise DataError(f"{source}:{n}: record has no string field {field!r}")
        texts.append(validate.unicode_text(record[field], f"{source}:{n}: field {field!r}"))
    if not texts:
        raise DataError(f"{source} holds no texts: give one text per line (or JSONL records)")
    return texts


def output_kind(path: str) -> str:
    """``npy`` or ``jsonl`` from the output's suffix; the path is checked writable now,
    before the encode that fills it."""
    kind = Path(path).suffix.lstrip(".")
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"--output {path}: name a .npy or .jsonl file")
    validate.output_file(path, "--output")
    return kind


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import pe_core
    from pe_core.safe_io import atomic_path

    kind = output_kind(args.output)
    if args.backbone is None and args.alignment is None:
        raise ConfigError("pass --alignment (a saved model: its backbone is read from its "
                          "pe_config.json) or --backbone NAME (`pe backbones` lists them)")
    # every argument the model does not decide is checked before it loads
    validate.batch_size(args.batch_size)
    validate.max_length(args.max_length)
    validate.truncate_dim(args.truncate_dim, None, "--truncate-dim")
    if args.instruction is not None and args.prompt_name is not None:
        raise ConfigError("pass --instruction or --prompt-name, not both")
    validate.instruction(args.instruction, "--instruction")
    texts = read_texts(args.input, args.field)
    model = pe_core.load(
        backbone=args.backbone, model=args.model, prompting=args.prompting,
        alignment=args.alignment, device=args.device, dtype=args.dtype,
        allow_untrained=args.allow_untrained,
    )
    vectors = model.encode(
        texts, instruction=args.instruction, prompt_name=args.prompt_name,
        batch_size=args.batch_size, max_length=args.max_length,
        show_progress_bar=len(texts) > 256, truncate_dim=args.truncate_dim,
        precision=args.precision,
    )
    with atomic_path(args.output) as tmp, tmp.open("wb") as fh:
        if kind == "npy":
            np.save(fh, vectors)
        else:
            for text, vec in zip(texts, vectors, strict=True):
                fh.write((json.dumps({"text": text, "embedding": vec.tolist()}) + "\n").encode())
    print(f"wrote {len(texts)} x {vectors.shape[1]} embeddings to {args.output}",
          file=sys.stderr)
    return 0
