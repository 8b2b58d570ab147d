"""The conformance suite every backbone plugin runs on itself.

Subclass it in the plugin's tests with the plugin's backbone name; every test runs for
every ``model_type`` the plugin registers, on tiny random models built from its
``tiny_configs``::

    from pe_core.testing.conformance import BackboneConformance

    class TestConformance(BackboneConformance):
        backbone = "phi3"

The same suite runs on a real checkpoint when ``model`` names one (any reference
``pe_core.load`` takes: a folder, a GGUF file, ``pe-real:NAME``); a deep model in float32
agrees with itself less tightly than a 2-layer one, so such a class states its ``tol``::

    class TestRealSmolLM2(BackboneConformance):
        backbone, model, model_type = "llama", "pe-real:smollm2-135m", "llama"
        tol = rtol = 1e-4
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

TOL = 1e-5
# Two model instances holding bit-identical weights may still sum in another order (the
# kernels a CPU picks depend on memory layout and alignment): compare what must be exact
# (weights) exactly, and computed embeddings within this bound.
SAME_WEIGHTS_TOL = 1e-6
TEXTS = [
    "Return the sum of the numbers.",
    "Open a file",
    "Soft prompts steer a frozen language model toward the task at hand.",
    "fox",
]
INSTRUCTION = "Retrieve a passage that answers the question"


@functools.cache
def _embedder(backbone: str, model_type: str, placement: str, pooling: str) -> Any:
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder

    spec = get_backbone(backbone)
    return tiny_embedder(spec, model_type, placement=placement, pooling=pooling)


@functools.cache
def _loaded(backbone: str, model: str, prompting: str | None) -> Any:
    import warnings

    import pe_core

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the least-squares alignment: untrained, on purpose
        return pe_core.load(backbone=backbone, model=model, prompting=prompting, device="cpu",
                            allow_untrained=True)


@functools.cache
def _real_embedder(backbone: str, model: str, prompting: str | None, placement: str,
                   pooling: str) -> Any:
    """One load of a real checkpoint, shared (frozen modules) by every placement/pooling."""
    from dataclasses import replace

    from pe_core.model.embedder import PromptEmbedder

    base = _loaded(backbone, model, prompting)
    config = replace(base.config, placement=placement, pooling=pooling)
    return PromptEmbedder(base.prompting, base.alignment, base.backbone, base.tokenizer,
                          config).eval()


def _realistic_soft(embedder: Any, batch: int) -> Any:
    """Soft vectors at the scale of real token embeddings. A random Prompting LLM gives
    near-uniform distributions whose soft tokens average to ~0, where RMSNorm is
    dominated by its epsilon and gradients are rounding noise."""
    import torch

    gen = torch.Generator().manual_seed(0)
    table = embedder.backbone.embedding_table.detach()
    shape = (batch, embedder.config.K, table.shape[1])
    return torch.randn(shape, generator=gen) * table.std()


def _batch(embedder: Any, texts: list[str], side: str) -> tuple[Any, Any]:
    tok = embedder.tokenizer
    tok.padding_side = side
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


class BackboneConformance:
    """Tests a registered backbone against pe's contract. Set ``backbone``."""

    backbone: str = ""
    placements = ("prefix", "suffix")
    # a real checkpoint to run on instead of the tiny models, its model_type, and the
    # Prompting LLM to pair it with (None: pe's default)
    model: str | None = None
    model_type: str | None = None
    prompting: str | None = None
    tol: float = TOL  # absolute, on pooled hidden states and embeddings
    rtol: float = 0.0  # relative, for deep models whose hidden states run large
    same_weights_tol: float = SAME_WEIGHTS_TOL

    def pytest_generate_tests(self, metafunc: Any) -> None:
        from pe_core.plugins import get_backbone

        if "model_type" in metafunc.fixturenames:
            types = [self.model_type] if self.model else get_backbone(self.backbone).model_types
            metafunc.parametrize("model_type", list(types))
        if "placement" in metafunc.fixturenames:
            metafunc.parametrize("placement", list(self.placements))

    def embedder(self, model_type: str, placement: str = "suffix", pooling: str = "last") -> Any:
        if self.model:
            return _real_embedder(self.backbone, self.model, self.prompting, placement, pooling)
        return _embedder(self.backbone, model_type, placement, pooling)

    # -- the registration itself -------------------------------------------------------
    def test_registered(self) -> None:
        from pe_core.plugins import get_backbone

        spec = get_backbone(self.backbone)
        assert spec.model_types and spec.distribution != "unknown"
        for model_type in spec.model_types:
            assert model_type in spec.tiny_configs, f"no tiny config for {model_type}"

    # -- forward -------------------------------------------------------------------------
    def test_forward(self, model_type: str, placement: str) -> None:
        """Encoding with a prompt, and with none at all (``document_instruction=None``):
        with last-token pooling the no-prompt path is the backbone's own last state."""
        from dataclasses import replace

        import numpy as np
        import torch

        for pooling in ("last", "mean"):
            m = self.embedder(model_type, placement, pooling)
            out = m.encode(TEXTS, instruction=INSTRUCTION)
            assert out.shape == (len(TEXTS), m.dim)
            assert np.isfinite(out).all()
            np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
            documents = m.encode(TEXTS, instruction=None)  # the generic document prompt
            saved = m.config
            m.config = replace(saved, document_instruction=None)
            try:
                plain = m.encode(TEXTS, instruction=None)
            finally:
                m.config = saved
            assert plain.shape == (len(TEXTS), m.dim) and np.isfinite(plain).all()
            np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)
            assert np.abs(plain - documents).max() > 1e-3, "the document prompt was not dropped"
            if pooling != "last":
                continue
            for text, row in zip(TEXTS, plain, strict=True):
                ids, mask = _batch(m, [text], "right")
                with torch.no_grad():
                    hidden = m.backbone.model(input_ids=ids, attention_mask=mask)
                ref = torch.nn.functional.normalize(hidden.last_hidden_state[0, -1], dim=-1)
                torch.testing.assert_close(torch.from_numpy(row), ref.float(), atol=TOL, rtol=0)

    def test_embedding_hook_matches_input_ids(self, model_type: str) -> None:
        """Raw embedding rows through the plugin's hook read exactly like input_ids:
        the scale (e.g. Gemma's sqrt(d)) is right on the installed transformers."""
        import torch

        m = self.embedder(model_type)
        ids, mask = _batch(m, TEXTS[:2], "right")
        model, spec = m.backbone.model, m.backbone.spec
        raw = model.get_input_embeddings().weight[ids]
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
            via_hook = model(
                inputs_embeds=spec.soft_prompt_hook(model, raw), attention_mask=mask
            ).last_hidden_state
            via_tokens = model(
                inputs_embeds=spec.token_embeddings(model, ids), attention_mask=mask
            ).last_hidden_state
        torch.testing.assert_close(via_hook, ref, atol=self.tol, rtol=self.rtol)
        torch.testing.assert_close(via_tokens, ref, atol=self.tol, rtol=self.rtol)

    # -- gradients -----------------------------------------------------------------------
    def test_gradients_reach_prompting_and_alignment_only(
        self, model_type: str, placement: str
    ) -> None:
        m = self.embedder(model_type, placement)
        m.train()
        m.zero_grad(set_to_none=True)
        ids, mask = _batch(m, TEXTS, "right")
        out = m.embed(ids, mask, [INSTRUCTION] * len(TEXTS), noise_seed=0)
        (out @ out.detach().T).sum().backward()
        assert m.alignment.weight.grad is not None
        assert m.alignment.weight.grad.abs().sum() > 0
        p_grads = [p.grad for p in m.prompting.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in p_grads)
        assert all(p.grad is None for p in m.backbone.parameters())
        assert all(not p.requires_grad for p in m.backbone.parameters())
        m.zero_grad(set_to_none=True)
        m.eval()

    # -- invariances ---------------------------------------------------------------------
    def test_padding_side_invariance(self, model_type: str, placement: str) -> None:
        import torch

        for pooling in ("last", "mean"):
            m = self.embedder(model_type, placement, pooling)
            soft = m.cached_soft_prompt(INSTRUCTION).expand(len(TEXTS), -1, -1)
            with torch.no_grad():
                right = m(*_batch(m, TEXTS, "right"), soft)
                left = m(*_batch(m, TEXTS, "left"), soft)
            torch.testing.assert_close(left, right, atol=self.tol, rtol=self.rtol)

    def test_batch_invariance(self, model_type: str, placement: str) -> None:
        import numpy as np

        m = self.embedder(model_type, placement)
        together = m.encode(TEXTS, instruction=INSTRUCTION, batch_size=len(TEXTS))
        alone = np.stack([m.encode([t], instruction=INSTRUCTION)[0] for t in TEXTS])
        np.testing.assert_allclose(together, alone, atol=self.tol, rtol=self.rtol)

    def test_matches_reference_without_cache(self, model_type: str, placement: str) -> None:
        import torch

        for pooling in ("last", "mean"):
            m = self.embedder(model_type, placement, pooling)
            ids, mask = _batch(m, TEXTS, "right")
            soft = _realistic_soft(m, len(TEXTS))
            with torch.no_grad():
                fast = m.backbone(ids, mask, soft, placement, pooling)
                ref = m.backbone.reference(ids, mask, soft, placement, pooling)
            torch.testing.assert_close(fast, ref, atol=self.tol, rtol=self.rtol)

    def test_suffix_gradient_matches_reference(self, model_type: str) -> None:
        import torch

        m = self.embedder(model_type, "suffix")
        ids, mask = _batch(m, TEXTS, "right")
        soft = _realistic_soft(m, len(TEXTS))
        # a random linear read-out: |pooled|^2 is constant after a final RMSNorm
        probe = torch.randn(m.dim, generator=torch.Generator().manual_seed(1))
        grads = []
        for fn in (m.backbone.forward, m.backbone.reference):
            s = soft.clone().requires_grad_(True)
            (fn(ids, mask, s, "suffix", "last") @ probe).sum().backward()
            grads.append(s.grad)
        rel = (grads[0] - grads[1]).norm() / grads[1].norm()
        assert rel < 1e-4, f"suffix gradient differs from the full pass by {rel:.2e}"

    def test_training_suffix_pass_matches_reference(self, model_type: str) -> None:
        """Training's suffix path (text keys/values in length groups, kept in a store,
        then the soft pass with gradients to the soft positions only) gives the full
        pass's embeddings and soft-prompt gradients."""
        import torch

        from pe_core.training.kvcache import TextKVStore, soft_pass

        m = self.embedder(model_type, "suffix")
        ids, mask = _batch(m, TEXTS, m.backbone.spec.padding_side)
        soft = _realistic_soft(m, len(TEXTS))
        probe = torch.randn(m.dim, generator=torch.Generator().manual_seed(1))
        store = TextKVStore(1 << 26, call_cost=0)  # every length its own group

        def training(s: Any) -> Any:
            return soft_pass(m.backbone, store.cache(m.backbone, ids, mask), mask, s)

        def reference(s: Any) -> Any:
            return m.backbone.reference(ids, mask, s, "suffix", "last")

        outs, grads = [], []
        for fn in (training, reference):
            s = soft.clone().requires_grad_(True)
            pooled = fn(s)
            (pooled @ probe).sum().backward()
            outs.append(pooled.detach())
            grads.append(s.grad)
        torch.testing.assert_close(outs[0], outs[1], atol=self.tol, rtol=self.rtol)
        rel = (grads[0] - grads[1]).norm() / grads[1].norm()
        assert rel < 1e-4, f"training's suffix gradient differs from the full pass by {rel:.2e}"

    def test_text_longer_than_the_window(self, model_type: str) -> None:
        """A text longer than the model's sliding window (Gemma 3: 512 tokens; a model
        without one: 128 + 64) through the suffix path and the training key/value store,
        padded beside a short one, equals the cache-free reference, gradients included."""
        import torch

        from pe_core.training.kvcache import TextKVStore, soft_pass

        m = self.embedder(model_type, "suffix")
        config = m.backbone.model.config
        n = (getattr(config, "sliding_window", None) or 128) + 64
        tok = m.tokenizer
        tok.padding_side = m.backbone.spec.padding_side
        enc = tok([" ".join(TEXTS * 400), TEXTS[0]], return_tensors="pt", padding=True,
                  truncation=True, max_length=n)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        assert int(mask.sum(-1).max()) == n
        soft = _realistic_soft(m, 2)
        probe = torch.randn(m.dim, generator=torch.Generator().manual_seed(1))
        store = TextKVStore(1 << 30, call_cost=0)
        paths = {
            "reference": lambda s: m.backbone.reference(ids, mask, s, "suffix", "last"),
            "inference": lambda s: m.backbone(ids, mask, s, "suffix", "last"),
            "training": lambda s: soft_pass(m.backbone, store.cache(m.backbone, ids, mask),
                                            mask, s),
        }
        outs, grads = {}, {}
        for name, fn in paths.items():
            s = soft.clone().requires_grad_(True)
            pooled = fn(s)
            (pooled @ probe).sum().backward()
            outs[name], grads[name] = pooled.detach(), s.grad
        for name in ("inference", "training"):
            torch.testing.assert_close(outs[name], outs["reference"], atol=self.tol, rtol=self.rtol)
            rel = (grads[name] - grads["reference"]).norm() / grads["reference"].norm()
            assert rel < 1e-4, f"{name} gradient differs from the full pass by {rel:.2e}"

    # -- persistence and determinism ----------------------------------------------------
    def test_save_load_roundtrip(self, model_type: str, tmp_path: Any) -> None:
        import numpy as np
        import torch

        import pe_core
        from pe_core.testing.tiny import save_tiny_folders

        m = self.embedder(model_type)
        if self.model:
            model, prompting = self.model, self.prompting
        else:
            folders = save_tiny_folders(m.backbone.spec, tmp_path, model_type)
            # save_tiny_folders rebuilds the same seeded models as the cached embedder
            model, prompting = str(folders["model"]), str(folders["prompting"])
        m.save(tmp_path / "align")
        again = pe_core.load(backbone=self.backbone, model=model, prompting=prompting,
                             alignment=str(tmp_path / "align"), device="cpu")
        assert again.config == m.config.__class__(**{
            **m.config.to_dict(), "model_id": again.config.model_id,
            "prompting_id": again.config.prompting_id,
        })
        for part in ("alignment", "prompting", "backbone"):
            saved = getattr(m, part).state_dict()
            loaded = getattr(again, part).state_dict()
            assert saved.keys() == loaded.keys(), part
            for name, tensor in saved.items():
                assert torch.equal(tensor, loaded[name]), f"{part}.{name}"
        a = m.encode(TEXTS, instruction=INSTRUCTION)
        b = again.encode(TEXTS, instruction=INSTRUCTION)
        np.testing.assert_allclose(a, b, atol=self.same_weights_tol, rtol=0)

    def test_deterministic(self, model_type: str) -> None:
        import numpy as np

        m = self.embedder(model_type)
        a = m.encode(TEXTS, instruction=INSTRUCTION)
        m.clear_prompt_cache()
        b = m.encode(TEXTS, instruction=INSTRUCTION)
        np.testing.assert_allclose(a, b, atol=self.same_weights_tol, rtol=0)


__all__ = ["BackboneConformance", "pytest"]
