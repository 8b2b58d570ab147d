"""Bad input to training (``pe_core.train``/``align``, ``pe train``/``pe align``): every
case is a typed :class:`PEError` whose message says what to pass (exit code 2 and one
line from the CLI), raised before anything is written, and the run that ``out`` held is
byte-identical afterwards; ``--overwrite`` swaps a new run in only once it is complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

import pe_core
from pe_core.errors import (
    ArgumentTypeError,
    ConfigError,
    DataError,
    MissingFileError,
    PathError,
    PEError,
    TrainingDivergedError,
)

pytestmark = pytest.mark.usefixtures("one_thread")
INSTRUCTION = "Retrieve the documentation"
WORDS = "alpha beta gamma delta file open read write sum number fox dog".split()


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path ({} when it is absent)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    rows = [{"query": f"{a} {b}", "positive": f"{a} {b} {c} {d}", "instruction": INSTRUCTION}
            for a, b, c, d in zip(WORDS, WORDS[3:] + WORDS[:3], WORDS[5:] + WORDS[:5],
                                  WORDS[7:] + WORDS[:7], strict=True)]
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(pairs, folders, out, **kw):
    opts = dict(steps=2, batch_size=4, lr=1e-3, progress=False, save_every=1)
    opts.update(kw)
    return pe_core.train(str(pairs), backbone="llama", model=str(folders["model"]),
                         prompting=str(folders["prompting"]), out=out, **opts)


@pytest.fixture(scope="module")
def old_run(pairs, tiny_folders, tmp_path_factory) -> Path:
    """A complete run (weights, prompting/, checkpoints, log) that bad input must leave
    exactly as it is."""
    out = tmp_path_factory.mktemp("old") / "run"
    _train(pairs, tiny_folders, out)
    return out


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


# -- settings: one check per field, the same from the API and the CLI ----------------------
SETTINGS_CASES = [
    # (keyword, bad value, error type)
    ("steps", "3", ArgumentTypeError), ("steps", 1.5, ArgumentTypeError),
    ("steps", True, ArgumentTypeError), ("steps", 0, ConfigError), ("steps", -1, ConfigError),
    ("epochs", 0, ConfigError), ("epochs", math.inf, ConfigError),
    ("epochs", "1", ArgumentTypeError),
    ("batch_size", 0, ConfigError), ("batch_size", "8", ArgumentTypeError),
    ("batch_size", 2.5, ArgumentTypeError),
    ("lr", math.nan, ConfigError), ("lr", math.inf, ConfigError), ("lr", -1e-3, ConfigError),
    ("lr", 0, ConfigError), ("lr", "1e-3", ArgumentTypeError), ("lr", None, ArgumentTypeError),
    ("alignment_lr", math.nan, ConfigError), ("alignment_lr", math.inf, ConfigError),
    ("alignment_lr", 0.0, ConfigError), ("lora_lr", math.nan, ConfigError),
    ("weight_decay", -0.1, ConfigError), ("weight_decay", math.nan, ConfigError),
    ("warmup", -5, ConfigError), ("warmup", math.nan, ConfigError),
    ("max_grad_norm", -1.0, ConfigError), ("max_grad_norm", math.inf, ConfigError),
    ("temperature", 0, ConfigError), ("temperature", 2.0, ConfigError),
    ("temperature", math.nan, ConfigError),
    ("hard_negatives", -1, ConfigError), ("hard_negatives", 1.0, ArgumentTypeError),
    ("gumbel_tau_start", 0.0, ConfigError), ("gumbel_tau_end", -1.0, ConfigError),
    ("gumbel_anneal_steps", 0, ConfigError), ("gumbel_noise", "yes", ArgumentTypeError),
    ("straight_through", 1, ArgumentTypeError), ("prompting_lora", -4, ConfigError),
    ("prompting_lora", 1.5, ArgumentTypeError), ("lora_r", 0, ConfigError),
    ("lora_alpha", 0, ConfigError), ("lora_dropout", 1.0, ConfigError),
    ("grad_cache_chunk", -1, ConfigError), ("gradient_checkpointing", "no", ArgumentTypeError),
    ("bf16", "yes", ArgumentTypeError), ("text_kv_cache_mb", -1.0, ConfigError),
    ("save_every", 0, ConfigError), ("keep_checkpoints", 0, ConfigError),
    ("keep_checkpoints", 1.5, ArgumentTypeError), ("eval_every", -1, ConfigError),
    ("dev_size", -1, ConfigError), ("eval_batch_size", 0, ConfigError),
    ("seed", -1, ConfigError), ("seed", "0", ArgumentTypeError), ("seed", 2**63, ConfigError),
    ("progress", "no", ArgumentTypeError),
]


@pytest.mark.parametrize(("key", "value", "error"), SETTINGS_CASES,
                         ids=[f"{k}={v!r}" for k, v, _ in SETTINGS_CASES])
def test_bad_setting_is_refused_before_anything_is_written(pairs, tiny_folders, old_run,
                                                           key, value, error):
    before = tree_digest(old_run)
    with pytest.raises(error, match=rf"{key} must be ") as info:
        _train(pairs, tiny_folders, old_run, overwrite=True, **{key: value})
    assert isinstance(info.value, PEError)
    assert isinstance(info.value, TypeError if error is ArgumentTypeError else ValueError)
    assert tree_digest(old_run) == before
    assert not [p for p in old_run.parent.iterdir() if p.name.startswith(".")]


def test_align_settings_take_the_same_check(old_run, pairs, tmp_path):
    from pe_core.training.settings import TrainSettings

    for key, value, error in [("alignment_lr", math.inf, ConfigError),
                              ("steps", "3", ArgumentTypeError), ("warmup", -5, ConfigError)]:
        with pytest.raises(error, match=rf"{key} must be "):
            pe_core.align(old_run, str(pairs), backbone="qwen", out=tmp_path / "a",
                          **{key: value})
        with pytest.raises(error, match=rf"{key} must be "):
            TrainSettings(method="align", **{key: value})
    assert not (tmp_path / "a").exists()


def test_good_values_are_kept_as_plain_numbers():
    from pe_core.training.settings import TrainSettings

    s = TrainSettings(steps=torch.tensor(3).item(), epochs=2, warmup=10, seed=2**63 - 1)
    assert (s.steps, s.epochs, s.warmup, s.seed) == (3, 2.0, 10.0, 2**63 - 1)
    assert type(s.epochs) is float and type(s.steps) is int
    assert TrainSettings(gumbel_anneal_steps=None, bf16=None, alignment_lr=None).bf16 is None


# -- the arguments that are not settings --------------------------------------------------
# (id, keywords given the case's paths, error type); out is the old run with overwrite=True
# unless a case says otherwise
ARG_CASES = [
    ("out-None", lambda p: {"out": None}, ArgumentTypeError),
    ("out-int", lambda p: {"out": 5}, ArgumentTypeError),
    ("out-empty", lambda p: {"out": ""}, ArgumentTypeError),
    ("out-is-file", lambda p: {"out": p["file"]}, PathError),
    ("out-under-file", lambda p: {"out": p["file"] / "run"}, PathError),
    ("device-tpu9", lambda p: {"device": "tpu9"}, ConfigError),
    ("device-cuda:99", lambda p: {"device": "cuda:99"}, ConfigError),
    ("device-int", lambda p: {"device": 0}, ArgumentTypeError),
    ("resume-str", lambda p: {"resume": "yes"}, ArgumentTypeError),
    ("overwrite-int", lambda p: {"overwrite": 1}, ArgumentTypeError),
    ("on_step-int", lambda p: {"on_step": 5}, ArgumentTypeError),
    ("dtype-float8", lambda p: {"dtype": "float8"}, ConfigError),
    ("dtype-int", lambda p: {"dtype": 16}, ArgumentTypeError),
    ("backbone-None", lambda p: {"backbone": None}, ArgumentTypeError),
    ("backbone-int", lambda p: {"backbone": 3}, ArgumentTypeError),
    ("model-int", lambda p: {"model": 5}, ArgumentTypeError),
    ("prompting-list", lambda p: {"prompting": ["p"]}, ArgumentTypeError),
    ("settings-dict", lambda p: {"settings": {"steps": 3}}, ArgumentTypeError),
    ("method-bogus", lambda p: {"method": "bogus"}, ConfigError),
    ("resume-nothing", lambda p: {"resume": True, "out": p["tmp"] / "none"}, ConfigError),
    ("occupied-no-overwrite", lambda p: {"overwrite": False}, ConfigError),
    ("data-None", lambda p: {"data": None}, DataError),
    ("data-missing", lambda p: {"data": str(p["tmp"] / "missing.jsonl")}, DataError),
]


@pytest.mark.parametrize(("build", "error"), [c[1:] for c in ARG_CASES],
                         ids=[c[0] for c in ARG_CASES])
def test_bad_argument_is_a_typed_error_and_nothing_changes(pairs, tiny_folders, old_run,
                                                          a_file, tmp_path, build, error):
    kw = {"data": str(pairs), "backbone": "llama", "model": str(tiny_folders["model"]),
          "prompting": str(tiny_folders["prompting"]), "out": old_run, "overwrite": True,
          "steps": 2, "progress": False}
    kw.update(build({"file": a_file, "tmp": tmp_path}))
    before, file_before = tree_digest(old_run), a_file.read_bytes()
    with pytest.raises(error) as info:
        pe_core.train(**kw)
    message = str(info.value)
    assert isinstance(info.value, PEError) and len(message) > 20
    assert any(hint in message for hint in ("must be", "use ", "pass ", "choose", "resume",
                                            "JSONL", "does not exist", "one of")), message
    assert tree_digest(old_run) == before and a_file.read_bytes() == file_before
    assert not (tmp_path / "none").exists()
    assert not [p for p in old_run.parent.iterdir() if p.name.startswith(".")]


def test_check_device():
    from pe_core.validate import device as check_device

    assert check_device(None) is None and check_device("cpu") == "cpu"
    assert check_device(torch.device("cpu")) == "cpu"
    for bad in ("tpu9", "cuda:x", "gpu", "cpu:0:1", f"cuda:{torch.cuda.device_count()}"):
        with pytest.raises(ConfigError, match="device"):
            check_device(bad)


# -- the CLI: exit code 2, one line, no traceback, the old run unchanged -------------------
CLI_CASES = [
    ("train", "--lr", "inf"), ("train", "--lr", "nan"), ("train", "--alignment-lr", "nan"),
    ("train", "--lora-lr", "1e999"), ("train", "--keep-checkpoints", "0"),
    ("train", "--warmup", "-5"), ("train", "--device", "tpu9"), ("train", "--device", "cuda:99"),
    ("train", "--steps", "0"), ("train", "--epochs", "nan"), ("train", "--temperature", "inf"),
    ("train", "--seed", "-1"), ("train", "--save-every", "0"), ("train", "--batch-size", "0"),
    ("train", "--max-grad-norm", "-1"), ("train", "--out", "{file}/run"),
    ("train", "--out", "{file}"), ("train", "--data", "{file}"),
    ("align", "--alignment-lr", "inf"), ("align", "--device", "tpu9"),
    ("align", "--warmup", "-5"), ("align", "--keep-checkpoints", "0"),
    ("align", "--out", "{old}"), ("align", "--from", "{tmp}/norun"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=["-".join(c) for c in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_line(pairs, tiny_folders, qwen_model, old_run, a_file,
                                             tmp_path, capsys, case):
    from pe_core.cli.main import main

    command, flag, value = case
    value = value.format(file=a_file, old=old_run, tmp=tmp_path)
    if command == "train":
        argv = {"--backbone": "llama", "--model": str(tiny_folders["model"]),
                "--prompting": str(tiny_folders["prompting"]), "--data": str(pairs),
                "--out": str(old_run), "--steps": "2"}
    else:
        argv = {"--from": str(old_run), "--backbone": "qwen", "--model": qwen_model,
                "--data": str(pairs), "--out": str(tmp_path / "aligned"), "--steps": "2"}
    argv[flag] = value
    before = tree_digest(old_run)
    capsys.readouterr()
    code = main([command, *(x for kv in argv.items() for x in kv), "--overwrite",
                 "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("pe: error: ") and "Traceback" not in err
    assert tree_digest(old_run) == before
    assert not (tmp_path / "aligned").exists()
    assert not [p for p in old_run.parent.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def qwen_model(tmp_path_factory) -> str:
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    return str(save_tiny_folders(get_backbone("qwen"), tmp_path_factory.mktemp("qwen"))["model"])


# -- --overwrite: validate everything first, swap in only a complete run -------------------
@pytest.fixture
def run_copy(old_run, tmp_path) -> Path:
    """A copy of the old run that a test may replace."""
    return Path(shutil.copytree(old_run, tmp_path / "runs" / "run"))


def test_overwrite_with_bad_data_keeps_the_old_run_and_its_checkpoints(pairs, tiny_folders,
                                                                      run_copy, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "positive": "b"}\n{"query": 3, "positive": "p"}\n')
    before = tree_digest(run_copy)
    assert any(k.startswith("checkpoints/step-") for k in before)
    with pytest.raises(DataError, match="bad.jsonl:2"):
        pe_core.train(str(bad), backbone="llama", model=str(tiny_folders["model"]),
                      prompting=str(tiny_folders["prompting"]), out=run_copy, overwrite=True,
                      steps=2, progress=False)
    assert tree_digest(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


def _diverge_at(monkeypatch, at_step: int) -> None:
    """A real NaN through the model at ``at_step`` (0-based), as a too large lr would."""
    from pe_core.training import trainer

    real = trainer.contrastive_step

    def poisoned(method, rows, info, *args):
        if info.step == at_step:
            with torch.no_grad():
                method.embedder.alignment.weight.fill_(float("nan"))
        return real(method, rows, info, *args)

    monkeypatch.setattr(trainer, "contrastive_step", poisoned)


def test_overwrite_run_that_diverges_leaves_the_old_run_byte_identical(pairs, tiny_folders,
                                                                      run_copy, monkeypatch):
    before = tree_digest(run_copy)
    _diverge_at(monkeypatch, 2)
    with pytest.raises(TrainingDivergedError, match="step 3") as info:
        _train(pairs, tiny_folders, run_copy, steps=4, overwrite=True)
    message = str(info.value)
    # its checkpoints were in the discarded run: nothing to resume
    assert "--resume" not in message and "run it again" in message
    assert "left as it was" in message
    assert tree_digest(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


def test_overwrite_run_stopped_by_ctrl_c_leaves_the_old_run(pairs, tiny_folders, run_copy):
    before = tree_digest(run_copy)

    def press_ctrl_c(step, loss):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt) as info:
        _train(pairs, tiny_folders, run_copy, steps=4, overwrite=True, on_step=press_ctrl_c)
    assert "--resume" not in str(info.value)
    assert tree_digest(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


def test_overwrite_swaps_in_the_complete_new_run(pairs, tiny_folders, run_copy):
    (run_copy / "stale.txt").write_text("from the old run\n")
    old_weights = (run_copy / "alignment.safetensors").read_bytes()
    result = _train(pairs, tiny_folders, run_copy, steps=3, overwrite=True, seed=5)
    assert result.out == run_copy and result.log == run_copy / "log.jsonl"
    assert not (run_copy / "stale.txt").exists()
    assert (run_copy / "alignment.safetensors").read_bytes() != old_weights
    losses = [r for r in map(json.loads, (run_copy / "log.jsonl").open()) if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3]
    assert json.loads((run_copy / "train_settings.json").read_text())["seed"] == 5
    assert {p.name for p in run_copy.iterdir()} >= {
        "alignment.safetensors", "pe_config.json", "prompting", "checkpoints", "log.jsonl",
        "train_settings.json"}
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]
    (run_copy.parent / "plain").mkdir()  # the swapped-in folder has an ordinary mode
    assert run_copy.stat().st_mode == (run_copy.parent / "plain").stat().st_mode
    (run_copy.parent / "plain").rmdir()
    # and the new run resumes in place, as any run does
    resumed = _train(pairs, tiny_folders, run_copy, steps=4, resume=True, seed=5)
    assert resumed.steps == 4 and resumed.out == run_copy


def test_fresh_run_that_diverges_before_a_checkpoint_leaves_nothing(pairs, tiny_folders,
                                                                   tmp_path, monkeypatch):
    _diverge_at(monkeypatch, 0)
    out = tmp_path / "fresh"
    with pytest.raises(TrainingDivergedError, match="step 1") as info:
        _train(pairs, tiny_folders, out, steps=3, save_every=2)
    assert "--resume" not in str(info.value) and "run it again" in str(info.value)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingDivergedError):
        _train(pairs, tiny_folders, empty, steps=3, save_every=2)
    assert empty.is_dir() and not any(empty.iterdir())


def test_a_folder_that_is_not_empty_needs_overwrite(pairs, tiny_folders, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    with pytest.raises(ConfigError, match="not empty.*overwrite"):
        _train(pairs, tiny_folders, out)
    assert tree_digest(out) == {"keep.txt": hashlib.sha256(b"mine\n").hexdigest()}


# -- pe align: its source ------------------------------------------------------------------
def test_align_from_a_run_without_prompting_is_refused(old_run, pairs, qwen_model, tmp_path):
    src = Path(shutil.copytree(old_run, tmp_path / "src"))
    shutil.rmtree(src / "prompting")
    before = tree_digest(src)
    with pytest.raises(MissingFileError, match=r"`pe train` run without .*prompting"):
        pe_core.align(src, str(pairs), backbone="qwen", model=qwen_model, out=tmp_path / "a",
                      steps=1, progress=False)
    assert tree_digest(src) == before and not (tmp_path / "a").exists()


def test_align_from_an_alignment_with_the_default_prompting_warns(old_run, tmp_path):
    from pe_core.loading import DEFAULT_PROMPTING
    from pe_core.model.config import EmbedderConfig

    src = tmp_path / "alignment"
    src.mkdir()
    shutil.copy(old_run / "alignment.safetensors", src)
    cfg = EmbedderConfig.load(old_run)
    cfg.prompting_id = DEFAULT_PROMPTING
    cfg.save(src)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.warns(UserWarning, match="untrained default Prompting LLM"), \
            pytest.raises(DataError, match="empty"):
        pe_core.align(src, str(empty), backbone="qwen", out=tmp_path / "a")


def test_align_into_its_own_source_is_refused(old_run, pairs, tmp_path):
    before = tree_digest(old_run)
    for out in (old_run, old_run / "inner", old_run.parent):
        with pytest.raises(ConfigError, match="overlap"):
            pe_core.align(old_run, str(pairs), backbone="qwen", out=out, overwrite=True)
    assert tree_digest(old_run) == before


def test_a_run_set_aside_by_a_killed_swap_is_named_not_lost(pairs, tiny_folders, run_copy):
    """Killed between the swap's two renames: the old run sits in .run.old-*/run and
    ``out`` is missing; the next run says where it is instead of starting afresh."""
    aside = run_copy.parent / ".run.old-x1"
    aside.mkdir()
    run_copy.rename(aside / "run")
    before = tree_digest(aside)
    with pytest.raises(ConfigError, match=r"\.run\.old-x1/run holds the run.*mv "):
        _train(pairs, tiny_folders, run_copy, overwrite=True)
    assert tree_digest(aside) == before and not run_copy.exists()


def test_overwrite_removes_what_a_killed_run_left_and_keeps_a_live_ones(pairs, tiny_folders,
                                                                        run_copy):
    """SIGKILL runs no handler: the staged sibling stays. The next staged run into the
    same folder deletes it once its process is gone, and leaves a live run's alone."""
    import subprocess
    import sys

    from pe_core.training import run_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = run_folder._owner().rpartition("-")[0]
    killed = run_copy.parent / f".run.tmp-{host}-{dead}-0123abcd"
    live = run_copy.parent / f".run.tmp-{run_folder._owner()}-4567ef01"
    other_host = run_copy.parent / f".run.tmp-elsewhere-{dead}-89ab2345"
    for folder in (killed, live, other_host):
        (folder / "checkpoints").mkdir(parents=True)
    _train(pairs, tiny_folders, run_copy, steps=1, overwrite=True)
    assert sorted(p.name for p in run_copy.parent.iterdir()) == sorted(
        ["run", live.name, other_host.name])


# -- resume: checked before anything is written --------------------------------------------
def test_refused_resume_leaves_the_run_byte_identical(pairs, tiny_folders, old_run, tmp_path,
                                                      capsys):
    """Other data, or settings that would not continue the same run: refused, and the
    run (its train_settings.json included) is as it was, from the API and the CLI."""
    from pe_core.cli.main import main

    other = tmp_path / "other.jsonl"
    other.write_text(pairs.read_text().replace("alpha", "omega"))
    before = tree_digest(old_run)
    with pytest.raises(ConfigError, match="trained on other data"):
        _train(other, tiny_folders, old_run, resume=True, steps=7)
    with pytest.raises(ConfigError, match=r"lr=0.5 \(the run has 0.001\); seed=9"):
        _train(pairs, tiny_folders, old_run, resume=True, steps=7, lr=0.5, seed=9)
    with pytest.raises(ConfigError, match=r"method='lora' \(the run has 'pe'\)"):
        _train(pairs, tiny_folders, old_run, resume=True, method="lora")
    base = ["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
            "--prompting", str(tiny_folders["prompting"]), "--out", str(old_run), "--resume",
            "--no-progress", "--steps", "7"]
    for extra in (["--data", str(other)], ["--data", str(pairs), "--lr", "0.5", "--seed", "9"]):
        capsys.readouterr()
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pe: error: resume")
    assert tree_digest(old_run) == before


def test_resume_continues_with_the_runs_own_settings(pairs, tiny_folders, run_copy):
    """Settings left out come from the run, not from the defaults; those that only say
    how long to go on (steps) may change."""
    from pe_core.training.settings import SETTINGS_NAME

    result = _train(pairs, tiny_folders, run_copy, resume=True, steps=3, lr=1e-3)
    saved = json.loads((run_copy / SETTINGS_NAME).read_text())
    assert result.steps == 3 and saved["steps"] == 3
    assert saved["lr"] == 1e-3 and saved["batch_size"] == 4 and saved["save_every"] == 1
    again = pe_core.train(str(pairs), backbone="llama", model=str(tiny_folders["model"]),
                          prompting=str(tiny_folders["prompting"]), out=run_copy, resume=True,
                          steps=4, progress=False)
    assert again.steps == 4
    assert json.loads((run_copy / SETTINGS_NAME).read_text())["batch_size"] == 4


# -- one writer per run folder --------------------------------------------------------------
HOLD_LOCK = """
import sys
from pe_core.training.run_folder import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_is_refused_at_once(pairs, tiny_folders, run_copy, capsys):
    """Another process holds the run's lock (a live ``--overwrite`` run): a second run
    into the folder fails at once with a PathError, from the API and the CLI, and the
    folder is untouched; once the first ends, the folder is free again."""
    import subprocess
    import sys
    import time

    from pe_core.cli.main import main

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_copy)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = tree_digest(run_copy)
        t0 = time.perf_counter()
        with pytest.raises(PathError, match="being written by another run"):
            _train(pairs, tiny_folders, run_copy, overwrite=True)
        with pytest.raises(PathError, match="being written by another run"):
            _train(pairs, tiny_folders, run_copy, resume=True, steps=3)
        assert time.perf_counter() - t0 < 5  # no waiting for the lock
        capsys.readouterr()
        code = main(["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                     "--prompting", str(tiny_folders["prompting"]), "--data", str(pairs),
                     "--out", str(run_copy), "--overwrite", "--steps", "1", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "being written by another run" in err[0]
        assert tree_digest(run_copy) == before
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    _train(pairs, tiny_folders, run_copy, overwrite=True, steps=1)


def test_two_overwrite_runs_at_once_one_wins(pairs, tiny_folders, run_copy):
    """Two threads start ``overwrite=True`` into the same folder: one writes the run,
    the other gets a PathError; never two runs each reporting that it wrote."""
    import threading

    outcomes: list[object] = []
    started = threading.Barrier(2)

    def run() -> None:
        started.wait()
        try:
            outcomes.append(_train(pairs, tiny_folders, run_copy, overwrite=True, steps=2))
        except PathError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o for o in outcomes if isinstance(o, PathError)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert "being written by another run" in str(errors[0])
    assert (run_copy / "alignment.safetensors").is_file()


def test_out_at_a_symlink_loop_is_a_path_error(pairs, tiny_folders, tmp_path, capsys):
    from pe_core.cli.main import main

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for out in (loop, dangling):
        with pytest.raises(PathError, match="symbolic link to nothing"):
            _train(pairs, tiny_folders, out)
    code = main(["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                 "--prompting", str(tiny_folders["prompting"]), "--data", str(pairs),
                 "--out", str(loop), "--no-progress"])
    assert code == 2 and "symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "loop"]


# -- settings that leave nothing to learn ---------------------------------------------------
def test_training_that_could_not_learn_is_refused_before_writing(pairs, tiny_folders,
                                                                 tmp_path):
    """A max_length that cuts every text to the same tokens, hard negatives a batch
    would drop, tasks of one example: DataError naming the fix, nothing written."""
    out = tmp_path / "run"
    same_start = tmp_path / "same_start.jsonl"
    same_start.write_text("".join(json.dumps(
        {"query": f"doc: {w}", "positive": f"doc: {w} {v}", "instruction": INSTRUCTION}) + "\n"
        for w, v in zip(WORDS, reversed(WORDS), strict=True)))
    with pytest.raises(DataError, match=r"max_length 3 cuts every query.*at least \d+"):
        _train(same_start, tiny_folders, out, max_length=3)
    negs = tmp_path / "negs.jsonl"
    negs.write_text("".join(json.dumps({**r, "negatives": ["x y"]}) + "\n"
                            for r in map(json.loads, pairs.read_text().splitlines())))
    with pytest.raises(DataError, match=r"has 1 hard negative.*is 3"):
        _train(negs, tiny_folders, out, hard_negatives=3)
    lonely = tmp_path / "lonely.jsonl"
    lonely.write_text("".join(json.dumps({"query": w, "positive": w + " x", "task": w}) + "\n"
                              for w in WORDS))
    with pytest.raises(DataError, match="no task has 2 or more examples"):
        _train(lonely, tiny_folders, out)
    assert not out.exists()
    _train(same_start, tiny_folders, out, max_length=64, steps=1)  # long enough: trains


def test_too_many_soft_tokens_names_the_largest_k(pairs, tiny_folders, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"num_soft_tokens is 600.*use at most \d+ soft") \
            as info:
        _train(pairs, tiny_folders, out, num_soft_tokens=600)
    assert " -" not in str(info.value) and not out.exists()


def test_align_from_a_non_finite_alignment_says_the_source_is_damaged(old_run, pairs,
                                                                      qwen_model, tmp_path):
    from safetensors.torch import load_file, save_file

    src = Path(shutil.copytree(old_run, tmp_path / "src"))
    weights = load_file(src / "alignment.safetensors")
    weights = {k: torch.full_like(v, math.nan) for k, v in weights.items()}
    save_file(weights, src / "alignment.safetensors")
    with pytest.raises(PEError) as info:
        pe_core.align(src, str(pairs), backbone="qwen", model=qwen_model, out=tmp_path / "a",
                      steps=1, progress=False)
    assert "learning rate" not in str(info.value) and "NaN" in str(info.value)
    assert not (tmp_path / "a").exists()


def test_resume_refuses_fewer_steps_than_done_and_names_a_corrupt_state(pairs, tiny_folders,
                                                                       run_copy):
    before = tree_digest(run_copy)
    with pytest.raises(ConfigError, match="at step 2 already and steps is 1"):
        _train(pairs, tiny_folders, run_copy, resume=True, steps=1)
    assert tree_digest(run_copy) == before
    newest = run_copy / "checkpoints" / "step-00000002"
    (newest / "state.json").write_text("{broken")
    with pytest.raises(PEError, match=rf"delete {newest} to resume from the checkpoint"):
        _train(pairs, tiny_folders, run_copy, resume=True, steps=3)


def test_a_run_killed_before_its_first_checkpoint_is_not_a_run_to_keep(pairs, tiny_folders,
                                                                       tmp_path):
    """SIGKILL before the first checkpoint leaves the settings and the log; running the
    same command again trains in place (nothing there to keep or resume)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_settings.json").write_text("{}")
    (out / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    _train(pairs, tiny_folders, out, steps=1)
    assert (out / "alignment.safetensors").is_file()
    assert json.loads((out / "train_settings.json").read_text())["steps"] == 1
    (out / "notes.txt").write_text("mine")  # something else there: still refused
    with pytest.raises(ConfigError, match="already holds a training run"):
        _train(pairs, tiny_folders, out, steps=1)


def test_warmup_past_the_run_and_a_dev_set_of_one_are_refused(pairs, tiny_folders, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="warmup is 50 steps and the run 2"):
        _train(pairs, tiny_folders, out, warmup=50)
    with pytest.raises(DataError, match="dev set holds 1 record"):
        _train(pairs, tiny_folders, out, dev_size=1)
    assert not out.exists()


def test_align_resume_and_lock_take_the_same_checks(old_run, pairs, qwen_model, tmp_path):
    out = tmp_path / "aligned"
    kw = dict(backbone="qwen", model=qwen_model, out=out, progress=False)
    pe_core.align(old_run, str(pairs), steps=1, batch_size=4, save_every=1, **kw)
    before = tree_digest(out)
    with pytest.raises(ConfigError, match=r"seed=3 \(the run has 0\)"):
        pe_core.align(old_run, str(pairs), resume=True, seed=3, **kw)
    from pe_core.training.run_folder import run_lock

    with run_lock(out), pytest.raises(PathError, match="being written by another run"):
        pe_core.align(old_run, str(pairs), resume=True, steps=2, **kw)
    assert tree_digest(out) == before


def test_resume_builds_the_model_the_run_was_trained_as(pairs, tiny_folders, tmp_path):
    """Model options are saved with the settings: left out on resume they are the run's
    (not the defaults), given otherwise they are refused before anything is written."""
    from pe_core.training.settings import SETTINGS_NAME

    out = tmp_path / "run"
    _train(pairs, tiny_folders, out, num_soft_tokens=3, placement="prefix")
    assert json.loads((out / SETTINGS_NAME).read_text())["model_options"] == {
        "num_soft_tokens": 3, "placement": "prefix"}
    before = tree_digest(out)
    with pytest.raises(ConfigError, match=r"num_soft_tokens=4 \(the run has 3\)"):
        _train(pairs, tiny_folders, out, resume=True, steps=3, num_soft_tokens=4)
    with pytest.raises(ConfigError, match=r"pooling='mean' \(the run has 'the default'\)"):
        _train(pairs, tiny_folders, out, resume=True, steps=3, pooling="mean")
    assert tree_digest(out) == before
    result = _train(pairs, tiny_folders, out, resume=True, steps=3)
    assert (result.model.config.K, result.model.config.placement) == (3, "prefix")
