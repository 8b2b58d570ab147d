"""``from_pretrained`` that fails loudly when a checkpoint's weights are not the model's.

transformers only *warns* when a checkpoint's tensor names do not match the model it
builds, and returns random weights for the ones it missed: ``AutoModel`` on a Gemma 3
text checkpoint saved by ``Gemma3ForCausalLM`` (every Hub Gemma 3 is saved so) finds
none of its 236 tensors. Every load here asks for the loading report and turns any
missing, unexpected or mismatched weight into a :class:`WeightsMismatchError`.

A backbone is the causal LM's decoder without its head. A checkpoint saved by a
``*ForCausalLM`` (tensor names under ``model.``, maybe ``lm_head.``) is therefore loaded
as the causal LM and its decoder is taken, which maps the names the same way on every
transformers release; a checkpoint saved by the base model loads as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pe_core.errors import WeightsMismatchError
from pe_core.safe_io import check_weights

# how many key names an error message shows
SHOWN = 5
HEAD_PREFIX = "lm_head."


def checkpoint_keys(folder: str | Path) -> list[str]:
    """The tensor names of the safetensors checkpoint in ``folder`` (sharded or not),
    read from the file headers only."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    keys: list[str] = []
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            keys.extend(fh.keys())
    return sorted(keys)


def saved_by_causal_lm(keys: Iterable[str]) -> bool:
    """Whether tensor names carry a causal LM's layout (``model.…`` / ``lm_head.…``)."""
    keys = list(keys)
    return bool(keys) and all(k.startswith(("model.", HEAD_PREFIX)) for k in keys)


def check_loading_info(info: dict[str, Any], source: str | Path, *,
                       ignore_missing: tuple[str, ...] = ()) -> None:
    """Raise :class:`WeightsMismatchError` for any missing, unexpected or mismatched
    weight in a transformers loading report (``output_loading_info=True``)."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(ignore_missing))
    unexpected = sorted(info.get("unexpected_keys", ()))
    mismatched = sorted(str(m[0] if isinstance(m, tuple) else m)
                        for m in info.get("mismatched_keys", ()))
    errors = [str(e) for e in info.get("error_msgs", ())]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected),
                       ("shape-mismatched", mismatched)):
        if keys:
            shown = ", ".join(keys[:SHOWN]) + (f", … ({len(keys)} in all)" if len(keys) > SHOWN
                                              else "")
            problems.append(f"{what} weights: {shown}")
    if errors:
        problems.append("load errors: " + "; ".join(errors[:SHOWN]))
    if problems:
        raise WeightsMismatchError(
            f"{source}: the checkpoint's weights are not this model's ("
            + "; ".join(problems) + "). The model would run with random weights; check "
            "that the checkpoint matches its config.json and the chosen backbone"
        )


def from_pretrained(auto: Any, folder: str | Path, ignore_missing: tuple[str, ...] = (),
                    **kwargs: Any) -> Any:
    """``auto.from_pretrained(folder)`` with its loading report checked and every
    parameter finite; a tensor of another shape than its config says (which torch
    reports as a size-mismatch ``RuntimeError``) is a :class:`WeightsMismatchError`."""
    try:
        model, info = auto.from_pretrained(folder, output_loading_info=True, **kwargs)
    except RuntimeError as exc:
        # torch's load_state_dict: a tensor of another shape, or one it cannot copy into
        # its parameter (an int32 tensor where a float weight belongs)
        if "state_dict" not in str(exc) and "size mismatch" not in str(exc):
            raise
        last = str(exc).strip().splitlines()[-1].strip()[:300]
        raise WeightsMismatchError(
            f"{folder}: a weight's shape or dtype is not the one its config.json gives "
            f"({last}); the checkpoint and its config.json do not belong together: save "
            "the model again"
        ) from None
    check_loading_info(info, folder, ignore_missing=ignore_missing)
    check_weights(model.named_parameters(), folder)
    return model


def load_causal_lm(folder: str | Path, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with every weight verified.

    Example::

        model = load_causal_lm("path/to/SmolLM2-135M-Instruct")
    """
    from transformers import AutoModelForCausalLM

    return from_pretrained(AutoModelForCausalLM, folder, **kwargs)


def load_base_model(folder: str | Path, **kwargs: Any) -> Any:
    """The decoder (no LM head) of the checkpoint in ``folder``, every weight verified,
    whether the checkpoint was saved by the base model or by its causal LM.

    Example::

        backbone = load_base_model("path/to/gemma-3-270m", attn_implementation="sdpa")
    """
    if saved_by_causal_lm(checkpoint_keys(folder)):
        from transformers import AutoModelForCausalLM

        # the head is not part of a backbone: a checkpoint may leave it out
        causal = from_pretrained(AutoModelForCausalLM, folder, ignore_missing=(HEAD_PREFIX,),
                                 **kwargs)
        return causal.get_decoder()
    from transformers import AutoModel

    return from_pretrained(AutoModel, folder, **kwargs)
