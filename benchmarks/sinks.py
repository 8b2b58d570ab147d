"""Whether a trained run's soft tokens are attention sinks: each soft position's hidden
norm, read after real documents, against the documents' own tokens. For the README's
sink-guard readings.

    python -m benchmarks.sinks runs/smollm2 runs/gemma3 --texts dev.jsonl --name smollm2-gemma3

A sink (a token in the massive-activation state LLMs keep their first token in) shows as
a soft position whose norm at the middle layer is tens of times the text median; the
text's first token is reported beside it as the model's own sink.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from benchmarks import harness


def read_run(run: Path, texts: list[str]) -> dict[str, Any]:
    import torch

    import pe_core
    from pe_core.model.config import EmbedderConfig

    cfg = EmbedderConfig.load(run)
    prompting = run / "prompting" if (run / "prompting" / "config.json").exists() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = pe_core.load(backbone=cfg.backbone, alignment=str(run), device="cpu",
                             prompting=str(prompting) if prompting else None)
    backbone, model_tok = model.backbone, model.tokenizer
    soft = model.cached_soft_prompt(cfg.document_instruction)
    assert soft is not None
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = model_tok(text, truncation=True, max_length=cfg.max_length,
                            return_tensors="pt")["input_ids"]
            x = torch.cat([backbone.spec.token_embeddings(backbone.model, ids),
                           backbone.prompt_embeds(soft[None])], dim=1)
            hidden = backbone.model(inputs_embeds=x, output_hidden_states=True).hidden_states
            mid = hidden[len(hidden) // 2][0].float().norm(dim=-1)
            n = ids.shape[1]
            median = float(mid[1:n].median())
            rows.append({"first_token": float(mid[0]) / median,
                         "soft": [float(v) / median for v in mid[n:]]})
    worst = max(max(r["soft"]) for r in rows)
    return {"run": str(run), "layer": "middle", "worst_soft_over_text_median": worst,
            "first_token_over_text_median": max(r["first_token"] for r in rows),
            "per_text": rows}


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    lines = args.texts.read_text(encoding="utf-8").splitlines()
    texts = [json.loads(x)["positive"] for x in lines if x.strip()][: args.n]
    out = [read_run(run, texts) for run in args.runs]
    for r in out:
        print(f"{r['run']}: worst soft token {r['worst_soft_over_text_median']:.1f}x the "
              f"text median (first text token {r['first_token_over_text_median']:.1f}x)")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__.splitlines()[0], seed=None)
    parser.add_argument("runs", nargs="+", type=Path, help="pe train / pe align folders")
    parser.add_argument("--texts", type=Path, required=True,
                        help="JSONL with a 'positive' field (documents), e.g. dev pairs")
    parser.add_argument("--n", type=int, default=8, help="documents read")
    args = harness.parse(parser, argv, quick={"n": 2})
    harness.run("sinks", args, measure, argv)


if __name__ == "__main__":
    main()
