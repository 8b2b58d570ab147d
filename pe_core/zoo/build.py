"""Build a zoo entry from a ``pe train`` run folder (``python -m pe_core.zoo add``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, MissingFileError
from pe_core.model.config import ALIGNMENT_WEIGHTS_NAME, CONFIG_NAME
from pe_core.model.run_prompting import PROMPTING_DIR, run_method
from pe_core.safe_io import MANIFEST_FORMAT, MANIFEST_NAME, hash_files
from pe_core.training.settings import SETTINGS_NAME

CARD_NAME = "README.md"
# what loading needs; a run without one of them is not a trained embedder
NEEDED = (ALIGNMENT_WEIGHTS_NAME, CONFIG_NAME, f"{PROMPTING_DIR}/config.json")
# small files that document the run or let sentence-transformers read it; checkpoints/
# (resume state, ten times the model) stays behind
KEPT = (ALIGNMENT_WEIGHTS_NAME, CONFIG_NAME, PROMPTING_DIR, "modules.json",
        "config_sentence_transformers.json", SETTINGS_NAME, "log.jsonl")


def make_entry(run: str | Path, name: str, root: str | Path | None = None) -> Path:
    """Copy ``run``'s files into ``<root>/<name>/`` with a model card (an existing one is
    kept, else a template whose figures are filled from the run) and a manifest.

    The new entry is assembled beside the old one and swapped in only when complete, so a
    failure leaves the old entry as it was. Raises :class:`MissingFileError` when ``run``
    lacks a file loading needs.
    """
    from pe_core import zoo

    run = Path(run)
    source_prompting, base_prompting_id = _aligned_from(run)
    for rel in NEEDED:
        if not (run / rel).is_file() and not (source_prompting and rel.startswith(PROMPTING_DIR)):
            raise MissingFileError(f"{run / rel} is missing: {run} is not a finished "
                                   "`pe train` or `pe align` run (train it, or pass its "
                                   "--out folder)")
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"zoo entry name {name!r} must be a plain folder name, "
                          "e.g. gemma3-270m")
    base = Path(root) if root is not None else zoo.root()
    base.mkdir(parents=True, exist_ok=True)
    dst = base / name
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{name}."))
    tmp.chmod(0o755)  # package data, not mkdtemp's private folder
    try:
        for rel in KEPT:
            src = run / rel
            if src.is_dir():
                shutil.copytree(src, tmp / rel)
            elif src.is_file():
                shutil.copy2(src, tmp / rel)
        if source_prompting is not None:
            # a `pe align` run reads the source run's trained Prompting LLM by path: the
            # entry carries a copy, and answers for the pair that run started from
            shutil.copytree(source_prompting, tmp / PROMPTING_DIR)
            cfg = _json(tmp / CONFIG_NAME)
            cfg["prompting_id"] = base_prompting_id
            (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        card = dst / CARD_NAME
        if card.is_file():
            shutil.copy2(card, tmp / CARD_NAME)
        else:
            (tmp / CARD_NAME).write_text(card_template(name, run), encoding="utf-8")
        # the registry's manifest layout, so pe-registry tools read it too
        manifest = {"format": MANIFEST_FORMAT, "kind": "zoo", "files": hash_files(tmp)}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        old = base / f".{name}.old"
        if dst.exists():
            dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _aligned_from(run: Path) -> tuple[Path | None, str | None]:
    """For a ``pe align`` run: the source run's ``prompting/`` its config names and the
    Prompting LLM id that source run was trained from; (None, None) for a ``pe train``
    run (it has its own ``prompting/``). :class:`MissingFileError` when the source run's
    Prompting LLM is gone."""
    if (run / PROMPTING_DIR).is_dir() or run_method(run) != "align":
        return None, None
    named = Path(str(_json(run / CONFIG_NAME).get("prompting_id") or ""))
    source_cfg = _json(named.parent / CONFIG_NAME)
    if not (named / "config.json").is_file() or not source_cfg.get("prompting_id"):
        raise MissingFileError(
            f"{run} is a `pe align` run whose source run's trained Prompting LLM "
            f"({named}) or that run's {CONFIG_NAME} is gone: the entry needs both"
        )
    return named, source_cfg["prompting_id"]


def card_template(name: str, run: Path) -> str:
    cfg = _json(run / CONFIG_NAME)
    settings = _json(run / SETTINGS_NAME)
    dev = (cfg.get("eval_results") or {}).get("dev", {})
    return f"""# pe zoo: {name}

A trained PromptEmbedder that ships with pe-core: `pe_core.load(backbone=\
"{cfg.get('backbone')}", model="{cfg.get('model_id')}")` loads it.

- Backbone: `{cfg.get('model_id')}` (frozen; installed by its `pe-real` checkpoint package)
- Prompting LLM: trained from `{cfg.get('prompting_id')}`, in `prompting/`
- Soft tokens: {cfg.get('num_soft_tokens')}, placement {cfg.get('placement')}, \
pooling {cfg.get('pooling')}
- Training: {settings.get('steps')} steps, batch {settings.get('batch_size')}, \
seed {settings.get('seed')} (`train_settings.json`, curve in `log.jsonl`)
- Dev nDCG@10 at the end of training: {dev.get('ndcg@10', 'n/a')}

## Data
TODO: the training data and its licence.

## Reproduce
TODO: the one `pe train ... --out RUN` command, then
`python -m pe_core.zoo add RUN {name}`.

## Scores
TODO: `benchmarks/quality.py` table beside BM25 and all-MiniLM-L6-v2.

## Licence
The frozen backbone and any weights derived from it follow the base model's licence
(TODO: name it, e.g. the Gemma Terms of Use for Gemma 3).
"""


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
