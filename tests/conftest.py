import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests (per-op overhead dominates, extra
    threads only contend); restored after. Use with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_plugins(monkeypatch):
    """A plugin manager built anew for the test (and forgotten after it)."""
    from pe_core import plugins

    plugins.reset_plugin_manager()
    yield plugins
    plugins.reset_plugin_manager()


@pytest.fixture(scope="session")
def llama_spec():
    from pe_core.plugins import get_backbone

    return get_backbone("llama")


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory, llama_spec):
    from pe_core.testing.tiny import save_tiny_folders

    return save_tiny_folders(llama_spec, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A JSONL file of the training tests' pair records (``training_helpers``)."""
    from training_helpers import pair_records, write_jsonl

    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", pair_records())
