"""Fixtures: an isolated registry and Hugging Face home per test, tiny artifacts, and a
fake Hub on loopback. No test reaches the network: ``huggingface_hub`` is pointed at a
closed loopback port unless a test starts the fake Hub."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # fake_hub, whatever pytest's import mode

# huggingface_hub reads these when imported: set them before anything imports it
if "huggingface_hub" not in sys.modules:
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from fake_hub import FakeHub  # noqa: E402
from registry_testing import closed_port_url  # noqa: E402


def point_hub_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Make ``huggingface_hub`` (already imported) talk to ``url``.

    ``HF_ENDPOINT`` is read at import time, into two places that matter:
    ``constants.ENDPOINT`` (API calls, commit URL parsing) and the resolve-URL template
    that ``file_download`` copied; both are patched. The env var is set for subprocesses.
    """
    from huggingface_hub import constants, file_download

    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setenv("HF_ENDPOINT", url)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fresh registry, Hugging Face home and token; offline mode off; dead endpoint."""
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("PE_REGISTRY", str(tmp_path / "registry"))
    point_hub_at(monkeypatch, closed_port_url())
    return tmp_path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub(lifetime=60) as fake:
        point_hub_at(monkeypatch, fake.url)
        yield fake


@pytest.fixture
def registry(isolated: Path) -> Any:
    from pe_registry.local import LocalRegistry

    return LocalRegistry(isolated / "registry")
