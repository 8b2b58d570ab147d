"""Bad input, swept over the Python API and every CLI command.

Each case asserts what a user must see: from the API a :class:`PEError` subclass whose
message says what to do; from the CLI exit code 2 and one line on stderr, no
traceback; and afterwards every saved file (a training run, an alignment folder, the
local registry, the cache) byte-identical to before.
The training side's own matrix (settings, the output folder, ``--overwrite``) is
``tests/test_bad_training_input.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pe_core import validate
from pe_core.errors import (
    ArgumentTypeError,
    ConfigError,
    CorruptFileError,
    DataError,
    MissingExtraError,
    MissingFileError,
    PathError,
    PEError,
)

INSTR = "Retrieve a passage that answers the question"
# the tiny llama has 256 positions; a soft prompt takes K = 5 of them
TEXT_ROOM = 256 - 5


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


# -- the world the cases run against ------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, llama_spec):
    """Tiny model folders, a saved alignment with a manifest, a training run's folder with
    its log, and a local registry holding one entry, all under ``PE_CACHE``."""
    import warnings

    from pe_core.testing.tiny import save_tiny_folders

    root = tmp_path_factory.mktemp("world")
    mp = pytest.MonkeyPatch()
    mp.setenv("PE_CACHE", str(root / "cache"))
    mp.delenv("PE_REGISTRY", raising=False)
    folders = save_tiny_folders(llama_spec, root / "models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pe_core

        model = pe_core.load(backbone="llama", model=str(folders["model"]), allow_untrained=True,
                             prompting=str(folders["prompting"]), device="cpu")
    model.save(root / "alignment", save_prompting=True)
    write_manifest(root / "alignment")
    run = model.save(root / "run", save_prompting=True)
    (run / "log.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 3.0 - i / 10}) + "\n" for i in range(1, 6))
    )
    from pe_registry.api import push

    push(root / "alignment", "demo-llama")
    inputs = root / "inputs"
    inputs.mkdir()
    (inputs / "ok.txt").write_text("first line\nsecond line\n")
    (inputs / "ok.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    (inputs / "pairs.jsonl").write_text("".join(
        json.dumps({"query": f"question {i}", "positive": f"answer {i}"}) + "\n"
        for i in range(8)
    ))
    (inputs / "a_file").write_text("x")
    yield {"root": root, "embedder": model, **{k: str(v) for k, v in folders.items()},
           "alignment": str(root / "alignment"), "run": str(run), "inputs": inputs}
    mp.undo()


def write_manifest(folder: Path) -> None:
    files = {
        p.relative_to(folder).as_posix(): {
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
        for p in sorted(folder.rglob("*")) if p.is_file()
    }
    (folder / "pe_manifest.json").write_text(json.dumps(
        {"format": "pe-manifest/1", "kind": "alignment", "created": "", "files": files}))


@pytest.fixture(scope="module")
def model(world):
    return world["embedder"]


# -- API: encode ------------------------------------------------------------------------
ENCODE_CASES = [
    # (kwargs, error, what the message must say)
    ({"texts": None}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": 123}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": 1.5}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": b"x"}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": bytearray(b"x")}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": {"a": 1}}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": {"a", "b"}}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": object()}, ArgumentTypeError, "string or a list of strings"),
    ({"texts": [None]}, ArgumentTypeError, r"texts\[0\].*pass text"),
    ({"texts": [123]}, ArgumentTypeError, r"texts\[0\].*str\(\) numbers"),
    ({"texts": [1.5]}, ArgumentTypeError, r"texts\[0\].*pass text"),
    ({"texts": [b"x"]}, ArgumentTypeError, r"texts\[0\].*decode bytes"),
    ({"texts": [["a", "b"]]}, ArgumentTypeError, r"texts\[0\].*join pre-tokenised"),
    ({"texts": ["ok", None]}, ArgumentTypeError, r"texts\[1\]"),
    ({"texts": ("a", 3)}, ArgumentTypeError, r"texts\[1\]"),
    ({"texts": [{"text": "a"}]}, ArgumentTypeError, r"texts\[0\]"),
    ({"instruction": ["x"]}, ArgumentTypeError, "separate calls"),
    ({"instruction": ("x",)}, ArgumentTypeError, "separate calls"),
    ({"instruction": 123}, ArgumentTypeError, "string or None"),
    ({"instruction": 1.5}, ArgumentTypeError, "string or None"),
    ({"instruction": b"x"}, ArgumentTypeError, "string or None"),
    ({"instruction": {"a": 1}}, ArgumentTypeError, "string or None"),
    ({"instruction": "word " * 2000}, ConfigError, "shorten the instruction"),
    ({"instruction": "x" * 100_000}, ConfigError, "shorten the instruction"),
    ({"batch_size": 0}, ConfigError, "batch_size must be >= 1"),
    ({"batch_size": -3}, ConfigError, "batch_size must be >= 1"),
    ({"batch_size": 2.5}, ArgumentTypeError, "batch_size must be an integer"),
    ({"batch_size": "8"}, ArgumentTypeError, "batch_size must be an integer"),
    ({"batch_size": None}, ArgumentTypeError, "batch_size must be an integer"),
    ({"batch_size": True}, ArgumentTypeError, "batch_size must be an integer"),
    ({"batch_size": float("nan")}, ArgumentTypeError, "batch_size must be an integer"),
    ({"normalize": "no"}, ArgumentTypeError, "True or False"),
    ({"normalize": "yes"}, ArgumentTypeError, "True or False"),
    ({"normalize": 0}, ArgumentTypeError, "True or False"),
    ({"normalize": 1}, ArgumentTypeError, "True or False"),
    ({"convert_to": "list"}, ConfigError, "'numpy' or 'torch'"),
    ({"convert_to": "NUMPY"}, ConfigError, "'numpy' or 'torch'"),
    ({"convert_to": 1}, ConfigError, "'numpy' or 'torch'"),
    ({"show_progress_bar": "yes"}, ArgumentTypeError, "True or False"),
    ({"show_progress_bar": 1}, ArgumentTypeError, "True or False"),
    ({"max_length": 0}, ConfigError, "max_length must be >= 1"),
    ({"max_length": -5}, ConfigError, "max_length must be >= 1"),
    ({"max_length": 1.5}, ArgumentTypeError, "max_length must be an integer"),
    ({"max_length": "8"}, ArgumentTypeError, "max_length must be an integer"),
    ({"max_length": True}, ArgumentTypeError, "max_length must be an integer"),
    ({"max_length": 1_000_000}, ConfigError, f"pass max_length <= {TEXT_ROOM}"),
    ({"max_length": TEXT_ROOM + 1}, ConfigError, f"pass max_length <= {TEXT_ROOM}"),
    # lone surrogates cannot be tokenised: named before any model runs
    ({"texts": ["\ud800"]}, ArgumentTypeError, r"texts\[0\] holds a lone surrogate"),
    ({"texts": ["ok", "a\udfffb"]}, ArgumentTypeError, r"texts\[1\] holds a lone surrogate"),
    ({"texts": "x\ud800"}, ArgumentTypeError, r"texts\[0\] holds a lone surrogate '\\ud800' "
     "at character 1"),
    ({"instruction": "Retrieve \ud800"}, ArgumentTypeError, "instruction holds a lone"),
    ({"normalize": np.int64(1)}, ArgumentTypeError, "True or False, got numpy.int64"),
    ({"batch_size": np.float64(2)}, ArgumentTypeError, "integer >= 1, got numpy.float64"),
    # sentence-transformers' names: one instruction, agreeing flags
    ({"prompt": "Retrieve"}, ConfigError, "not instruction and prompt"),
    ({"prompt_name": "query"}, ConfigError, "not instruction and prompt_name"),
    ({"normalize_embeddings": False}, ConfigError,
     "normalize=True, normalize_embeddings=False disagree on normalisation"),
    ({"normalize_embeddings": "yes"}, ArgumentTypeError, "normalize_embeddings must be True"),
    ({"convert_to_tensor": True, "convert_to": "numpy"}, ConfigError,
     "convert_to=.numpy., convert_to_tensor=True disagree on the output type"),
    ({"convert_to_numpy": 1}, ArgumentTypeError, "convert_to_numpy must be True or False"),
    ({"truncate_dim": 0}, ConfigError, "truncate_dim must be >= 1"),
    ({"truncate_dim": -4}, ConfigError, "truncate_dim must be >= 1"),
    ({"truncate_dim": 10_000}, ConfigError, "more than the model's"),
    ({"truncate_dim": 2.5}, ArgumentTypeError, "truncate_dim must be an integer"),
    ({"truncate_dim": "8"}, ArgumentTypeError, "truncate_dim must be an integer"),
    ({"precision": "fp16"}, ConfigError, "unknown precision 'fp16'.*int8, uint8, binary"),
    ({"precision": "INT8"}, ConfigError, "unknown precision"),
    ({"precision": None}, ArgumentTypeError, "precision must be a string"),
    ({"precision": 8}, ArgumentTypeError, "precision must be a string"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), ENCODE_CASES,
                         ids=[f"{next(iter(k))}={next(iter(k.values()))!r:.20}"
                              for k, _, _ in ENCODE_CASES])
def test_encode_rejects(model, kwargs, error, match):
    kwargs = {"texts": ["a text"], "instruction": INSTR, **kwargs}
    if "normalize_embeddings" in kwargs:
        kwargs["normalize"] = True
    model.clear_prompt_cache()
    with pytest.raises(error, match=match) as info:
        model.encode(kwargs.pop("texts"), **kwargs)
    assert isinstance(info.value, PEError)
    assert model._prompt_cache == {}  # nothing half-computed is kept


def test_type_and_range_errors_are_also_builtin_errors():
    with pytest.raises(TypeError):
        validate.batch_size("8")
    with pytest.raises(ValueError):
        validate.batch_size(0)


def test_a_plain_string_is_one_text(model):
    one = model.encode("hello there", instruction=INSTR)
    listed = model.encode(["hello there"], instruction=INSTR)
    assert one.shape == (model.dim,)
    np.testing.assert_allclose(one, listed[0], atol=1e-6)


def test_max_length_at_the_limit_is_accepted_and_a_long_text_is_cut_with_a_warning(model):
    long = " ".join(["word"] * 400)
    with pytest.warns(UserWarning, match=f"max_length={TEXT_ROOM}"):
        default = model.encode([long], instruction=INSTR)  # config says 512: lowered
    at_limit = model.encode([long], instruction=INSTR, max_length=TEXT_ROOM)
    np.testing.assert_allclose(default, at_limit, atol=1e-6)


# -- API: the checks the training side will share ------------------------------------------
LR_CASES = [
    (float("nan"), ConfigError), (float("inf"), ConfigError), (-float("inf"), ConfigError),
    (0.0, ConfigError), (-1e-3, ConfigError), ("1e-3", ArgumentTypeError),
    (None, ArgumentTypeError), (True, ArgumentTypeError),
]
INT_CASES = [
    ("3", ArgumentTypeError), (1.5, ArgumentTypeError), (0, ConfigError), (-1, ConfigError),
    (None, ArgumentTypeError), (False, ArgumentTypeError),
]
# no machine has 99 GPUs, so cuda:99 is wrong everywhere
DEVICE_CASES = ["tpu9", "cuda:99", "cuda:-1", "CPU", "gpu", "cuda:x", ""]
CONFIG_FILE_CASES = [b"[1, 2]", b"{not json", b'{"backbone": "\xe9"}', b""]
DECODE_CASES = [
    (b"caf\xe9\n", r":1 is not UTF-8 \(byte 0xe9\).*iconv"),
    (b"ok\nok\n\xff\xfe", r":3 is not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary file"),
]
EXTRA_CASES = [
    ("pe_core.eval.mteb_env:prepare_mteb", "mteb", "pe-core[eval]"),
    ("pe_registry.onnx_export:require_onnx_extra", "onnxscript", "pe-registry[onnx]"),
    ("pe_registry.onnx_embedder:import_onnxruntime", "onnxruntime", "pe-registry[onnx]"),
]
# single cases: flipped alignment bytes, unreadable manifest, unknown registry version,
# plot without matplotlib, five path checks
SINGLE_CASES = 9


@pytest.mark.parametrize(("value", "error"), LR_CASES)
def test_learning_rate_rejects(value, error):
    with pytest.raises(error, match="lr must be"):
        validate.learning_rate(value, "lr")


@pytest.mark.parametrize(("value", "error"), INT_CASES)
def test_integer_rejects(value, error):
    with pytest.raises(error, match="steps must be"):
        validate.integer(value, "steps")


@pytest.mark.parametrize("value", DEVICE_CASES)
def test_device_rejects(value):
    with pytest.raises(ConfigError, match="use cpu|cuda:0 to"):
        validate.device(value)


def test_device_accepts_cpu():
    assert validate.device("cpu") == "cpu" and validate.device(None) is None
    with pytest.raises(ArgumentTypeError, match="device must be a string"):
        validate.device(3)


# -- API: pe_config.json ----------------------------------------------------------------------
CONFIG_CASES = [
    ({"d_B": "256"}, "d_B must be int"),
    ({"d_P": True}, "d_P must be int"),
    ({"d_P": 2.0}, "d_P must be int"),
    ({"num_soft_tokens": "5"}, "num_soft_tokens must be int"),
    ({"num_soft_tokens": 0}, "num_soft_tokens"),
    ({"max_length": None}, "max_length must be int"),
    ({"max_length": 0}, "max_length must be >= 1"),
    ({"backbone": 7}, "backbone must be str"),
    ({"placement": "middle"}, "placement must be one of"),
    ({"pooling": ["last"]}, "pooling must be str"),
    ({"template": "no slot"}, "template must contain"),
    ({"document_instruction": 5}, "document_instruction must be str or null"),
    ({"eval_results": []}, "eval_results must be dict"),
    ({"K": 5}, "unknown keys"),
]


@pytest.mark.parametrize(("change", "match"), CONFIG_CASES,
                         ids=[next(iter(c)) + "-" + str(i) for i, (c, _) in
                              enumerate(CONFIG_CASES)])
def test_pe_config_with_a_wrong_value_is_a_config_error(world, tmp_path, change, match):
    import shutil

    import pe_core

    folder = Path(shutil.copytree(world["alignment"], tmp_path / "a"))
    (folder / "pe_manifest.json").unlink()
    data = json.loads((folder / "pe_config.json").read_text())
    data.update(change)
    (folder / "pe_config.json").write_text(json.dumps(data))
    before = tree_digest(folder)
    with pytest.raises(ConfigError, match=match):
        pe_core.load(backbone="llama", alignment=str(folder), device="cpu")
    assert tree_digest(folder) == before


@pytest.mark.parametrize("content", CONFIG_FILE_CASES)
def test_pe_config_that_is_not_a_json_object(world, tmp_path, content):
    from pe_core.model.config import EmbedderConfig

    (tmp_path / "pe_config.json").write_bytes(content)
    with pytest.raises(ConfigError, match="pe_config.json"):
        EmbedderConfig.load(tmp_path)


# -- API: files beside an alignment, resolvers, extras -------------------------------------------
def test_alignment_folder_with_flipped_bytes_fails_its_manifest(world, tmp_path):
    import shutil

    import pe_core

    folder = Path(shutil.copytree(world["alignment"], tmp_path / "a"))
    weights = folder / "alignment.safetensors"
    data = bytearray(weights.read_bytes())
    for i in range(len(data) - 100, len(data)):  # tensor bytes: the header still parses
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = tree_digest(folder)
    with pytest.raises(CorruptFileError, match="does not match the sha256.*pull it again"):
        pe_core.load(backbone="llama", alignment=str(folder), device="cpu")
    assert tree_digest(folder) == before
    (folder / "pe_manifest.json").unlink()  # without a manifest there is nothing to check
    pe_core.load(backbone="llama", alignment=str(folder), device="cpu")


def test_alignment_folder_whose_manifest_is_unreadable(world, tmp_path):
    import shutil

    import pe_core

    folder = Path(shutil.copytree(world["alignment"], tmp_path / "a"))
    (folder / "pe_manifest.json").write_text('{"files": [1]}')
    with pytest.raises(CorruptFileError, match="not a readable manifest"):
        pe_core.load(backbone="llama", alignment=str(folder), device="cpu")


def test_unknown_registry_version_does_not_ask_to_install_pe_registry(world):
    from pe_core.loading import resolve_alignment

    with pytest.raises(MissingFileError) as info:
        resolve_alignment("demo-llama@99")
    assert "pip install" not in str(info.value) and "pe list" in str(info.value)


@pytest.mark.parametrize(("call", "hidden", "extra"), EXTRA_CASES)
def test_a_missing_extra_names_what_to_install(monkeypatch, call, hidden, extra):
    import importlib
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda m, *a: None if m == hidden else real(m, *a))
    module, name = call.split(":")
    expected = re.escape(f"needs {hidden}: pip install '{extra}'")
    with pytest.raises(MissingExtraError, match=expected):
        getattr(importlib.import_module(module), name)()


def test_plot_without_matplotlib_names_the_train_extra(world, monkeypatch):
    import importlib.util

    from pe_core.training.plot import plot_run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda m, *a: None if m == "matplotlib" else real(m, *a))
    before = tree_digest(Path(world["run"]))
    with pytest.raises(MissingExtraError, match=r"pip install 'pe-core\[train\]'"):
        plot_run(world["run"])
    assert tree_digest(Path(world["run"])) == before


# -- API: paths --------------------------------------------------------------------------------
def test_path_checks(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PathError, match="is a file, not a folder"):
        validate.output_file(tmp_path / "f" / "x.npy")
    with pytest.raises(PathError, match="is a folder"):
        validate.output_file(tmp_path)
    with pytest.raises(PathError, match="is a folder, not a file"):
        validate.input_file(tmp_path)
    with pytest.raises(MissingFileError, match="does not exist"):
        validate.input_file(tmp_path / "nope")
    assert validate.output_file(tmp_path / "new" / "deeper" / "x.npy")
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.parametrize(("data", "match"), DECODE_CASES)
def test_decode_text_names_the_line(data, match):
    with pytest.raises(DataError, match=match):
        validate.decode_text(data, "in.txt")


# -- CLI ------------------------------------------------------------------------------------
def run_cli(argv: list[str], capsys, stdin: bytes | None = None) -> tuple[int, str]:
    import warnings

    from pe_core.cli.main import main

    capsys.readouterr()
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    finally:
        sys.stdin = old
    return code, capsys.readouterr().err


def model_args(world: dict) -> list[str]:
    return ["--backbone", "llama", "--model", world["model"], "--prompting",
            world["prompting"], "--device", "cpu", "--allow-untrained"]


def cli_cases() -> list:
    """``(id, argv builder, stdin)``; the builder gets the world and a fresh folder."""
    def enc(*extra, inp="ok.txt", out="o.npy"):
        return lambda w, t: ["encode", *model_args(w), *(
            [str(w["inputs"] / inp)] if inp else []), *(["-o", str(t / out)] if out else []),
            *extra]

    def cmd(*argv):
        return lambda w, t: [a.format(**w, tmp=t) if isinstance(a, str) else a for a in argv]

    train = ["train", "--backbone", "llama", "--model", "{model}", "--prompting",
             "{prompting}", "--data", "{inputs}/pairs.jsonl", "--out", "{tmp}/r",
             "--device", "cpu", "--steps", "1", "--batch-size", "4", "--no-progress"]
    align = ["align", "--from", "{run}", "--backbone", "llama", "--model", "{model}",
             "--data", "{inputs}/pairs.jsonl", "--out", "{tmp}/r", "--device", "cpu",
             "--steps", "1", "--batch-size", "4", "--no-progress"]
    cases = [
        # argparse usage errors, every command
        ("pe-unknown-command", cmd("frobnicate"), None),
        *[(f"{c}-unknown-option", cmd(*c.split(), "--bogus"), None) for c in (
            "plugins", "backbones", "models", "encode", "eval", "train", "align", "plot",
            "demo", "push", "pull", "list", "remove", "export onnx")],
        ("encode-no-output", enc(out=None), None),
        ("encode-no-input", enc(inp=None), None),
        ("encode-batch-size-x", enc("--batch-size", "x"), None),
        ("encode-batch-size-2.5", enc("--batch-size", "2.5"), None),
        ("plot-no-run", cmd("plot"), None),
        ("pull-no-ref", cmd("pull"), None),
        ("remove-no-ref", cmd("remove"), None),
        ("demo-steps-x", cmd("demo", "--train-steps", "x"), None),
        ("train-method-bogus", cmd(*train, "--method", "bogus"), None),
        ("train-steps-x", cmd(*train, "--steps", "x"), None),
        ("train-bf16-maybe", cmd(*train, "--bf16", "maybe"), None),
        ("align-init-bogus", cmd(*align, "--init", "bogus"), None),
        ("train-no-data", cmd("train", "--backbone", "llama", "--out", "{tmp}/r"), None),
        # encode: input files
        ("encode-missing-input", enc(inp="missing.txt"), None),
        ("encode-folder-input", lambda w, t: ["encode", *model_args(w), str(w["inputs"]),
                                              "-o", str(t / "o.npy")], None),
        ("encode-latin1", enc(inp="latin1.txt"), None),
        ("encode-binary", enc(inp="binary.txt"), None),
        ("encode-empty", enc(inp="empty.txt"), None),
        ("encode-empty-jsonl", enc(inp="empty.jsonl"), None),
        ("encode-blank-jsonl", enc(inp="blank.jsonl"), None),
        ("encode-jsonl-not-json", enc(inp="bad.jsonl"), None),
        ("encode-jsonl-no-field", enc(inp="nofield.jsonl"), None),
        ("encode-jsonl-field-not-str", enc(inp="numfield.jsonl"), None),
        ("encode-jsonl-list-record", enc(inp="list.jsonl"), None),
        ("encode-jsonl-other-field", enc("--field", "body", inp="ok.jsonl"), None),
        ("encode-stdin-binary", lambda w, t: ["encode", *model_args(w), "-", "-o",
                                              str(t / "o.npy")], b"\x00\x01\x02binary"),
        ("encode-stdin-latin1", lambda w, t: ["encode", *model_args(w), "-", "-o",
                                              str(t / "o.npy")], b"caf\xe9\n"),
        ("encode-stdin-empty", lambda w, t: ["encode", *model_args(w), "-", "-o",
                                             str(t / "o.npy")], b""),
        # encode: output paths, before the work
        ("encode-output-under-file", lambda w, t: ["encode", *model_args(w),
                                                   str(w["inputs"] / "ok.txt"), "-o",
                                                   str(w["inputs"] / "a_file" / "x.npy")],
         None),
        ("encode-output-is-folder", lambda w, t: ["encode", *model_args(w),
                                                  str(w["inputs"] / "ok.txt"), "-o",
                                                  str(t / "dir.npy")], None),
        ("encode-output-suffix-txt", enc(out="o.txt"), None),
        ("encode-output-no-suffix", enc(out="o"), None),
        # encode: ranges
        ("encode-batch-size-0", enc("--batch-size", "0"), None),
        ("encode-batch-size--3", enc("--batch-size", "-3"), None),
        ("encode-max-length-0", enc("--max-length", "0"), None),
        ("encode-max-length--5", enc("--max-length", "-5"), None),
        ("encode-max-length-1e6", enc("--max-length", "1000000"), None),
        ("encode-long-instruction", enc("--instruction", "x" * 100_000), None),
        ("encode-device-tpu9", lambda w, t: [*enc()(w, t), "--device", "tpu9"], None),
        ("encode-device-cuda99", lambda w, t: [*enc()(w, t), "--device", "cuda:99"], None),
        ("encode-dtype-float8", lambda w, t: [*enc()(w, t), "--dtype", "float8"], None),
        # encode: models and alignments
        ("encode-unknown-backbone", lambda w, t: ["encode", "--backbone", "nope",
                                                  str(w["inputs"] / "ok.txt"), "-o",
                                                  str(t / "o.npy")], None),
        ("encode-missing-model", lambda w, t: ["encode", "--backbone", "llama", "--model",
                                               str(t / "nomodel"), str(w["inputs"] / "ok.txt"),
                                               "-o", str(t / "o.npy")], None),
        ("encode-wrong-family", lambda w, t: ["encode", "--backbone", "qwen", "--model",
                                              w["model"], "--prompting", w["prompting"],
                                              str(w["inputs"] / "ok.txt"), "-o",
                                              str(t / "o.npy")], None),
        ("encode-alignment-unknown-version", enc("--alignment", "demo-llama@99"), None),
        ("encode-alignment-unknown-name", enc("--alignment", "nope-nope"), None),
        ("encode-alignment-corrupt", enc("--alignment", "CORRUPT"), None),
        ("encode-alignment-bad-config", enc("--alignment", "BADCONFIG"), None),
        ("encode-alignment-not-alignment", lambda w, t: [*enc()(w, t), "--alignment",
                                                         str(w["inputs"])], None),
        # encode: text the tokenizer cannot take, named options
        ("encode-jsonl-lone-surrogate", enc(inp="surrogate.jsonl"), None),
        ("encode-instruction-lone-surrogate", enc("--instruction", "x\udced"), None),
        ("encode-instruction-and-prompt-name", enc("--instruction", "x", "--prompt-name",
                                                   "query"), None),
        ("encode-unknown-prompt-name", enc("--prompt-name", "nope"), None),
        ("encode-truncate-dim-0", enc("--truncate-dim", "0"), None),
        ("encode-truncate-dim-above-width", enc("--truncate-dim", "100000"), None),
        ("encode-precision-fp16", enc("--precision", "fp16"), None),
        ("encode-no-backbone-no-alignment", lambda w, t: [
            "encode", str(w["inputs"] / "ok.txt"), "-o", str(t / "o.npy")], None),
        # eval
        ("eval-batch-size-0", cmd("eval", "--backbone", "llama", "--batch-size", "0",
                                  "--no-cache"), None),
        ("eval-unknown-task", cmd("eval", "--backbone", "llama", "--tasks", "NoSuchTask",
                                  "--no-cache"), None),
        ("eval-unknown-split", cmd("eval", "--backbone", "llama", "--split", "bogus",
                                   "--no-cache"), None),
        ("eval-device-tpu9", cmd("eval", "--backbone", "llama", "--device", "tpu9"), None),
        ("eval-results-under-file", cmd("eval", "--backbone", "llama", "--results",
                                        "{inputs}/a_file/r"), None),
        ("eval-unknown-backbone", cmd("eval", "--backbone", "nope", "--no-cache"), None),
        # plot
        ("plot-missing-run", cmd("plot", "{tmp}/norun"), None),
        ("plot-folder-without-log", cmd("plot", "{inputs}"), None),
        ("plot-output-under-file", cmd("plot", "{run}", "-o", "{inputs}/a_file/p.png"), None),
        ("plot-output-is-folder", cmd("plot", "{run}", "-o", "{tmp}"), None),
        ("plot-latin1-log", cmd("plot", "{inputs}/latin1.txt"), None),
        ("plot-log-without-loss", cmd("plot", "{inputs}/ok.jsonl"), None),
        # demo: settings checked before minutes of work
        ("demo-train-steps-0", cmd("demo", "--train-steps", "0", "--out", "{tmp}/d"), None),
        ("demo-batch-size-0", cmd("demo", "--batch-size", "0", "--out", "{tmp}/d"), None),
        ("demo-lora-lr-nan", cmd("demo", "--lora-lr", "nan", "--out", "{tmp}/d"), None),
        ("demo-lora-lr-inf", cmd("demo", "--lora-lr", "inf", "--out", "{tmp}/d"), None),
        ("demo-out-under-file", cmd("demo", "--out", "{inputs}/a_file/d"), None),
        # registry commands
        ("push-missing-source", cmd("push", "{tmp}/nosource"), None),
        ("push-repo-without-org", cmd("push", "{alignment}", "--repo", "noslash"), None),
        ("push-local-hub-like", cmd("push", "{alignment}", "--local", "a/b"), None),
        ("push-two-destinations", cmd("push", "{alignment}", "x", "--repo", "o/x"), None),
        ("pull-unknown-version", cmd("pull", "demo-llama@99"), None),
        ("pull-hub-offline", cmd("pull", "some-org/some-repo"), None),
        ("list-author-without-hub", cmd("list", "--author", "me"), None),
        ("remove-unknown", cmd("remove", "nope@1"), None),
        ("export-no-alignment-no-backbone", cmd("export", "onnx", "--out", "{tmp}/x"), None),
        ("export-out-under-file", cmd("export", "onnx", "--backbone", "llama", "--out",
                                      "{inputs}/a_file/x"), None),
        ("export-out-not-empty", cmd("export", "onnx", "--backbone", "llama", "--out",
                                     "{inputs}"), None),
        ("export-device-tpu9", cmd("export", "onnx", "--backbone", "llama", "--out",
                                   "{tmp}/x", "--device", "tpu9"), None),
        ("export-alignment-unknown", cmd("export", "onnx", "--alignment", "demo-llama@99",
                                         "--out", "{tmp}/x"), None),
        # train / align: what already fails cleanly ...
        ("train-steps-0", cmd(*train, "--steps", "0"), None),
        ("train-temperature-0", cmd(*train, "--temperature", "0"), None),
        ("train-lr-0", cmd(*train, "--lr", "0"), None),
        ("train-unknown-backbone", cmd(*[a if a != "llama" else "nope" for a in train]), None),
        ("train-data-not-jsonl-pairs", cmd(*[a if not a.endswith("pairs.jsonl") else
                                             "{inputs}/ok.jsonl" for a in train]), None),
        ("align-missing-source", cmd(*[a if a != "{run}" else "{tmp}/norun" for a in align]),
         None),
        ("align-steps-0", cmd(*align, "--steps", "0"), None),
        ("train-missing-data", cmd(*[a if not a.endswith("pairs.jsonl") else
                                     "{tmp}/missing.jsonl" for a in train]), None),
        # ... and what the training side's one check per setting catches
        ("train-lr-inf", cmd(*train, "--lr", "inf"), None),
        ("train-alignment-lr-nan", cmd(*train, "--alignment-lr", "nan"), None),
        ("train-keep-checkpoints-0", cmd(*train, "--keep-checkpoints", "0"), None),
        ("train-warmup--5", cmd(*train, "--warmup", "-5"), None),
        ("train-device-tpu9", cmd(*train, "--device", "tpu9"), None),
        ("train-out-under-file", cmd(*[a if a != "{tmp}/r" else "{inputs}/a_file/r"
                                       for a in train]), None),
        ("align-lr-inf", cmd(*align, "--alignment-lr", "inf"), None),
    ]
    return cases


CLI_CASES = cli_cases()


def _prepare_inputs(world: dict, tmp: Path) -> None:
    import shutil

    inputs = world["inputs"]
    samples = {
        "latin1.txt": b"caf\xe9 au lait\n", "binary.txt": b"\x7fELF\x00\x00\x01",
        "empty.txt": b"", "empty.jsonl": b"", "blank.jsonl": b"\n\n  \n",
        "bad.jsonl": b'{"text": "a"}\n{oops\n', "nofield.jsonl": b'{"body": "a"}\n',
        "numfield.jsonl": b'{"text": 3}\n', "list.jsonl": b'["a"]\n',
        "surrogate.jsonl": b'{"text": "a"}\n{"text": "b\\ud800"}\n',
    }
    for name, data in samples.items():
        if not (inputs / name).exists():
            (inputs / name).write_bytes(data)
    (tmp / "dir.npy").mkdir()
    corrupt = tmp / "corrupt"
    if not corrupt.exists():
        shutil.copytree(world["alignment"], corrupt)
        weights = corrupt / "alignment.safetensors"
        data = bytearray(weights.read_bytes())
        data[-100:] = bytes(b ^ 0xFF for b in data[-100:])
        weights.write_bytes(bytes(data))
        bad = shutil.copytree(world["alignment"], tmp / "badconfig")
        (bad / "pe_manifest.json").unlink()
        cfg = json.loads((bad / "pe_config.json").read_text())
        (bad / "pe_config.json").write_text(json.dumps({**cfg, "d_B": "256"}))


@pytest.mark.parametrize(("argv", "stdin"), [
    pytest.param(build, stdin, id=name)
    for name, build, stdin in CLI_CASES
])
def test_cli_bad_input_exits_2_with_one_line(world, tmp_path, capsys, argv, stdin):
    _prepare_inputs(world, tmp_path)
    args = [str(tmp_path / "corrupt") if a == "CORRUPT" else
            str(tmp_path / "badconfig") if a == "BADCONFIG" else a
            for a in argv(world, tmp_path)]
    before = tree_digest(world["root"])
    code, err = run_cli(args, capsys, stdin)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    assert tree_digest(world["root"]) == before
    assert not (tmp_path / "o.npy").exists()


# -- CLI: what works now that used to be wrong ----------------------------------------------
def test_encode_keeps_blank_lines_so_rows_match_lines(world, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("first\n\nthird\n")
    out = tmp_path / "o.npy"
    code, err = run_cli(["encode", *model_args(world), str(tmp_path / "in.txt"), "-o",
                         str(out), "--instruction", INSTR], capsys)
    assert code == 0, err
    vectors = np.load(out)
    assert vectors.shape == (3, world["embedder"].dim)
    expected = world["embedder"].encode(["first", "", "third"], instruction=INSTR)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_encode_rows_are_lines_whatever_unicode_breaks_they_hold(world, tmp_path, capsys):
    """U+2028, U+0085, \\f, \\v, U+001E are line breaks to ``str.splitlines`` but
    characters inside a line here; CRLF endings lose their \\r; JSONL takes them raw."""
    texts = ["one\u2028two", "three\x85four", "five\fsix", "", "seven\vx\x1ey"]
    (tmp_path / "in.txt").write_bytes("\r\n".join(texts).encode() + b"\r\n")
    jsonl = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts
                    if t)
    (tmp_path / "in.jsonl").write_text(jsonl, encoding="utf-8")
    want = world["embedder"].encode(texts, instruction=INSTR)
    for name, rows in (("in.txt", want), ("in.jsonl", want[[0, 1, 2, 4]])):
        out = tmp_path / "o.npy"
        code, err = run_cli(["encode", *model_args(world), str(tmp_path / name), "-o",
                             str(out), "--instruction", INSTR], capsys)
        assert code == 0, err
        np.testing.assert_allclose(np.load(out), rows, atol=1e-5)


def test_encode_checks_the_texts_before_the_model_loads(world, tmp_path, capsys,
                                                         monkeypatch):
    import pe_core

    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n{"text": "b\\udc80"}\n')
    monkeypatch.setattr(pe_core, "load", lambda *a, **k: pytest.fail("loaded the model"))
    code, err = run_cli(["encode", *model_args(world), str(tmp_path / "in.jsonl"), "-o",
                         str(tmp_path / "o.npy")], capsys)
    assert code == 2 and "in.jsonl:2: field 'text' holds a lone surrogate" in err, err


def test_encode_prompt_name_truncate_dim_precision(world, tmp_path, capsys):
    from sentence_transformers import quantize_embeddings

    (tmp_path / "in.txt").write_text("first\nsecond text\nthird\n")
    texts = ["first", "second text", "third"]
    emb = world["embedder"]
    out = tmp_path / "o.npy"
    code, err = run_cli(["encode", *model_args(world), str(tmp_path / "in.txt"), "-o",
                         str(out), "--prompt-name", "query", "--truncate-dim", "16",
                         "--precision", "int8"], capsys)
    assert code == 0, err
    want = quantize_embeddings(emb.encode_query(texts, truncate_dim=16), "int8")
    np.testing.assert_array_equal(np.load(out), want)


def test_encode_reads_utf8_stdin(world, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    code, err = run_cli(["encode", *model_args(world), "-", "-o", str(out)], capsys,
                        stdin="café\nnaïve\n".encode())
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["café", "naïve"]


@pytest.mark.slow  # runs pe in a subprocess
def test_broken_pipe_is_quiet():
    """``pe backbones | head -0``: the reader is gone before pe writes; exit 0, no
    traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "pe_core.cli", "backbones"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the interpreter has imported pe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


# -- the sweep's counts -------------------------------------------------------------------------
def test_matrix_is_at_least_the_issue_sweep():
    """The issue's sweep tried 198 bad inputs; this file tries at least as many."""
    api = sum(map(len, (ENCODE_CASES, CONFIG_CASES, CONFIG_FILE_CASES, LR_CASES, INT_CASES,
                        DEVICE_CASES, DECODE_CASES, EXTRA_CASES))) + SINGLE_CASES
    assert len(CLI_CASES) + api >= 198, (len(CLI_CASES), api)
