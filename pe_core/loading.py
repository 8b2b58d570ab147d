"""``pe_core.load``: backbone name + model refs -> a ready :class:`PromptEmbedder`."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from pe_core.errors import (
    ArgumentTypeError,
    ConfigError,
    CorruptFileError,
    DimensionMismatchError,
    MissingFileError,
    ModelTypeMismatchError,
    UntrainedModelError,
)
from pe_core.model.alignment import Alignment
from pe_core.model.config import ALIGNMENT_WEIGHTS_NAME, CONFIG_NAME, EmbedderConfig
from pe_core.model.run_prompting import trained_prompting
from pe_core.model_refs import DEFAULT_PREFIX, ref_id, resolve_model
from pe_core.plugins import get_backbone, get_plugin_manager
from pe_core.plugins.backbones import BackboneSpec
from pe_core.safe_io import check_manifest_beside
from pe_core.validate import device as check_device

logger = logging.getLogger(__name__)
DEFAULT_PROMPTING = DEFAULT_PREFIX + "prompting"


def load(
    ref: str | Path | None = None,
    /,
    backbone: str | None = None,
    model: str | None = None,
    prompting: str | None = None,
    alignment: str | None = None,
    device: str | None = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
    allow_untrained: bool = False,
    **overrides: Any,
) -> Any:
    """Load a ready embedder.

    Args:
        ref: a registered backbone name, or a model reference (a saved model or
            alignment folder, Hub repo or registry name: the same as ``alignment=``)
            whose ``pe_config.json`` names the backbone.
        backbone: a registered backbone name (``pe backbones`` lists them); None reads it
            from the alignment's config (a different one there is an error).
        model: backbone model: local folder, Hub id (``org/name@revision``), or None for
            the alignment's model, else the plugin's default.
        prompting: Prompting LLM; None takes the alignment's, else the embedded default.
        alignment: registry name, Hub repo or folder; None looks for one matching
            (prompting, model) through the installed resolvers. An alignment found that
            way is loaded with its own Prompting LLM (``prompting`` itself, or one
            trained from it).
        device, dtype: where and how to place the models (default: CUDA if available).
        allow_untrained: when no trained alignment exists, start from a least-squares
            alignment (a warning says so) instead of raising
            :class:`~pe_core.errors.UntrainedModelError`. On a real model that embedder
            ranks below the frozen backbone, so it must be asked for; the toy
            ``pe-default:`` models are untrained anyway and never need it.
        overrides: EmbedderConfig fields (``placement``, ``pooling``, ``num_soft_tokens``...).

    Example::

        model = pe_core.load(backbone="llama", alignment="my-org/pe-align-llama")
        model = pe_core.load("runs/x")        # the backbone its pe_config.json names
        model.encode(["hello"], instruction="Retrieve a passage that answers the question")
    """
    backbone, alignment = split_reference(ref, backbone, alignment)
    device = check_device(device)
    align_dir = resolve_alignment(alignment) if alignment is not None else None
    align_cfg = EmbedderConfig.load(align_dir) if align_dir is not None else None
    if backbone is None:
        if align_cfg is None:
            raise ConfigError("pass a model reference, pe_core.load('runs/x'), or a backbone "
                              "name, pe_core.load(backbone='llama') (`pe backbones` lists them)")
        backbone = align_cfg.backbone
    spec = get_backbone(backbone)
    model_ref = model or (align_cfg.model_id if align_cfg else None) or spec.default_model
    if model_ref is None:
        raise ConfigError(f"backbone {backbone!r} has no default model: pass model=")
    found = False
    if align_dir is None:
        align_dir = find_alignment(prompting, model_ref)
        align_cfg = EmbedderConfig.load(align_dir) if align_dir is not None else None
        found = align_dir is not None
    if align_cfg is not None and align_cfg.backbone != spec.name:
        raise ConfigError(
            f"alignment {alignment or align_dir} was trained for backbone "
            f"{align_cfg.backbone!r}, not {spec.name!r}"
        )
    backbone_dir = resolve_model(model_ref, spec.model_types)  # a missing one says so first
    if align_dir is None and not allow_untrained:
        check_trained_or_toy(spec.name, str(model_ref), prompting)
    own = _alignment_prompting(align_dir, align_cfg)
    # a found alignment matched `prompting` or a Prompting LLM trained from it: take its own
    prompting_ref = (own if found else None) or prompting or own or DEFAULT_PROMPTING
    return assemble(
        spec,
        backbone_dir=backbone_dir,
        prompting_dir=resolve_model(prompting_ref),
        alignment_dir=align_dir,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        refs={"model_id": str(model_ref), "prompting_id": str(prompting_ref)},
        **overrides,
    )


def split_reference(
    ref: Any, backbone: str | None, alignment: str | None
) -> tuple[str | None, str | None]:
    """``(backbone, alignment)`` from :func:`load`'s first argument: a registered backbone
    name is a backbone, anything else a model reference (as ``alignment=``)."""
    if ref is None:
        return backbone, alignment
    if not isinstance(ref, str | Path):
        raise ArgumentTypeError(f"the model reference must be a string or path, got "
                                f"{type(ref).__name__} {ref!r:.60}")
    if isinstance(ref, str) and ref in get_plugin_manager().backbones():
        if backbone is not None and backbone != ref:
            raise ConfigError(f"load({ref!r}, backbone={backbone!r}): name the backbone once")
        return ref, alignment
    if alignment is not None:
        raise ConfigError(f"load({str(ref)!r}, alignment={alignment!r}): name the model "
                          "once, as the first argument or as alignment=")
    return backbone, str(ref)


def resolve_alignment(ref: str | Path) -> Path:
    """An alignment reference -> a folder with ``alignment.safetensors``."""
    resolvers = list(get_plugin_manager().resolvers())
    for resolver in resolvers:
        found = resolver.resolve(str(ref))
        if found is not None:
            weights = Path(found) / ALIGNMENT_WEIGHTS_NAME
            if not weights.is_file():
                what = "is not a file" if weights.exists() else "is missing"
                raise MissingFileError(f"{weights} {what}: {found} is not a saved alignment "
                                       "(save one with model.save, or pass another folder)")
            check_manifest_beside(found)
            return Path(found)
    if Path(ref).expanduser().is_file():
        raise MissingFileError(
            f"alignment {str(ref)!r} is a file: pass the folder that holds "
            f"{ALIGNMENT_WEIGHTS_NAME} and {CONFIG_NAME}"
        )
    others = [r.name for r in resolvers if r.name != "folder"]
    hint = (f"no installed resolver ({', '.join(others)}) knows it: check the name and "
            "version (`pe list` shows the local registry)" if others
            else "no installed resolver knows it (pip install pe-registry for registry "
            "names and Hub repos)")
    raise MissingFileError(f"alignment {str(ref)!r} not found: not a folder, and {hint}")


def find_alignment(prompting: str | None, model: str) -> Path | None:
    for resolver in get_plugin_manager().resolvers():
        if resolver.find is None:
            continue
        found = resolver.find(ref_id(prompting or DEFAULT_PROMPTING), ref_id(model))
        if found is not None:
            logger.info("using alignment %s found by resolver %s", found, resolver.name)
            check_manifest_beside(found)  # what resolve_alignment checks for a named one
            return Path(found)
    return None


def check_trained_or_toy(backbone: str, model_ref: str, prompting: str | None) -> None:
    """Raise :class:`UntrainedModelError` for a real backbone model that no trained
    alignment was found for: its untrained embedder ranks at random, below the frozen
    backbone read without a prompt. The toy ``pe-default:`` models pass (they are
    untrained whatever happens, and tests build on them)."""
    if model_ref.startswith(DEFAULT_PREFIX):
        return
    p_flag = f" --prompting {prompting}" if prompting else ""
    raise UntrainedModelError(
        f"no trained alignment for backbone {backbone!r} with model {model_ref!r} (and "
        f"Prompting LLM {prompting or DEFAULT_PROMPTING!r}); its untrained embedder would "
        "rank below the frozen backbone. Get a trained one: `pe train --backbone "
        f"{backbone} --model {model_ref}{p_flag} --data pairs.jsonl --out runs/x`, or "
        f"`pe align --from RUN --backbone {backbone} --model {model_ref} --data pairs.jsonl "
        "--out runs/y`, then pass alignment=/--alignment (or `pe push` it to the registry); "
        "or ask for the untrained one: allow_untrained=True (CLI: --allow-untrained)"
    )


def _alignment_prompting(align_dir: Path | None, cfg: EmbedderConfig | None) -> str | None:
    own = trained_prompting(align_dir) if align_dir is not None else None
    if own is not None:
        return str(own)
    if cfg is None or cfg.prompting_id is None:
        return None
    # pin the revision the alignment was trained with (registry version or Hub commit);
    # a local folder has no revisions
    rev, pid = cfg.prompting_revision, cfg.prompting_id
    return f"{pid}@{rev}" if rev and "@" not in pid and not Path(pid).is_dir() else pid


def check_model_type(spec: BackboneSpec, folder: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if config.model_type not in spec.model_types:
        owner = get_plugin_manager().backbones().for_model_type(config.model_type)
        hint = f"use backbone={owner.name!r}" if owner else "no installed plugin handles it"
        raise ModelTypeMismatchError(
            f"{folder} is a {config.model_type!r} checkpoint, but backbone {spec.name!r} "
            f"handles {list(spec.model_types)}: {hint}"
        )
    return config


def load_backbone(spec: BackboneSpec, folder: Path, trust_remote_code: bool = False,
                  **kwargs: Any) -> Any:
    """The backbone (decoder without LM head) saved in ``folder``: its model type checked
    against ``spec``, loaded with the family's attention kernel, every weight verified."""
    from pe_core.checkpoints.verified import load_base_model

    config = check_model_type(spec, folder, trust_remote_code)
    return load_base_model(folder, attn_implementation=spec.attention_for(config.model_type),
                           trust_remote_code=trust_remote_code, **kwargs)


def assemble(
    spec: BackboneSpec,
    backbone_dir: Path,
    prompting_dir: Path,
    alignment_dir: Path | None = None,
    device: str | None = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
    refs: dict[str, str] | None = None,
    **overrides: Any,
) -> Any:
    """Build a :class:`PromptEmbedder` from local folders."""
    import torch

    from pe_core.checkpoints.verified import load_causal_lm

    torch_dtype = _dtype(dtype)
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        kw["dtype"] = torch_dtype
    backbone_model = load_backbone(spec, backbone_dir, **kw)
    prompting_model = load_causal_lm(prompting_dir, **kw)
    tokenizer = load_tokenizer(backbone_dir, trust_remote_code)
    p_tokenizer = load_tokenizer(prompting_dir, trust_remote_code)
    config = EmbedderConfig.load(alignment_dir) if alignment_dir is not None else None
    # ids as find_alignment looks them up (a local folder: its absolute path)
    refs = {k: ref_id(v) if k in ("model_id", "prompting_id") and v else v
            for k, v in (refs or {}).items()}
    embedder = build_embedder(
        spec, backbone_model, tokenizer, prompting_model, p_tokenizer,
        config=config,
        alignment_path=alignment_dir / ALIGNMENT_WEIGHTS_NAME if alignment_dir else None,
        **{**refs, **overrides} if config is None else overrides,
    )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return embedder.to(device)


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained(folder)``; tokenizer files that cannot be read
    are a :class:`CorruptFileError` naming the folder, not transformers' or tokenizers'
    own exception (missing ones are caught earlier, by ``check_model_folder``)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers' and tokenizers' own, of many types
        raise CorruptFileError(
            f"{folder}: its tokenizer could not be read ({type(exc).__name__}: "
            f"{str(exc)[:200]}); copy the model's tokenizer files (tokenizer.json, or "
            "tokenizer.model / vocab.json + merges.txt) back into it"
        ) from None


def build_embedder(
    spec: BackboneSpec,
    backbone_model: Any,
    tokenizer: Any,
    prompting_model: Any,
    prompting_tokenizer: Any,
    config: EmbedderConfig | None = None,
    alignment_path: Path | None = None,
    **config_kwargs: Any,
) -> Any:
    """Put loaded models together. Without ``alignment_path`` the alignment starts from
    the least-squares fit over shared tokens (and a warning says it is untrained)."""
    from pe_core.model.embedder import PromptEmbedder
    from pe_core.model.encoder import BackboneEncoder
    from pe_core.model.prompting import PromptingLLM

    encoder = BackboneEncoder(backbone_model, spec)
    d_B = encoder.d
    d_P = int(prompting_model.get_input_embeddings().weight.shape[1])
    if config is None:
        config_kwargs.setdefault("pooling", spec.pooling)
        config = EmbedderConfig(backbone=spec.name, d_P=d_P, d_B=d_B, **config_kwargs)
    elif config_kwargs:
        config = replace(config, **config_kwargs)
    prompting = PromptingLLM(prompting_model, prompting_tokenizer, config.template)
    if alignment_path is not None:
        align = Alignment.load(alignment_path, d_P=d_P, d_B=d_B)
        if (config.d_P, config.d_B) != (align.d_P, align.d_B):
            raise DimensionMismatchError(
                f"{alignment_path.parent / CONFIG_NAME} declares d_P x d_B = {config.d_P} x "
                f"{config.d_B} but {alignment_path.name} is {align.d_P} x {align.d_B}; the "
                "config was edited or belongs to other weights: save the alignment again"
            )
    else:
        warnings.warn(
            f"no trained alignment for backbone {spec.name!r}: starting from the "
            "least-squares fit over shared tokens (train one with `pe train`/`pe align`)",
            stacklevel=2,
        )
        align = Alignment.least_squares(
            prompting.embedding_table, encoder.embedding_table,
            prompting_tokenizer, tokenizer,
        )
    align = align.to(device=encoder.embedding_table.device)
    config.d_P, config.d_B = d_P, d_B
    return PromptEmbedder(prompting, align, encoder, tokenizer, config).eval()


def _dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16") from None
