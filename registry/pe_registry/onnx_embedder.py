"""``OnnxEmbedder``: encode with an exported graph through onnxruntime, no torch model.

The folder is what :func:`pe_registry.onnx_export.export_onnx` writes: ``model.onnx``
(+ ``model.onnx.data``), optionally ``model_int8.onnx``, the backbone's tokenizer files
and ``pe_config.json`` whose ``"onnx"`` section names the baked instruction.

Example::

    from pe_registry import OnnxEmbedder
    model = OnnxEmbedder("onnx/")
    vecs = model.encode(["hello"])                  # (1, d_B), unit length
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_core.errors import ConfigError, CorruptFileError, MissingFileError
from pe_core.model.config import CONFIG_NAME, EmbedderConfig
from pe_core.model.embedding_api import EmbeddingAPI
from pe_registry.onnx_folder import check_export, graph_path

ONNX_KEY = "onnx"  # pe_config.json section written by the exporter
INPUT_NAMES = ("input_ids", "attention_mask")
# not "embedding": an internal node of the exported graph already has that name and
# onnxruntime refuses a graph whose output clashes with it
OUTPUT_NAME = "sentence_embedding"
PRECISIONS = ("fp32", "int8")


def import_onnxruntime() -> Any:
    """Import onnxruntime with its telemetry off (it writes under the user cache)."""
    from pe_core.extras import require_extra

    require_extra(["onnxruntime"], "pe-registry[onnx]", "running an ONNX graph")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def default_providers() -> list[str]:
    """CUDA first where this onnxruntime build has it, CPU always as the fallback."""
    available = import_onnxruntime().get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(
    path: str | Path, providers: Sequence[Any] | None = None, threads: int | None = None
) -> Any:
    """An ``InferenceSession`` for ``path`` with all graph optimisations on.

    ``threads`` sets intra-op threads (None: onnxruntime's default, one per core).

    Denormals are flushed to zero (``session.set_denormal_as_zero``): onnxruntime's CPU
    softmax turns masked scores (-inf) into denormal floats, and arithmetic on those is
    ~10x slower on x86: attention took twice as long (batch 32, 133 tokens, one thread:
    30 -> 16 ms per layer). Values below 1.2e-38 become 0, far below the 1e-4 parity.
    onnxruntime applies this to its pool threads and, for the first session of the
    process only, to the calling thread, so the rest of that thread (numpy, torch) also
    flushes denormals from then on.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        str(path), sess_options=options, providers=list(providers or default_providers())
    )


def read_onnx_config(folder: str | Path) -> tuple[EmbedderConfig, dict[str, Any]]:
    """``pe_config.json`` of an exported folder -> (embedder config, ``"onnx"`` section)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise MissingFileError(f"{path} not found: export a graph with `pe export onnx`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    section = data.pop(ONNX_KEY, None)
    if not isinstance(section, dict):
        raise ConfigError(
            f"{path} has no {ONNX_KEY!r} section: {folder} is an alignment folder, not an "
            "exported ONNX folder (export one with `pe export onnx`)"
        )
    return EmbedderConfig.from_dict(data), section


class OnnxEmbedder(EmbeddingAPI):
    """Text embedder over an exported graph; ``encode`` mirrors ``PromptEmbedder.encode``.

    Args:
        folder: an exported folder.
        providers: onnxruntime execution providers (None: CUDA if available, else CPU).
        precision: ``"fp32"`` or ``"int8"`` (None: what the export made the default,
            int8 when it was exported with ``--int8``).
        threads: intra-op threads (None: onnxruntime's default).

    Example::

        model = OnnxEmbedder("onnx/", precision="fp32")
        model.encode(["a", "b"], batch_size=16).shape     # (2, d_B)
    """

    def __init__(
        self,
        folder: str | Path,
        providers: Sequence[Any] | None = None,
        precision: str | None = None,
        threads: int | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.config, self.export_info = read_onnx_config(self.folder)
        check_export(self.folder)  # hashes: graphs, data, tokenizer, the instruction
        files = self.export_info.get("files", {})
        precision = precision or self.export_info.get("default", "fp32")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision not in files:
            raise ConfigError(
                f"{self.folder} has no {precision} graph (it has {sorted(files)}); "
                "export with --int8 to get one"
            )
        model_path = graph_path(self.folder, files, precision)
        if not model_path.is_file():
            raise MissingFileError(f"{model_path} not found: the export is incomplete")
        self.precision = precision
        self.instruction: str | None = self.export_info.get("instruction")
        self.padding_side: str = self.export_info.get("padding_side", "right")
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            self.session = make_session(model_path, providers, threads)
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise  # a bad provider or thread count says so itself
            # onnxruntime's own (Fail, InvalidProtobuf, ...), on files whose hashes matched
            raise CorruptFileError(
                f"onnxruntime cannot load {model_path} ({type(exc).__name__}: "
                f"{str(exc)[:200]}); export the folder again"
            ) from None

    @property
    def dim(self) -> int:
        return int(self.config.d_B)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def __repr__(self) -> str:
        return (
            f"OnnxEmbedder({str(self.folder)!r}, backbone={self.config.backbone!r}, "
            f"precision={self.precision!r}, instruction={self.instruction!r}, "
            f"providers={self.providers})"
        )

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One padded batch (int64 ids and mask, any padding side) -> ``(B, d_B)``."""
        feeds = {
            INPUT_NAMES[0]: np.ascontiguousarray(input_ids, dtype=np.int64),
            INPUT_NAMES[1]: np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        return self.session.run([OUTPUT_NAME], feeds)[0]

    @property
    def position_limit(self) -> int | None:
        """Text tokens the backbone's positions leave beside the baked-in prompt, as the
        export recorded them (None: an export made before they were recorded)."""
        value = self.export_info.get("max_text_tokens")
        return int(value) if isinstance(value, int) else None

    def max_text_tokens(self, instruction: str | None = None) -> int:
        """Tokens a text keeps when encoded without ``max_length``: the exported config's
        ``max_length``, lowered to :attr:`position_limit`."""
        from pe_core import validate

        return validate.text_limit(None, int(self.config.max_length), self.position_limit)

    def _check(self, args: Any) -> None:
        """One graph holds one soft prompt and ends in a normalisation: refuse, before any
        work, an encode that asks for another instruction or for raw vectors."""
        if args.instruction != self.instruction:
            asked = "no instruction" if args.instruction is None else repr(args.instruction)
            raise ConfigError(
                f"this ONNX graph has the instruction {self.instruction!r} baked in, not "
                f"{asked}: export one graph per instruction (pe export onnx --instruction ...)"
            )
        if not args.normalize:
            raise ConfigError(
                "the exported graph outputs normalised embeddings; normalize=False needs "
                "the torch embedder"
            )

    def encode(self, texts: str | Sequence[str], instruction: str | None = None,
               **kwargs: Any) -> Any:
        """Embed ``texts``; returns ``(len(texts), d_B)`` float32 in input order, with the
        keywords and conventions of ``PromptEmbedder.encode`` (``prompt_name``,
        ``truncate_dim``, ``precision``, sentence-transformers' names).

        ``precision`` here is the output's (``int8``, ``binary``...: sentence-transformers'
        ``quantize_embeddings``), not the graph's (the constructor's ``fp32``/``int8``).
        The instruction (given, or the prompt ``prompt_name`` names) must be the one
        baked into the graph, which is also the default: one graph holds one soft prompt.
        The graph's output is already unit length, so ``normalize=False`` raises rather
        than silently returning normalised vectors.

        Example::

            model.encode(["what is pe?", "a document"], batch_size=32)
        """
        from pe_core.model.encode_driver import run_encode

        return run_encode(self._encoder(), texts, instruction, **kwargs)

    def _encoder(self) -> Any:
        from pe_core.model.encode_driver import Encoder

        def run_batch(instruction: str | None, ids: Any, mask: Any) -> np.ndarray:
            return self.run(ids.numpy(), mask.numpy())

        # default_prompt_name is left out: the default is the graph's own instruction
        return Encoder(self.tokenizer, self.dim, run_batch, int(self.config.max_length),
                       self.padding_side, self.config.prompts,
                       default_instruction=self.instruction,
                       position_limit=lambda instruction: self.position_limit,
                       check=self._check)
