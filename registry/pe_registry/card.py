"""Model cards (``README.md``) with the Hub metadata that makes artifacts findable.

Tags carry what :func:`pe_registry.api.find` searches for, because ``list_models`` can
filter on tags but not on ``pe_config.json``:

* ``pe``, ``pe-alignment`` or ``pe-prompting``: what the repo is;
* ``backbone:<name>``: the registered backbone family;
* ``pe-model:<model id>`` and ``pe-prompting-model:<prompting id>``: the pair an alignment
  connects (only ids that look like Hub ids).

Cards hold no timestamps, so equal artifacts give equal bytes (and equal digests).
"""

from __future__ import annotations

from typing import Any

from pe_core.model.config import EmbedderConfig
from pe_registry.prompting import PromptingInfo

LIBRARY = "pe"
TAG_ALIGNMENT = "pe-alignment"
TAG_PROMPTING = "pe-prompting"


def hub_id(model_id: str | None) -> str | None:
    """``model_id`` when it could name a Hub repo (``org/name``), else None: local paths,
    registry names and ``pe-default:`` ids must not end up in ``base_model``."""
    if not model_id or model_id.count("/") != 1 or ":" in model_id or "@" in model_id:
        return None
    if model_id.startswith((".", "/", "~")):
        return None
    return model_id


def model_tag(model_id: str) -> str:
    return f"pe-model:{model_id}"


def prompting_tag(prompting_id: str) -> str:
    return f"pe-prompting-model:{prompting_id}"


def alignment_tags(cfg: EmbedderConfig) -> list[str]:
    tags = ["pe", TAG_ALIGNMENT, f"backbone:{cfg.backbone}"]
    if cfg.model_id:
        tags.append(model_tag(cfg.model_id))
    if cfg.prompting_id:
        tags.append(prompting_tag(cfg.prompting_id))
    return tags


def eval_results(results: dict[str, Any], model_name: str) -> list[Any]:
    """``{task: {metric: value}}`` -> ``EvalResult`` list (non-numeric values skipped)."""
    from huggingface_hub import EvalResult

    out = []
    for task, metrics in sorted(results.items()):
        if not isinstance(metrics, dict):
            continue
        for metric, value in sorted(metrics.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out.append(
                EvalResult(
                    task_type="feature-extraction",
                    dataset_type=task,
                    dataset_name=task,
                    metric_type=metric,
                    metric_value=float(value),
                )
            )
    return out


def _card(data: Any, body: str) -> Any:
    from huggingface_hub import ModelCard

    # built by hand rather than from_template: no jinja2 needed, and the output is stable
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def alignment_card(cfg: EmbedderConfig, name: str) -> Any:
    """The card of an alignment artifact published as ``name``.

    Example::

        alignment_card(EmbedderConfig.load("runs/llama"), "my-org/pe-llama").save("README.md")
    """
    from huggingface_hub import ModelCardData

    bases = [b for b in (hub_id(cfg.prompting_id), hub_id(cfg.model_id)) if b]
    results = eval_results(cfg.eval_results, name)
    data = ModelCardData(
        library_name=LIBRARY,
        pipeline_tag="feature-extraction",
        tags=alignment_tags(cfg),
        base_model=bases or None,
        model_name=name if results else None,
        eval_results=results or None,
    )
    rows = [
        ("backbone", cfg.backbone),
        ("backbone model", _rev(cfg.model_id, cfg.model_revision)),
        ("prompting model", _rev(cfg.prompting_id, cfg.prompting_revision)),
        ("d_P -> d_B", f"{cfg.d_P} -> {cfg.d_B}"),
        ("soft tokens (K)", cfg.num_soft_tokens),
        ("placement / pooling", f"{cfg.placement} / {cfg.pooling}"),
        ("training data hash", cfg.training_data_hash or "-"),
    ]
    body = (
        f"# {name}\n\n"
        "A **pe** alignment: a `d_P x d_B` matrix that maps the soft "
        "tokens of a Prompting LLM into the token-embedding space of a frozen backbone, "
        "turning the backbone into a text embedder.\n\n"
        "```python\nimport pe_core\n\n"
        f'model = pe_core.load(backbone="{cfg.backbone}", alignment="{name}")\n'
        'vectors = model.encode(["hello"], instruction="Retrieve a passage that answers '
        'the question")\n```\n\n' + _table(rows) + _results_table(cfg.eval_results)
    )
    return _card(data, body)


def prompting_card(info: PromptingInfo, name: str) -> Any:
    """The card of a trained Prompting LLM published as ``name``."""
    from huggingface_hub import ModelCardData

    tags = ["pe", TAG_PROMPTING]
    if info.backbone:
        tags.append(f"backbone:{info.backbone}")
    base = hub_id(info.base_model)
    data = ModelCardData(library_name=LIBRARY, tags=tags, base_model=[base] if base else None)
    rows = [
        ("base model", _rev(info.base_model, info.base_revision)),
        ("d_P", info.d_P),
        ("soft tokens (K)", info.num_soft_tokens),
        ("trained with backbone", _rev(info.model_id, None) if info.model_id else "-"),
        ("training data hash", info.training_data_hash or "-"),
    ]
    body = (
        f"# {name}\n\nA Prompting LLM trained with pe: it writes the soft tokens that a pe "
        "alignment maps into a backbone. It is an ordinary transformers causal-LM folder.\n\n"
        + _table(rows)
    )
    return _card(data, body)


def _rev(model_id: str | None, revision: str | None) -> str:
    if not model_id:
        return "-"
    return f"`{model_id}`" + (f" @ `{revision}`" if revision else "")


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _results_table(results: dict[str, Any]) -> str:
    rows = [
        f"| {task} | {metric} | {value} |"
        for task, metrics in sorted(results.items())
        if isinstance(metrics, dict)
        for metric, value in sorted(metrics.items())
    ]
    if not rows:
        return ""
    return "\n## Evaluation\n\n| task | metric | value |\n|---|---|---|\n" + "\n".join(rows) + "\n"
