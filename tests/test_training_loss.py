"""Training, the InfoNCE loss and the settings it reads (pe_core.training.loss, settings).
Tiny models, tiny data."""

from __future__ import annotations

import pytest
import torch
from training_helpers import (
    INSTRUCTIONS,
    tiny_examples,
    tiny_method,
)

import pe_core
from pe_core.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


# -- loss -------------------------------------------------------------------------------
def test_info_nce_uses_in_batch_and_hard_negatives():
    from pe_core.training.loss import contrastive_loss, info_nce

    g = torch.Generator().manual_seed(0)
    q, pos, neg = (torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
                   for _ in range(3))
    loss = contrastive_loss(q, pos, neg, 0.05)
    scores = q @ torch.cat([pos, neg]).T / 0.05
    manual = -(scores.diagonal() - scores.logsumexp(-1)).mean()
    torch.testing.assert_close(loss, manual)
    assert info_nce(q, pos, torch.arange(4), 0.05) < loss  # hard negatives make it harder
    # a duplicate of a query's positive elsewhere in the batch is not its negative
    docs = torch.cat([pos, pos[:1]])
    keys = torch.tensor([10, 11, 12, 13, 10])
    label = torch.tensor([0])
    masked = info_nce(q[:1], docs, label, 0.05, keys)
    torch.testing.assert_close(masked, info_nce(q[:1], pos, label, 0.05))
    assert info_nce(q[:1], docs, label, 0.05) > masked


def test_default_temperature_in_range():
    from pe_core.training.settings import TrainSettings

    assert 0.02 <= TrainSettings().temperature <= 0.05
    with pytest.raises(ConfigError):
        TrainSettings(temperature=0)
    with pytest.raises(ConfigError, match="unknown training option"):
        pe_core.train("x.jsonl", backbone="llama", bogus=1)


def test_alignment_lr_default_depends_on_method():
    from pe_core.training.settings import TrainSettings

    assert TrainSettings().alignment_lr == 1e-2
    assert TrainSettings(method="align").alignment_lr == 3e-3
    assert TrainSettings(method="align", alignment_lr=5e-2).alignment_lr == 5e-2
    with pytest.raises(ConfigError, match="alignment_lr"):
        TrainSettings(alignment_lr=0)


def test_instruction_on_query_side_document_side_setting(llama_spec):
    method = tiny_method(llama_spec)
    rows = method.rows(tiny_examples(3), 1)
    doc = method.config.document_instruction
    assert rows.instructions == [INSTRUCTIONS[0], doc]
    assert rows.prompt == [0, 0, 0] + [1] * 6  # 3 queries, 3 positives, 3 negatives
    method.config.document_instruction = None  # documents without a soft prompt
    rows = method.rows(tiny_examples(3), 1)
    assert rows.instructions == [INSTRUCTIONS[0]] and rows.prompt == [0, 0, 0] + [-1] * 6
