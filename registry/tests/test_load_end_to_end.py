"""``pe_core.load`` end to end with real tiny transformers models: a trained run pushed to
the local registry and to the (fake, loopback) Hub and found again, and a plain model
downloaded from the Hub through ``pe_core.checkpoints.hub.download``.

The embedded default Prompting LLM (``pe-default:prompting``, built on first use in
minutes) is stood in for by the tiny one: ``pe_core.defaults.ensure_default`` is patched,
so a run trained "with the default" is a tiny run, and nothing is ever built here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pe_core
import pe_registry
from pe_core.errors import OfflineError, RevisionNotFoundError
from pe_core.loading import DEFAULT_PROMPTING
from pe_core.model.config import EmbedderConfig
from pe_core.model_refs import ref_id
from pe_registry.local import LocalRegistry

TEXTS = ["how do I open a file?", "The quick brown fox jumps over the lazy dog.", "a b"]
INSTR = "Retrieve a passage that answers the question"
UNTRAINED = "no trained alignment"


@dataclass
class Run:
    folders: dict[str, Path]  # the tiny backbone and (default) Prompting LLM folders
    dir: Path  # a training run: alignment + pe_config.json + prompting/
    expected: np.ndarray  # what the trained embedder gives for TEXTS / INSTR


def stand_in_default(mp: pytest.MonkeyPatch, prompting: Path) -> None:
    def ensure_default(name: str, **_: Any) -> Path:
        if name != "prompting":
            raise AssertionError(f"this test must not build the default {name!r}")
        return prompting

    mp.setattr("pe_core.defaults.ensure_default", ensure_default)


def encode(model: Any) -> np.ndarray:
    return model.encode(TEXTS, instruction=INSTR)


def load(**kw: Any) -> Any:
    """``pe_core.load`` that fails if it falls back to an untrained alignment."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=UNTRAINED)
        return pe_core.load(backbone="llama", device="cpu", **kw)


def load_untrained(**kw: Any) -> Any:
    with pytest.warns(UserWarning, match=UNTRAINED):
        return pe_core.load(backbone="llama", device="cpu", allow_untrained=True, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """What ``pe train --backbone llama --model <folder>`` leaves: ``model_id`` the
    folder, ``prompting_id`` the default, and the trained (here: perturbed) Prompting LLM
    and alignment, saved with ``save_prompting=True``."""
    import torch

    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    root = tmp_path_factory.mktemp("e2e")
    folders = save_tiny_folders(get_backbone("llama"), root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PE_REGISTRY", str(root / "registry"))  # empty: nothing is found
        mp.setenv("HF_HUB_OFFLINE", "1")  # no Hub search either
        stand_in_default(mp, folders["prompting"])
        m = load_untrained(model=folders["model"])
    assert m.config.model_id == str(folders["model"])
    assert m.config.prompting_id == ref_id(DEFAULT_PROMPTING)  # pe-default:prompting@<recipe>
    torch.manual_seed(7)
    with torch.no_grad():  # "training": both the Prompting LLM and the alignment move
        for p in m.prompting.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        m.alignment.weight.add_(0.05 * torch.randn_like(m.alignment.weight))
    m.clear_prompt_cache()
    m.save(root / "run", save_prompting=True)
    return Run(folders, root / "run", encode(m))


@pytest.fixture(autouse=True)
def default_is_tiny(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_default(monkeypatch, run.folders["prompting"])


def same(model: Any, expected: np.ndarray) -> None:
    np.testing.assert_allclose(encode(model), expected, rtol=0, atol=1e-6)


def test_local_push_then_load_finds_the_alignment(run, registry, monkeypatch):
    entry = pe_registry.push(run.dir, "mytiny")
    assert (entry.ref, entry.prompting.ref) == ("mytiny@1", "mytiny-prompting@1")
    cfg = EmbedderConfig.load(entry.path)
    assert cfg.model_id == str(run.folders["model"])
    assert (cfg.prompting_id, cfg.prompting_revision) == ("mytiny-prompting", "1")

    # no alignment, no prompting: found for (default prompting it was trained from, model),
    # whatever the folder's spelling, and loaded with its trained Prompting LLM
    monkeypatch.chdir(run.folders["model"].parent)
    found = load(model="./backbone/")
    same(found, run.expected)
    assert found.config.prompting_id == "mytiny-prompting"
    same(load(model=Path("backbone"), prompting=DEFAULT_PROMPTING), run.expected)
    # by name
    same(load(model=run.folders["model"], alignment="mytiny"), run.expected)
    # the Prompting LLM matters: forcing the untrained base gives other vectors
    base = load(model=run.folders["model"], alignment="mytiny", prompting=DEFAULT_PROMPTING)
    assert not np.allclose(encode(base), run.expected, atol=1e-3)


def test_alignment_for_a_local_prompting_folder_is_found(run, registry, tmp_path, monkeypatch):
    import torch

    folders = run.folders
    m = load_untrained(model=str(folders["model"]), prompting=str(folders["prompting"]))
    assert m.config.prompting_id == str(folders["prompting"])
    with torch.no_grad():
        m.alignment.weight.mul_(1.5)
    m.clear_prompt_cache()
    expected = encode(m)
    pe_registry.push(m.save(tmp_path / "align", save_prompting=False), "exact")  # ids as recorded
    pe_registry.push(run.dir, "mytiny")  # same model, other prompting: not this one
    monkeypatch.chdir(folders["model"].parent)
    found = load(model="backbone", prompting=Path("prompting"))
    same(found, expected)
    assert found.config.prompting_id == str(folders["prompting"])


def test_hub_push_then_load_pulls_the_pinned_revision(run, hub, registry, tmp_path, monkeypatch):
    entry = pe_registry.push(run.dir, "org/pe-align-tiny")
    commit = hub.commits("org/pe-align-tiny")[-1]
    p_commit = hub.commits("org/pe-align-tiny-prompting")[-1]
    assert entry.ref == f"org/pe-align-tiny@{commit}"

    monkeypatch.setenv("PE_REGISTRY", str(tmp_path / "fresh"))  # another machine
    fresh = LocalRegistry(tmp_path / "fresh")
    hub.log.clear()
    pulled = load(model=run.folders["model"], alignment="org/pe-align-tiny")
    same(pulled, run.expected)
    assert any(p.startswith("/__cdn/") for _, p in hub.log)  # really downloaded
    assert fresh.hub.index("org/pe-align-tiny")["refs"] == {"main": commit}
    assert fresh.hub.commits("org/pe-align-tiny-prompting") == [p_commit]
    assert pulled.config.prompting_revision == p_commit  # the Prompting LLM is pinned too
    # pinned by (short) commit; once pulled, found without naming it
    same(
        load(model=run.folders["model"], alignment=f"org/pe-align-tiny@{commit[:12]}"), run.expected
    )
    same(load(model=run.folders["model"]), run.expected)

    for bad in ("no-such-branch", "0" * 40):
        with pytest.raises(RevisionNotFoundError):
            load(model=run.folders["model"], alignment=f"org/pe-align-tiny@{bad}")


def test_plain_model_from_the_hub(run, hub, isolated, monkeypatch):
    from huggingface_hub import HfApi, constants

    from pe_core.checkpoints.hub import download

    api = HfApi(endpoint=hub.url, token="hf_test_token")
    api.create_repo("org/tiny-llama")
    api.upload_folder(repo_id="org/tiny-llama", folder_path=run.folders["model"])
    sha = hub.commits("org/tiny-llama")[-1]
    assert "model.safetensors" in hub.files("org/tiny-llama")
    prompting = str(run.folders["prompting"])

    local = encode(load_untrained(model=str(run.folders["model"]), prompting=prompting))
    for ref in (f"org/tiny-llama@{sha}", "org/tiny-llama@main", "org/tiny-llama"):
        remote = load_untrained(model=ref, prompting=prompting)
        np.testing.assert_allclose(encode(remote), local, atol=1e-6, rtol=0)
        assert remote.config.model_id == ref
    cached = isolated / "hf-home" / "hub" / "models--org--tiny-llama" / "snapshots" / sha
    assert (cached / "model.safetensors").is_file()
    # the weights arrive exactly; the embeddings above are computed, so compared within 1e-6
    assert (cached / "model.safetensors").read_bytes() == (
        Path(run.folders["model"]) / "model.safetensors").read_bytes()

    for bad in ("no-such-branch", "0" * 40):
        with pytest.raises(RevisionNotFoundError):
            load(model=f"org/tiny-llama@{bad}", prompting=prompting)
        with pytest.raises(RevisionNotFoundError):
            download(f"org/tiny-llama@{bad}")  # pe-core's own mapping, without pe-registry

    # offline, set after huggingface_hub was imported (its own flag stays False): served
    # from its cache without a single request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert constants.HF_HUB_OFFLINE is False
    hub.log.clear()
    for ref in (f"org/tiny-llama@{sha}", "org/tiny-llama"):
        again = load_untrained(model=ref, prompting=prompting)
        np.testing.assert_allclose(encode(again), local, atol=1e-6, rtol=0)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        download("org/never-downloaded")
    assert hub.log == []


def test_gguf_file_in_a_hub_repo(hub, isolated, monkeypatch):
    """``org/repo@rev:file.gguf``: fetched with the real Hub client from the loopback Hub,
    pinned by commit, dequantized once; then offline it is served from the caches."""
    from huggingface_hub import HfApi

    from pe_core.errors import MissingFileError, RevisionNotFoundError
    from pe_core.model_refs import resolve_model
    from pe_core.testing.tiny_gguf import write_tiny_gguf

    monkeypatch.setenv("PE_CACHE", str(isolated / "pe-cache"))
    path, model, _ = write_tiny_gguf(isolated / "tiny-q.gguf", "gpt2")
    api = HfApi(endpoint=hub.url, token="hf_test_token")
    api.create_repo("org/tiny-gguf")
    api.upload_file(repo_id="org/tiny-gguf", path_or_fileobj=str(path),
                    path_in_repo="tiny-q.gguf")
    sha = hub.commits("org/tiny-gguf")[-1]
    folder = resolve_model(f"org/tiny-gguf@{sha}:tiny-q.gguf")
    assert resolve_model("org/tiny-gguf:tiny-q.gguf") == folder  # same file, same cache
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = pe_core.load(backbone="llama", model=f"org/tiny-gguf@{sha}:tiny-q.gguf",
                           prompting=str(folder), device="cpu", allow_untrained=True)
    assert emb.encode(["the fox"], instruction="x").shape == (1, 32)
    with pytest.raises(MissingFileError):
        resolve_model("org/tiny-gguf:other.gguf")
    with pytest.raises(RevisionNotFoundError):
        resolve_model("org/tiny-gguf@no-such-branch:tiny-q.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.log.clear()
    assert resolve_model(f"org/tiny-gguf@{sha}:tiny-q.gguf") == folder
    assert hub.log == []
