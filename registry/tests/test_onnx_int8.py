"""The int8 graph: which nodes stay fp32, and the real-text check that refuses or warns.

One tiny llama (suffix, last-token pooling: the default layout, with the pooled-row
rewrite) is exported once without int8; each test quantises or checks that graph.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if os.environ.get("PE_REQUIRE_ONNX") == "1":
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
else:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

INSTRUCTION = "Retrieve a passage that answers the question"


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder
    from pe_registry.onnx_export import export_onnx

    embedder = tiny_embedder(get_backbone("llama"))
    folder = export_onnx(embedder, INSTRUCTION, tmp_path_factory.mktemp("int8") / "fp32")
    return embedder, folder


def scope(node: Any) -> str:
    """The module a node was traced from (the exporter's metadata), or ''."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            return str(ast.literal_eval(prop.value)[-2])
    return ""


def test_kept_modules_stay_fp32_and_the_rest_go_int8(fp32_export: Any, tmp_path: Path) -> None:
    import onnx

    from pe_registry.onnx_int8 import quantize_int8
    from pe_registry.onnx_optimize import POOLED_ROW_PREFIX

    embedder, folder = fp32_export
    layers = embedder.backbone.model.config.num_hidden_layers
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    linear = {n.name: scope(n) for n in graph.node
              if n.op_type == "MatMul" and scope(n).endswith("_proj")}
    assert len(linear) == 7 * layers  # q k v o gate up down per layer
    keep = ("mlp.down_proj", "self_attn.v_proj")
    kept = {name for name, s in linear.items()
            if s.endswith(keep) or name.startswith(POOLED_ROW_PREFIX)}
    assert len([s for s in linear.values() if s.endswith(keep)]) == 2 * layers

    quantize_int8(folder / "model.onnx", tmp_path / "model_int8.onnx", keep_fp32=keep)
    q = onnx.load(str(tmp_path / "model_int8.onnx")).graph
    still_fp32 = {n.name for n in q.node if n.op_type == "MatMul"}
    assert kept <= still_fp32
    # every other projection became an integer MatMul (its name carries the original's)
    integer = [n.name for n in q.node if n.op_type == "MatMulIntegerToFloat"]
    for name in set(linear) - kept:
        assert name not in still_fp32
        assert any(i.startswith(name) for i in integer), name
    # q/k/v read one tensor, gate/up another: each input is quantised once
    quantised = [n for n in q.node if n.op_type == "QuantizeLinear"]
    assert len(quantised) == len({n.input[0] for n in quantised})


def test_int8_rows_do_not_depend_on_the_batch(fp32_export: Any, tmp_path: Path) -> None:
    """Per-row activation scales: a text embeds the same alone and beside others (one
    scale per tensor made each text's int8 embedding depend on its batch)."""
    from pe_registry import OnnxEmbedder
    from pe_registry.onnx_int8 import check_texts

    folder, _ = int8_folder(fp32_export, tmp_path)
    graph = OnnxEmbedder(folder, precision="int8")
    texts = check_texts(8)
    together = graph.encode(texts, batch_size=8)
    alone = np.stack([graph.encode([t], batch_size=1)[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-5


def one_matmul(tmp_path: Path, w: np.ndarray) -> Path:
    """A graph of one ``x @ w`` MatMul (x: (batch, rows, w.shape[0]))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


def int8_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The rewrite's arithmetic in numpy: per-row activation, per-column weight scales."""
    from pe_registry.onnx_int8 import ACT_MAX, WEIGHT_MAX

    assert WEIGHT_MAX == 127  # the default form: 8-bit weights
    ws = np.abs(w).max(0) / WEIGHT_MAX
    wq = np.clip(np.round(w / ws), -WEIGHT_MAX, WEIGHT_MAX)
    xs = np.abs(x).max(-1, keepdims=True) / ACT_MAX
    xq = np.clip(np.round(x / xs), -ACT_MAX, ACT_MAX)
    return (xq @ wq) * xs * ws


def run_int8(tmp_path: Path, x: np.ndarray, w: np.ndarray, **form: Any) -> np.ndarray:
    """``x @ w`` through the int8 rewrite (``form``: ``quantize_int8``'s level options)."""
    from pe_registry.onnx_embedder import make_session
    from pe_registry.onnx_int8 import quantize_int8

    quantize_int8(one_matmul(tmp_path, w), tmp_path / "q.onnx", keep_fp32=(), **form)
    return make_session(tmp_path / "q.onnx", ["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_per_row_int8_matches_a_numpy_reference(tmp_path: Path) -> None:
    """One MatMul through the rewrite against the same arithmetic in numpy."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    x[0, 1, 3] = 40.0  # an outlier coarsens its own row only
    got = run_int8(tmp_path, x, w)
    assert got.shape == (2, 5, 8)
    np.testing.assert_allclose(got, int8_reference(x, w), rtol=1e-5, atol=1e-5)
    # rows without the outlier stay close to fp32; per tensor they would not
    exact = x @ w
    others = np.ones((2, 5), bool)
    others[0, 1] = False
    rel = np.abs(got - exact)[others].max() / np.abs(exact[others]).max()
    assert rel < 0.02


def test_signed_weights_are_exact_only_where_no_pair_can_saturate(tmp_path: Path) -> None:
    """u8 x s8 runs through a saturating int16 on CPUs without VNNI: signed weights are
    exact at levels that keep every pair within it (7-bit weights), on any CPU."""
    assert 2 * (2 * 127 + 1) * 64 <= 32767 < 2 * (2 * 127 + 1) * 127
    w = np.ones((64, 4), np.float32)
    x = np.ones((1, 2, 64), np.float32)
    got = run_int8(tmp_path, x, w, weight_max=64, unsigned_weights=False)
    np.testing.assert_allclose(got, 64.0, rtol=1e-5)


def test_int8_at_the_extreme_levels_is_exact(tmp_path: Path) -> None:
    """Inputs that put every activation and weight at its largest level: where a pair of
    products overflowed int16 (int8 weights on an AVX2-only CPU), columns were off by
    hundreds; the default form (weights as uint8) gives the exact integer product."""
    rng = np.random.default_rng(1)
    w = np.where(rng.random((64, 16)) < 0.5, -1.0, 1.0).astype(np.float32)
    w[:, ::2] = 1.0  # columns whose every pair is (+max)(+max)
    x = np.ones((1, 4, 64), np.float32)
    x[0, 1] = -1.0
    x[0, 2] = rng.standard_normal(64).astype(np.float32)
    got = run_int8(tmp_path, x, w)
    np.testing.assert_allclose(got, int8_reference(x, w), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got[0, 0, ::2], 64.0, rtol=1e-5)


def test_smoothing_keeps_the_function_and_gives_the_weights_back() -> None:
    import torch

    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder
    from pe_registry.int8_smooth import smoothed
    from pe_registry.onnx_int8 import calibration_texts, check_texts

    embedder = tiny_embedder(get_backbone("llama"))
    before = {k: v.clone() for k, v in embedder.backbone.model.state_dict().items()}
    texts = check_texts(8)
    want = embedder.encode(texts, instruction=INSTRUCTION)
    with smoothed(embedder, calibration_texts(16), 0.8, INSTRUCTION) as groups:
        # per layer: the input norm (q/k/v), the post-attention norm (gate/up), down
        assert groups == 3 * embedder.backbone.model.config.num_hidden_layers
        changed = [k for k, v in embedder.backbone.model.state_dict().items()
                   if not torch.equal(v, before[k])]
        assert any("norm" in k for k in changed) and any("down_proj" in k for k in changed)
        got = embedder.encode(texts, instruction=INSTRUCTION)
        assert float((got * want).sum(-1).min()) > 0.99999
    after = embedder.backbone.model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_nothing_kept_means_every_projection_int8(fp32_export: Any, tmp_path: Path) -> None:
    import onnx

    from pe_registry.onnx_int8 import quantize_int8
    from pe_registry.onnx_optimize import POOLED_ROW_PREFIX

    _, folder = fp32_export
    quantize_int8(folder / "model.onnx", tmp_path / "model_int8.onnx", keep_fp32=())
    q = onnx.load(str(tmp_path / "model_int8.onnx")).graph
    left = [n.name for n in q.node if n.op_type == "MatMul" and scope(n).endswith("_proj")]
    assert left and all(name.startswith(POOLED_ROW_PREFIX) for name in left)


def int8_folder(fp32_export: Any, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    from pe_registry.onnx_folder import seal_export
    from pe_registry.onnx_int8 import quantize_int8

    _, folder = fp32_export
    copy = tmp_path / "graphs"
    shutil.copytree(folder, copy)
    quantize_int8(copy / "model.onnx", copy / "model_int8.onnx")
    config = json.loads((copy / "pe_config.json").read_text())
    config["onnx"]["files"]["int8"] = "model_int8.onnx"
    (copy / "pe_config.json").write_text(json.dumps(config))
    seal_export(copy)  # a changed export: its hashes written again
    return copy, config["onnx"]["files"]


def test_check_measures_the_cosine_to_fp32(fp32_export: Any, tmp_path: Path) -> None:
    from pe_registry import OnnxEmbedder
    from pe_registry.onnx_int8 import CHECK_BATCH, check_int8, check_texts

    embedder, _ = fp32_export
    folder, files = int8_folder(fp32_export, tmp_path)
    texts = check_texts()
    assert len(texts) == 32 and len(set(texts)) == 32
    got = check_int8(embedder.tokenizer, "right", folder, files, max_drop=0.01)
    kw: dict[str, Any] = dict(batch_size=CHECK_BATCH, max_length=128)
    with pytest.warns(UserWarning, match="longer than max_length"):
        fp32 = OnnxEmbedder(folder, precision="fp32").encode(texts, **kw)
    int8 = OnnxEmbedder(folder, precision="int8").encode(texts, **kw)
    cosines = (fp32 * int8).sum(-1)
    assert got["texts"] == 32 and got["forced"] is False
    assert abs(got["mean_cosine"] - cosines.mean()) <= 1e-6
    assert abs(got["min_cosine"] - cosines.min()) <= 1e-6
    assert abs(got["drop"] - (1 - cosines.mean())) <= 1e-6
    assert 0 < got["drop"] <= 0.01  # int8 is not exact, and this recipe keeps it close


def test_bound_zero_refuses_and_writes_nothing(fp32_export: Any, tmp_path: Path) -> None:
    from pe_core.errors import ExportError, Int8DropError
    from pe_registry.onnx_export import export_onnx

    embedder, _ = fp32_export
    out = tmp_path / "out"
    with pytest.raises(Int8DropError, match=r"drop of 0\.\d+, above the bound 0; nothing") as err:
        export_onnx(embedder, INSTRUCTION, out, int8=True, int8_max_drop=0.0)
    assert isinstance(err.value, ExportError)
    assert "--force-int8" in str(err.value)
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no staging folder left either


def test_force_writes_and_warns(fp32_export: Any, tmp_path: Path) -> None:
    from pe_registry import OnnxEmbedder
    from pe_registry.onnx_export import export_onnx

    embedder, _ = fp32_export
    with pytest.warns(UserWarning, match=r"above the bound 0; written anyway"):
        out = export_onnx(embedder, INSTRUCTION, tmp_path / "out", int8=True,
                          int8_max_drop=0.0, force_int8=True)
    check = json.loads((out / "pe_config.json").read_text())["onnx"]["int8_check"]
    assert check["forced"] is True and check["max_drop"] == 0.0 and check["drop"] > 0
    assert OnnxEmbedder(out).precision == "int8"


def test_cli_bound_refuses_with_exit_code(fp32_export: Any, tmp_path: Path, capsys: Any) -> None:
    from pe_core.cli.main import main
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    embedder, _ = fp32_export
    folders = save_tiny_folders(get_backbone("llama"), tmp_path / "src")
    embedder.save(tmp_path / "align")
    out = tmp_path / "out"
    argv = ["export", "onnx", "--alignment", str(tmp_path / "align"),
            "--model", str(folders["model"]), "--prompting", str(folders["prompting"]),
            "--out", str(out), "--int8", "--int8-max-drop", "0"]
    assert main(argv) == 2
    assert "above the bound 0" in capsys.readouterr().err
    assert not out.exists()
    assert main([*argv, "--force-int8"]) == 0
    assert "forced" in capsys.readouterr().out
    assert np.isfinite(json.loads((out / "pe_config.json").read_text())["onnx"]["int8_check"][
        "mean_cosine"])
