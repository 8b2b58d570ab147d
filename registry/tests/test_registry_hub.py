"""The Hub path, with the real huggingface_hub client against the fake Hub on loopback."""

from __future__ import annotations

import json
import time

import pytest
from huggingface_hub import ModelCard
from registry_testing import (
    closed_port_url,
    snapshot,
    write_alignment,
    write_prompting_model,
    write_run,
)

import pe_registry
from pe_core.errors import (
    CorruptFileError,
    DimensionMismatchError,
    MissingFileError,
    OfflineError,
    RegistryError,
    RevisionNotFoundError,
)
from pe_core.integrations.st_files import ST_FILES
from pe_core.model.config import EmbedderConfig
from pe_registry.manifest import MANIFEST_NAME

ARTIFACT_FILES = sorted(["README.md", "alignment.safetensors", "pe_config.json", MANIFEST_NAME,
                         *ST_FILES])


def hf_cache_files(isolated):
    return snapshot(isolated / "hf-home")


def test_push_is_one_commit_and_pull_pins_the_revision(tmp_path, hub, registry, isolated):
    src = write_alignment(tmp_path / "llama", eval_results={"sts": {"spearman": 0.81}})
    entry = pe_registry.push(src, "org/pe-llama")
    commits = hub.commits("org/pe-llama")
    assert len(commits) == 2  # the repo's initial .gitattributes commit + ONE upload
    assert entry.ref == f"org/pe-llama@{commits[-1]}"
    assert sorted(hub.files("org/pe-llama")) == sorted([".gitattributes", *ARTIFACT_FILES])
    calls = [p for _, p in hub.log]
    assert calls.count("/api/models/org/pe-llama/commit/main") == 1
    assert "/api/validate-yaml" in calls  # README metadata checked by the (fake) Hub
    assert any(p.startswith("/__lfs/") for p in calls)  # safetensors went through LFS

    # pull from a fresh registry: revision "main" pinned to the commit, hashes checked
    pe_registry.remove("org/pe-llama")
    hub.log.clear()
    folder = pe_registry.pull("org/pe-llama")
    assert folder.name == commits[-1]
    assert sorted(p.name for p in folder.iterdir()) == ARTIFACT_FILES  # no .gitattributes
    assert registry.hub.index("org/pe-llama")["refs"] == {"main": commits[-1]}
    assert any(p.startswith("/__cdn/") for _, p in hub.log)  # LFS redirect followed
    assert hf_cache_files(isolated) == {}  # nothing in the user's Hugging Face cache
    # pulled again: nothing downloaded, just the revision looked up
    hub.log.clear()
    assert pe_registry.pull("org/pe-llama@main") == folder
    assert [p for _, p in hub.log if "resolve" in p or "cdn" in p] == []
    # by commit, and by short commit
    assert pe_registry.pull(f"org/pe-llama@{commits[-1]}") == folder
    assert pe_registry.resolve(f"org/pe-llama@{commits[-1][:10]}") == folder


def test_model_card_metadata(tmp_path, hub):
    src = write_alignment(
        tmp_path / "llama", eval_results={"sts": {"spearman": 0.81, "pearson": 0.8}}
    )
    pe_registry.push(src, "org/pe-llama")
    card = ModelCard(hub.files("org/pe-llama")["README.md"].decode())
    assert card.data.library_name == "pe"
    assert {
        "pe",
        "pe-alignment",
        "backbone:llama",
        "pe-model:org/tiny",
        "pe-prompting-model:org/p",
    } <= set(card.data.tags)
    assert card.data.base_model == ["org/p", "org/tiny"]
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("sts", "spearman"): 0.81, ("sts", "pearson"): 0.8}
    assert card.data.model_name == "org/pe-llama"
    assert 'alignment="org/pe-llama"' in card.text


def test_run_with_prompting_pushes_two_repos_and_links_them(tmp_path, hub, registry):
    entry = pe_registry.push(write_run(tmp_path / "llama"), "org/pe-llama")
    p_commit = hub.commits("org/pe-llama-prompting")[-1]
    assert entry.prompting.ref == f"org/pe-llama-prompting@{p_commit}"
    cfg = EmbedderConfig.load(entry.path)
    assert (cfg.prompting_id, cfg.prompting_revision) == ("org/pe-llama-prompting", p_commit)
    p_files = hub.files("org/pe-llama-prompting")
    assert "pytorch_model.bin" not in p_files and "model.safetensors" in p_files
    assert "checkpoints/step-1.safetensors" not in hub.files("org/pe-llama")
    card = ModelCard(hub.files("org/pe-llama")["README.md"].decode())
    assert card.data.base_model == ["org/pe-llama-prompting", "org/tiny"]
    # a fresh machine pulling the alignment gets its Prompting LLM too
    pe_registry.remove("org/pe-llama")
    pe_registry.remove("org/pe-llama-prompting")
    pe_registry.pull("org/pe-llama")
    assert registry.hub.commits("org/pe-llama-prompting") == [p_commit]


def test_find_discovers_by_tag(tmp_path, hub, registry):
    pe_registry.push(write_alignment(tmp_path / "a", seed=1), "org/a")
    pe_registry.push(write_alignment(tmp_path / "b", seed=2, model_id="org/other"), "org/b")
    for ref in ("org/a", "org/b"):
        pe_registry.remove(ref)  # only on the Hub now
    found = pe_registry.find("org/p", "org/other")
    assert found == registry.get("org/b").path
    assert any(p.startswith("/api/models?") and "filter=pe-alignment" in p for _, p in hub.log)
    assert pe_registry.find("org/p", "org/nothing") is None
    rows = pe_registry.list_hub(author="org")
    assert {r["ref"] for r in rows} == {"org/a", "org/b"}
    assert {r["model_id"] for r in rows} == {"org/tiny", "org/other"}


def test_missing_revision_is_typed_and_changes_nothing(tmp_path, hub, registry, isolated):
    pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    before = snapshot(registry.root)
    with pytest.raises(RevisionNotFoundError, match="does not exist"):
        pe_registry.pull("org/pe-llama@no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        pe_registry.pull("org/pe-llama@" + "0" * 40)
    with pytest.raises(MissingFileError, match="no such repository"):
        pe_registry.pull("org/never-pushed")
    assert snapshot(registry.root) == before
    assert hf_cache_files(isolated) == {}


def test_tampered_file_on_the_hub_is_refused(tmp_path, hub, registry, isolated):
    pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    pe_registry.remove("org/pe-llama")
    before = snapshot(registry.root)
    files = hub.files("org/pe-llama")
    hub.commit(
        "org/pe-llama",
        {"pe_config.json": files["pe_config.json"].replace(b'"d_B": 16', b'"d_B": 17')},
    )
    with pytest.raises(CorruptFileError, match="sha256"):
        pe_registry.pull("org/pe-llama")
    assert snapshot(registry.root) == before
    assert hf_cache_files(isolated) == {}


def test_wrong_dims_are_refused_before_any_upload(tmp_path, hub, registry):
    bad = write_alignment(tmp_path / "bad", config_dims=(8, 32))
    with pytest.raises(DimensionMismatchError):
        pe_registry.push(bad, "org/bad")
    assert "org/bad" not in hub.repos
    assert snapshot(registry.root) == {}


def test_download_cut_half_way_leaves_nothing(tmp_path, hub, registry, isolated):
    pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    pe_registry.remove("org/pe-llama")
    before = snapshot(registry.root)
    for name in ("alignment.safetensors", "pe_config.json"):  # LFS (CDN) and regular file
        hub.faults["drop_download"] = name
        started = time.perf_counter()
        with pytest.raises(RegistryError, match="interrupted|lost"):
            pe_registry.pull("org/pe-llama")
        assert time.perf_counter() - started < 5
        assert snapshot(registry.root) == before  # staging cleaned, nothing renamed in
        assert hf_cache_files(isolated) == {}
    del hub.faults["drop_download"]
    assert pe_registry.pull("org/pe-llama").is_dir()


@pytest.mark.parametrize("fault", [{"fail_commit": 500}, {"close_commit": True}])
def test_upload_failure_leaves_hub_and_registry_unchanged(tmp_path, hub, registry, fault):
    pe_registry.push(write_alignment(tmp_path / "v1", seed=1), "org/pe-llama")
    before_hub = hub.commits("org/pe-llama")
    before = snapshot(registry.root)
    hub.faults.update(fault)
    with pytest.raises(RegistryError, match="HTTP 500|interrupted"):
        pe_registry.push(write_alignment(tmp_path / "v2", seed=2), "org/pe-llama")
    assert hub.commits("org/pe-llama") == before_hub
    assert snapshot(registry.root) == before


def test_second_upload_of_a_run_failing_leaves_the_registry_unchanged(tmp_path, hub, registry):
    # two repos cannot share one commit: the Prompting LLM may land, the registry must not
    # record anything until both did
    hub.faults["fail_commit_to"] = "org/pe-llama"
    with pytest.raises(RegistryError, match="HTTP 500"):
        pe_registry.push(write_run(tmp_path / "llama"), "org/pe-llama")
    assert len(hub.commits("org/pe-llama")) == 1  # only the initial commit
    assert len(hub.commits("org/pe-llama-prompting")) == 2
    assert snapshot(registry.root) == {}
    del hub.faults["fail_commit_to"]
    entry = pe_registry.push(write_run(tmp_path / "llama"), "org/pe-llama")
    assert len(hub.commits("org/pe-llama-prompting")) == 2  # unchanged content: no new commit
    assert entry.prompting.ref.endswith(hub.commits("org/pe-llama-prompting")[-1])


def test_missing_token_is_explained(tmp_path, hub, monkeypatch, registry):
    hub.require_token = True
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(
        "huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens")
    )
    with pytest.raises(RegistryError, match="HF_TOKEN"):
        pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    assert snapshot(registry.root) == {}


def test_offline_mode_fails_fast_and_uses_what_was_pulled(tmp_path, hub, registry, monkeypatch):
    pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    folder = pe_registry.pull("org/pe-llama")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.log.clear()
    started = time.perf_counter()
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        pe_registry.pull("org/never-pulled")
    assert time.perf_counter() - started < 1.0
    assert pe_registry.pull("org/pe-llama") == folder
    assert pe_registry.pull("org/pe-llama@main") == folder
    assert pe_registry.resolve("org/pe-llama") == folder
    with pytest.raises(OfflineError):
        pe_registry.push(write_alignment(tmp_path / "x"), "org/x")
    assert pe_registry.find("org/p", "org/nothing") is None  # find is best effort
    assert hub.log == []  # offline means no request at all


def test_unreachable_endpoint_fails_fast_and_uses_what_was_pulled(
    tmp_path, hub, registry, monkeypatch
):
    from conftest import point_hub_at

    pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    folder = pe_registry.pull("org/pe-llama")
    point_hub_at(monkeypatch, closed_port_url())
    started = time.perf_counter()
    with pytest.raises(OfflineError, match="cannot be reached"):
        pe_registry.pull("org/never-pulled")
    with pytest.raises(OfflineError):
        pe_registry.resolve("org/never-pulled")
    assert time.perf_counter() - started < 1.0
    assert pe_registry.pull("org/pe-llama") == folder
    assert pe_registry.resolve("org/pe-llama") == folder


def test_offline_plain_model_in_hf_cache_is_left_to_pe_core(isolated, monkeypatch):
    # offline, a Hub id the registry never pulled: if huggingface_hub's cache has it, it is
    # a plain model pe-core can load (None); otherwise nobody can (OfflineError)
    snap = isolated / "hf-home" / "hub" / "models--org--plain"
    (snap / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (snap / "snapshots" / ("a" * 40) / "config.json").write_text("{}")
    (snap / "refs").mkdir()
    (snap / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pe_registry.resolve("org/plain") is None
    with pytest.raises(OfflineError, match="never pulled"):
        pe_registry.resolve("org/other")


def test_plain_models_are_not_claimed(tmp_path, hub):
    # a Hub repo that is not a pe artifact (no manifest) is left to pe-core
    hub.create("org/plain-model")
    hub.commit("org/plain-model", {"config.json": b"{}"})
    assert pe_registry.resolve("org/plain-model") is None
    assert pe_registry.resolve("org/does-not-exist") is None
    with pytest.raises(MissingFileError, match="not a pe artifact"):
        pe_registry.pull("org/plain-model")


def test_pushing_the_same_content_twice_makes_no_new_commit(tmp_path, hub):
    src = write_alignment(tmp_path / "llama")
    first = pe_registry.push(src, "org/pe-llama")
    second = pe_registry.push(src, "org/pe-llama")
    assert first.ref == second.ref
    assert len(hub.commits("org/pe-llama")) == 2


def test_push_of_another_backbone_or_kind_to_a_repo_is_refused(tmp_path, hub, registry):
    """As under a local name: readers of org/shared@main must not get a gemma alignment
    where a llama one was, nor a Prompting LLM. Refused before any upload."""
    from dataclasses import replace

    pe_registry.push(write_alignment(tmp_path / "llama"), "org/shared")
    commits, files = hub.commits("org/shared"), hub.files("org/shared")
    gemma = write_alignment(tmp_path / "gemma", seed=1)
    replace(EmbedderConfig.load(gemma), backbone="gemma").save(gemma)
    with pytest.raises(RegistryError, match="backbone 'llama'.*another name") as info:
        pe_registry.push(gemma, "org/shared")
    assert "delete the repo org/shared on the Hub" in str(info.value)
    prompting = write_prompting_model(tmp_path / "p")
    (prompting / "pe_prompting.json").write_text(json.dumps({"d_P": 8}))
    with pytest.raises(RegistryError, match="already names an artifact of kind 'alignment'"):
        pe_registry.push(prompting, "org/shared")
    assert hub.commits("org/shared") == commits and hub.files("org/shared") == files
    # the same backbone still makes a new commit; another repo takes the other backbone
    pe_registry.push(write_alignment(tmp_path / "llama2", seed=3), "org/shared")
    assert len(hub.commits("org/shared")) == len(commits) + 1
    assert pe_registry.push(gemma, "org/shared-gemma").ref.startswith("org/shared-gemma@")
