"""The one layout and the one pooling rule, and every torch path that reads through
them: the encoder (whole pass and suffix cache), training's suffix fast path, the LoRA
baseline and the cache-free reference agree on the same inputs, on either padding side.
(The ONNX graph's agreement is in registry/tests/test_onnx_export.py.)"""

from __future__ import annotations

import warnings

import pytest
import torch

from pe_core.errors import ConfigError
from pe_core.model.batching import pad_rows
from pe_core.model.layout import Layout, positions
from pe_core.model.pooling import last_index, pool

TOL = 1e-5  # computed embeddings of different (exact) passes: summation order differs
RIGHT = torch.tensor([[1, 1, 0], [1, 1, 1]])
LEFT = torch.tensor([[0, 1, 1], [1, 1, 1]])


def _t(rows):
    return torch.tensor(rows)


# -- the layout -------------------------------------------------------------------------
@pytest.mark.parametrize("text_mask, placement, mask, text, soft, pos", [
    (RIGHT, "prefix", [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]],
     [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]], [[0, 1, 2, 3, 3], [0, 1, 2, 3, 4]]),
    # the text always touches the prompt: a left-padded row moves after a prefix ...
    (LEFT, "prefix", [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]],
     [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]], [[0, 1, 2, 3, 3], [0, 1, 2, 3, 4]]),
    # ... and a right-padded one moves against a suffix
    (RIGHT, "suffix", [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], [[0, 1, 1, 0, 0], [1, 1, 1, 0, 0]],
     [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]], [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]),
    (LEFT, "suffix", [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], [[0, 1, 1, 0, 0], [1, 1, 1, 0, 0]],
     [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]], [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]),
])
def test_layout_masks_and_positions(text_mask, placement, mask, text, soft, pos):
    lay = Layout(text_mask, 2, placement)
    assert torch.equal(lay.mask, _t(mask))
    assert torch.equal(lay.text, _t(text))
    assert torch.equal(lay.soft, _t(soft))
    assert torch.equal(lay.positions, _t(pos))
    # the soft columns hold exactly the soft positions
    assert torch.equal(lay.soft[:, lay.soft_columns], torch.ones(2, 2, dtype=torch.long))


def test_text_alone_and_join_order():
    plain = Layout(LEFT)
    assert torch.equal(plain.mask, LEFT) and torch.equal(plain.text, LEFT)
    assert torch.equal(plain.positions, _t([[0, 0, 1], [0, 1, 2]]))
    assert torch.equal(positions(LEFT), plain.positions)
    text, soft = torch.zeros(2, 3, 1), torch.ones(2, 2, 1)
    assert Layout(RIGHT, 2, "prefix").join(text, soft)[0, :, 0].tolist() == [1, 1, 0, 0, 0]
    assert Layout(RIGHT, 2, "suffix").join(text, soft)[0, :, 0].tolist() == [0, 0, 0, 1, 1]
    assert plain.join(text, None) is text


def test_text_moves_against_the_prompt_keeping_its_order():
    from pe_core.model.layout import align_text, text_shift

    ids = torch.tensor([[5, 6, 0, 0], [0, 7, 8, 9], [1, 2, 3, 4]])
    mask = (ids != 0).long()
    assert text_shift(mask, to_end=True).tolist() == [[2, 3, 0, 1], [0, 1, 2, 3],
                                                      [0, 1, 2, 3]]
    end_ids, end_mask = align_text(ids, mask, to_end=True)
    assert end_ids.tolist() == [[0, 0, 5, 6], [0, 7, 8, 9], [1, 2, 3, 4]]
    assert end_mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]
    start_ids, _ = align_text(ids, mask, to_end=False)
    assert start_ids.tolist() == [[5, 6, 0, 0], [7, 8, 9, 0], [1, 2, 3, 4]]
    embeds = ids[..., None].float().expand(-1, -1, 2)
    assert torch.equal(align_text(embeds, mask, to_end=True)[0][..., 0], end_ids.float())
    text = torch.arange(1, 4, dtype=torch.float32).expand(2, 3)[..., None]  # 1 2 3
    soft = torch.full((2, 2, 1), 9.0)
    assert Layout(RIGHT, 2, "suffix").join(text, soft)[0, :, 0].tolist() == [3, 1, 2, 9, 9]


@pytest.mark.parametrize("k, placement", [(2, None), (0, "suffix"), (2, "middle")])
def test_layout_rejects_what_it_cannot_place(k, placement):
    with pytest.raises(ConfigError, match="placement"):
        Layout(RIGHT, k, placement)


# -- the pooling rule ---------------------------------------------------------------------
def _hidden(width):
    return torch.arange(2 * width * 3, dtype=torch.float32).reshape(2, width, 3)


@pytest.mark.parametrize("text_mask, placement, last, mean", [
    (RIGHT, "prefix", [3, 4], [[2, 3], [2, 3, 4]]),  # mean: the text
    (LEFT, "prefix", [3, 4], [[2, 3], [2, 3, 4]]),
    (RIGHT, "suffix", [4, 4], [[3, 4], [3, 4]]),  # mean: the soft positions
    (LEFT, "suffix", [4, 4], [[3, 4], [3, 4]]),
    (RIGHT, None, [1, 2], [[0, 1], [0, 1, 2]]),  # no prompt: every real position
    (LEFT, None, [2, 2], [[1, 2], [0, 1, 2]]),
])
def test_pool_reads_the_rule(text_mask, placement, last, mean):
    lay = Layout(text_mask, 0 if placement is None else 2, placement)
    hidden = _hidden(lay.mask.shape[1])
    assert torch.equal(pool(hidden, lay, "last"), hidden[[0, 1], last])
    want = torch.stack([hidden[r, cols].mean(0) for r, cols in enumerate(mean)])
    torch.testing.assert_close(pool(hidden, lay, "mean"), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("text_mask", [RIGHT, LEFT])
def test_pool_of_a_suffix_soft_positions_alone(text_mask):
    lay = Layout(text_mask, 2, "suffix")
    hidden = _hidden(5)
    assert torch.equal(pool(hidden[:, 3:], lay, "last"), pool(hidden, lay, "last"))
    torch.testing.assert_close(
        pool(hidden[:, 3:], lay, "mean"), pool(hidden, lay, "mean"), atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match="soft positions"):
        pool(hidden[:, 3:], Layout(text_mask, 2, "prefix"), "mean")
    with pytest.raises(ConfigError, match="pooling"):
        pool(hidden, lay, "max")


def test_last_index_and_padding():
    assert last_index(_t([[1, 1, 0], [0, 1, 1], [1, 0, 0]])).tolist() == [1, 2, 0]
    ids, mask = pad_rows([[5, 6], [7], []], pad_id=0, side="left")
    assert torch.equal(ids, _t([[5, 6], [0, 7], [0, 0]]))
    assert torch.equal(mask, _t([[1, 1], [0, 1], [0, 0]]))
    ids, mask = pad_rows([[5, 6], [7]], pad_id=9, side="right")
    assert torch.equal(ids, _t([[5, 6], [7, 9]])) and torch.equal(mask, _t([[1, 1], [1, 0]]))


# -- every torch path through them ----------------------------------------------------------
TEXTS = ["Return the sum of the numbers.", "fox",
         "Soft prompts steer a frozen language model toward the task at hand."]


@pytest.fixture(scope="module")
def embedder():
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tiny_embedder(get_backbone("llama"))


def _inputs(embedder, side):
    ids = embedder.tokenizer(TEXTS)["input_ids"]
    ids, mask = pad_rows(ids, embedder.tokenizer.pad_token_id or 0, side)
    table = embedder.backbone.embedding_table.detach()
    gen = torch.Generator().manual_seed(0)  # soft vectors at the scale of real rows
    soft = torch.randn((len(TEXTS), embedder.config.K, table.shape[1]), generator=gen)
    return ids, mask, soft * table.std()


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_encoder_training_and_reference_agree(embedder, placement, pooling):
    from pe_core.training.kvcache import TextKVStore, soft_pass, text_cache

    backbone = embedder.backbone
    ids, mask, soft = _inputs(embedder, "right")
    with torch.no_grad():
        ref = backbone.reference(ids, mask, soft, placement, pooling)
        for side in ("right", "left"):
            ids, mask, soft = _inputs(embedder, side)
            torch_path = backbone(ids, mask, soft, placement, pooling)
            torch.testing.assert_close(torch_path, ref, atol=TOL, rtol=0)
            if placement == "suffix":  # training's own suffix path (prefix calls the encoder)
                early = soft_pass(backbone, text_cache(backbone, ids, mask), mask, soft, pooling)
                store = TextKVStore(1 << 26, call_cost=0)
                grouped = soft_pass(backbone, store.cache(backbone, ids, mask), mask, soft, pooling)
                torch.testing.assert_close(early, ref, atol=TOL, rtol=0)
                torch.testing.assert_close(grouped, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_lora_baseline_reads_the_text_as_the_encoder_does(embedder, pooling):
    """The baseline's backbone without a prompt gives the encoder's plain embedding, on
    either padding side."""
    from pe_core.training.lora_baseline import LoraEmbedder

    backbone = embedder.backbone
    lora = LoraEmbedder(backbone.model, embedder.tokenizer, backbone.spec, pooling)
    with torch.no_grad():
        ids, mask, _ = _inputs(embedder, "right")
        want = backbone(ids, mask, None, "suffix", pooling)
        for side in ("right", "left"):
            ids, mask, _ = _inputs(embedder, side)
            torch.testing.assert_close(lora(ids, mask), want, atol=TOL, rtol=0)
