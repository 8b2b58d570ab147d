"""ONNX export: parity with PyTorch for every backbone family, int8, CLI, bad input.

Each export takes a few seconds, so every graph is exported once per module and shared.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# An env without the [onnx] extra skips this module; the env meant to run it sets
# PE_REQUIRE_ONNX=1 (tox's `registry`), where a missing extra is a failure, not a skip.
if os.environ.get("PE_REQUIRE_ONNX") == "1":
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
else:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

INSTRUCTION = "Retrieve a passage that answers the question"
TEXTS = [
    "Return the sum of the numbers.",
    "fox",
    "Soft prompts steer a frozen language model toward the task at hand, token by token.",
    "Open a file for reading and writing.",
    "a",
]
TOL = 1e-4

# (backbone, model_type, placement, pooling, optimize): every family, both placements
# for the families with a quirk each (llama: the default path; gemma: the embedding
# scale); every family fused for onnxruntime (the default, also through the CLI), three
# graphs left unfused (optimize=False)
CASES = {
    "llama-suffix-last": ("llama", "llama", "suffix", "last", True),  # through the CLI
    "llama-prefix-mean": ("llama", "llama", "prefix", "mean", False),
    "mistral-prefix-last": ("mistral", "mistral", "prefix", "last", False),
    "mistral-suffix-last-fused": ("mistral", "mistral", "suffix", "last", True),
    "qwen2-suffix-mean-fused": ("qwen", "qwen2", "suffix", "mean", True),
    "qwen3-suffix-last-fused": ("qwen", "qwen3", "suffix", "last", True),
    "gemma-suffix-last-fused": ("gemma", "gemma", "suffix", "last", True),
    "gemma-prefix-last": ("gemma", "gemma", "prefix", "last", False),
    "gemma2-suffix-last-fused": ("gemma", "gemma2", "suffix", "last", True),
}
# suffix + last-token pooling with fused attention: the last layer runs for one row
POOLED_ROW_ONLY = {
    "llama-suffix-last", "mistral-suffix-last-fused", "qwen3-suffix-last-fused",
    "gemma-suffix-last-fused",
}
CLI_CASE = "llama-suffix-last"


def realistic_scale(embedder: Any) -> Any:
    """Scale the alignment so soft vectors have the spread of real token embeddings: a
    random tiny Prompting LLM gives soft tokens near 0, which a weak test cannot tell
    from a missing prompt."""
    import torch

    soft = embedder.soft_prompts([INSTRUCTION])[0].detach()
    target = embedder.backbone.embedding_table.detach().std()
    with torch.no_grad():
        embedder.alignment.weight.mul_(target / soft.std())
    embedder.clear_prompt_cache()
    return embedder


def tiny(backbone: str, model_type: str, placement: str, pooling: str) -> Any:
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder

    spec = get_backbone(backbone)
    return realistic_scale(tiny_embedder(spec, model_type, placement=placement, pooling=pooling))


def export_via_cli(root: Path, case: tuple[str, str, str, str, bool]) -> tuple[Any, Path]:
    """Save tiny folders + an alignment, run ``pe export onnx --int8``, and load the same
    embedder back through ``pe_core.load`` as the reference."""
    import pe_core
    from pe_core.cli.main import main
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    backbone, model_type, placement, pooling, _ = case
    folders = save_tiny_folders(get_backbone(backbone), root / "src", model_type)
    tiny(*case[:4]).save(root / "align")
    out = root / "onnx"
    argv = [
        "export", "onnx", "--alignment", str(root / "align"), "--model", str(folders["model"]),
        "--prompting", str(folders["prompting"]), "--instruction", INSTRUCTION,
        "--out", str(out), "--int8",
    ]
    assert main(argv) == 0
    reference = pe_core.load(
        backbone=backbone, model=str(folders["model"]), prompting=str(folders["prompting"]),
        alignment=str(root / "align"), device="cpu",
    )
    return reference, out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    """Lazily exported graphs: ``exported[case] -> (torch embedder, folder)``."""
    from pe_registry.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx")

    class Lazy(dict):
        def __missing__(self, key: str) -> tuple[Any, Path]:
            if key == CLI_CASE:
                self[key] = export_via_cli(root / key, CASES[key])
            else:
                *model, optimize = CASES[key]
                embedder = tiny(*model)
                folder = export_onnx(embedder, INSTRUCTION, root / key, optimize=optimize)
                self[key] = (embedder, folder)
            return self[key]

    return Lazy()


def random_batches(tokenizer: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fresh (unseeded) padded batches: both sides, batch 1 to 7, short and long."""
    from pe_registry.onnx_export import example_batch

    out = []
    for side in ("right", "left"):
        for batch, max_len in ((1, 6), (3, 17), (7, 40)):
            out.append(example_batch(tokenizer, batch, seed=None, max_len=max_len, side=side))
    return out


def torch_embed(embedder: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    soft = embedder.cached_soft_prompt(INSTRUCTION)
    with torch.no_grad():
        out = embedder(
            torch.from_numpy(ids), torch.from_numpy(mask), soft.expand(len(ids), *soft.shape)
        )
    return out.numpy()


# -- parity -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_parity_on_random_padded_batches(exported: Any, case: str) -> None:
    from pe_registry import OnnxEmbedder

    embedder, folder = exported[case]
    onnx = OnnxEmbedder(folder, precision="fp32", providers=["CPUExecutionProvider"])
    for ids, mask in random_batches(embedder.tokenizer):
        got = onnx.run(ids, mask)
        assert got.shape == (len(ids), embedder.dim) and got.dtype == np.float32
        diff = np.abs(got - torch_embed(embedder, ids, mask)).max()
        assert diff <= TOL, f"{case}: |onnx - torch| = {diff:.2e} (padding {mask.tolist()})"
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_graph_module_reads_like_the_torch_embedder(placement: str, pooling: str) -> None:
    """The module that is exported, run as torch: the whole sequence in one pass gives
    what the torch embedder gives (a suffix over its text cache), with and without the
    prompt, on either padding side; the same layout and pooling serve both."""
    import torch

    from pe_registry.onnx_graph import EmbeddingGraph

    embedder = tiny("llama", "llama", placement, pooling)
    graph, plain = (EmbeddingGraph.from_embedder(embedder, i) for i in (INSTRUCTION, None))
    for ids, mask in random_batches(embedder.tokenizer):
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        with torch.no_grad():
            got, got_plain = graph(ids_t, mask_t).numpy(), plain(ids_t, mask_t).numpy()
            want_plain = embedder(ids_t, mask_t, None).numpy()
        assert np.abs(got - torch_embed(embedder, ids, mask)).max() <= 1e-5
        assert np.abs(got_plain - want_plain).max() <= 1e-5


@pytest.mark.parametrize("case", ["llama-prefix-mean", "qwen2-suffix-mean-fused"])
def test_encode_matches_torch_encode(exported: Any, case: str) -> None:
    from pe_registry import OnnxEmbedder

    embedder, folder = exported[case]
    onnx = OnnxEmbedder(folder)
    got = onnx.encode(TEXTS, batch_size=2)  # several length-sorted batches
    want = embedder.encode(TEXTS, instruction=INSTRUCTION, batch_size=2)
    assert np.abs(got - want).max() <= TOL
    assert onnx.encode(TEXTS[0]).shape == (embedder.dim,)  # a single string
    assert onnx.encode(TEXTS, instruction=INSTRUCTION).shape == (len(TEXTS), embedder.dim)
    torch_out = onnx.encode(TEXTS[:2], convert_to="torch")
    assert tuple(torch_out.shape) == (2, embedder.dim)


def test_folder_contents_and_config(exported: Any) -> None:
    from pe_registry.onnx_embedder import read_onnx_config

    embedder, folder = exported["mistral-prefix-last"]
    names = {p.name for p in folder.iterdir()}
    assert {"model.onnx", "model.onnx.data", "pe_config.json", "tokenizer.json"} <= names
    assert "model_int8.onnx" not in names
    cfg, info = read_onnx_config(folder)
    assert cfg.backbone == "mistral" and cfg.placement == "prefix" and cfg.d_B == embedder.dim
    assert info["instruction"] == INSTRUCTION and info["num_soft_tokens"] == cfg.K
    assert info["parity"]["fp32_max_abs_diff"] <= TOL and info["optimized"] is False
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][-1]])
def test_optimize_fuses_attention(exported: Any, case: str) -> None:
    """Fused graphs (parity: test_parity_on_random_padded_batches); Gemma 2's soft-capped
    attention has no onnxruntime kernel, so only its norms and rotary are fused."""
    from pe_registry.onnx_embedder import read_onnx_config

    _, folder = exported[case]
    _, info = read_onnx_config(folder)
    fused = info["optimized"]
    assert fused["SkipSimplifiedLayerNormalization"] > 0, fused
    assert (fused["MultiHeadAttention"] > 0) == (CASES[case][1] != "gemma2"), fused
    assert fused["PooledRowOnlyLastLayer"] == (case in POOLED_ROW_ONLY), fused
    assert not (folder / "unfused").exists()


def test_sessions_flush_denormals(exported: Any) -> None:
    from pe_registry import OnnxEmbedder

    _, folder = exported["mistral-prefix-last"]
    options = OnnxEmbedder(folder).session.get_session_options()
    assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"


def test_plain_export_is_the_backbone_alone(tmp_path: Path) -> None:
    """``plain=True`` (the benchmark's baseline): no soft prompt, pooled and normalised."""
    import torch

    from pe_registry import OnnxEmbedder
    from pe_registry.onnx_export import export_onnx

    embedder = tiny("mistral", "mistral", "suffix", "mean")
    onnx = OnnxEmbedder(export_onnx(embedder, None, tmp_path / "plain", plain=True))
    assert onnx.instruction is None and onnx.export_info["num_soft_tokens"] == 0
    for ids, mask in random_batches(embedder.tokenizer):
        with torch.no_grad():
            want = embedder(torch.from_numpy(ids), torch.from_numpy(mask), None).numpy()
        assert np.abs(onnx.run(ids, mask) - want).max() <= TOL


# -- CLI and int8 -----------------------------------------------------------------------
def test_cli_export_and_int8(exported: Any) -> None:
    from pe_registry import OnnxEmbedder

    embedder, folder = exported[CLI_CASE]
    assert (folder / "model_int8.onnx").is_file()
    int8 = OnnxEmbedder(str(folder))  # --int8 makes int8 the default
    fp32 = OnnxEmbedder(str(folder), precision="fp32")
    assert int8.precision == "int8" and "int8" in repr(int8)
    assert int8.encode(["hello"]).shape == (1, embedder.dim)
    want = embedder.encode(TEXTS, instruction=INSTRUCTION)
    assert np.abs(fp32.encode(TEXTS) - want).max() <= TOL
    cosines = [(int8.run(i, m) * fp32.run(i, m)).sum(-1) for i, m in random_batches(
        embedder.tokenizer)]
    cosines.append((int8.encode(TEXTS) * want).sum(-1))
    worst = min(float(c.min()) for c in cosines)
    assert worst >= 0.99, f"int8 cosine to fp32 down to {worst:.4f}"


# -- bad input --------------------------------------------------------------------------
def test_instruction_mismatch_is_a_config_error(exported: Any) -> None:
    from pe_core.errors import ConfigError
    from pe_registry import OnnxEmbedder

    _, folder = exported["mistral-prefix-last"]
    onnx = OnnxEmbedder(folder)
    with pytest.raises(ConfigError, match="one graph per instruction"):
        onnx.encode(TEXTS, instruction="Classify the sentiment")
    with pytest.raises(ConfigError, match="no int8 graph"):
        OnnxEmbedder(folder, precision="int8")


def test_position_limit_is_the_torch_embedders(exported: Any) -> None:
    """The graph itself would read positions past the backbone's: the export records the
    limit and encode refuses a max_length beyond it, as the torch embedder does."""
    from pe_core.errors import ConfigError
    from pe_registry import OnnxEmbedder

    embedder, folder = exported["mistral-prefix-last"]
    onnx = OnnxEmbedder(folder)
    limit = embedder._position_limit(INSTRUCTION)
    assert limit is not None and onnx.position_limit == limit
    assert onnx.max_text_tokens() == embedder.max_text_tokens(INSTRUCTION)
    for model in (onnx, embedder):
        with pytest.raises(ConfigError, match=f"max_length <= {limit}"):
            model.encode(TEXTS, instruction=INSTRUCTION, max_length=limit + 1)
    assert onnx.encode(TEXTS, max_length=limit).shape == (len(TEXTS), embedder.dim)


def test_dimension_mismatch_writes_nothing(tmp_path: Path) -> None:
    from pe_core.errors import DimensionMismatchError
    from pe_core.model.alignment import Alignment
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder
    from pe_registry.onnx_export import export_onnx

    embedder = tiny_embedder(get_backbone("qwen"), "qwen2")
    embedder.alignment = Alignment(embedder.config.d_P, embedder.dim + 16)  # wrong d_B
    out = tmp_path / "exports" / "onnx"
    with pytest.raises(DimensionMismatchError, match="d_B"):
        export_onnx(embedder, INSTRUCTION, out)
    assert not (tmp_path / "exports").exists()


def test_cli_dimension_mismatch_writes_nothing(tmp_path: Path, capsys: Any) -> None:
    """An alignment trained for a wider backbone: typed error, exit code 2, no folder."""
    from pe_core.cli.main import main
    from pe_core.model.alignment import Alignment
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders, tiny_embedder

    spec = get_backbone("llama")
    folders = save_tiny_folders(spec, tmp_path / "src")
    embedder = tiny_embedder(spec)
    embedder.save(tmp_path / "align")
    wide = Alignment(embedder.config.d_P, 2 * embedder.dim)
    wide.save(tmp_path / "align" / "alignment.safetensors")
    out = tmp_path / "out"
    code = main([
        "export", "onnx", "--alignment", str(tmp_path / "align"),
        "--model", str(folders["model"]), "--prompting", str(folders["prompting"]),
        "--out", str(out),
    ])
    assert code == 2
    assert "d_B" in capsys.readouterr().err
    assert not out.exists()


def test_non_empty_target_is_refused(tmp_path: Path) -> None:
    from pe_core.errors import ConfigError
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder
    from pe_registry.onnx_export import export_onnx

    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_onnx(tiny_embedder(get_backbone("llama")), INSTRUCTION, out)
    assert os.listdir(out) == ["keep.txt"]


def test_not_an_export_folder(tmp_path: Path) -> None:
    from pe_core.errors import ConfigError, MissingFileError
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder
    from pe_registry import OnnxEmbedder

    with pytest.raises(MissingFileError):
        OnnxEmbedder(tmp_path)
    tiny_embedder(get_backbone("llama")).save(tmp_path / "align")
    with pytest.raises(ConfigError, match="not an exported ONNX folder"):
        OnnxEmbedder(tmp_path / "align")
