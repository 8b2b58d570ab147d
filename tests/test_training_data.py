"""Training, training pairs: reading, validating, hashing and batching
(pe_core.training.data). Tiny models, tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import (
    INSTRUCTIONS,
    pair_records,
    write_jsonl,
)

from pe_core.errors import DataError
from pe_core.training.data import TaskBatches, read_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

# -- data -----------------------------------------------------------------------------
def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        read_pairs(path)


@pytest.mark.parametrize("record, message", [
    ({"query": "q"}, "no 'positive'"),
    ({"positive": "p"}, "no 'query'"),
    ({"query": 3, "positive": "p"}, "'query' must be a string"),
    ({"query": "q", "positive": "p", "negatives": "n"}, "list of strings"),
    ({"query": "q", "positive": "p", "negatives": [1]}, "list of strings"),
    ({"query": "q", "positive": "p", "instruction": 5}, "'instruction' must be a string"),
    ({"query": "q", "positive": "  "}, "empty string"),
    (["q", "p"], "JSON object"),
    # "no negatives" is an absent or null field, not a falsy value of another type
    ({"query": "q", "positive": "p", "negatives": ""}, "list of strings"),
    ({"query": "q", "positive": "p", "negatives": 0}, "list of strings"),
    ({"query": "q", "positive": "p", "negatives": False}, "list of strings"),
    ({"query": "q", "positive": "p", "negatives": {}}, "list of strings"),
    ({"query": "q", "positive": "p", "negatives": ["", "  "]}, r"'negatives\[0\]' is an empty"),
    ({"query": "q", "positive": "p", "negatives": ["n", " "]}, r"'negatives\[1\]' is an empty"),
    # lone surrogates (a JSON escape can write one) are not text
    ({"query": "a\ud800", "positive": "p"}, "'query' holds a lone surrogate"),
    ({"query": "q", "positive": "p", "negatives": ["\udfff"]}, r"'negatives\[0\]' holds a lone"),
    ({"query": "q", "positive": "p", "instruction": "do \ud800"}, "'instruction' holds a lone"),
    ({"query": "q", "positive": "p", "task": "\ud800"}, "'task' holds a lone"),
    ({"query": "q", "positive": "p", "negatives": ["n", " p "]}, "negative is the positive"),
])
def test_bad_records_name_file_line_and_field(tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"query": "a", "positive": "b"}, record])
    with pytest.raises(DataError, match=message) as info:
        read_pairs(path)
    assert f"{path}:2" in str(info.value)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n{"query": \n')
    with pytest.raises(DataError, match=":2: not valid JSON"):
        read_pairs(path)


def test_each_batch_is_drawn_from_one_task(pairs):
    data = read_pairs(pairs)
    assert sorted(data.tasks()) == sorted(INSTRUCTIONS)
    batches = TaskBatches(data, batch_size=8, seed=3)
    for epoch in range(3):
        for batch in batches.epoch(epoch):
            assert len({data.examples[i].task for i in batch}) == 1
    assert batches.epoch(1) == TaskBatches(data, 8, seed=3).epoch(1)  # replayable
    assert batches.epoch(1) != batches.epoch(2)


def test_task_field_and_mixed_instruction_presence(tmp_path):
    rows = [{"query": "a b", "positive": "c d", "task": "t"},
            {"query": "e f", "positive": "g h", "task": "t", "instruction": "x"}]
    with pytest.raises(DataError, match="mixes records"):
        read_pairs(rows)


def test_datasets_dataset_and_hash(pairs):
    datasets = pytest.importorskip("datasets")
    rows = pair_records()
    from_ds = read_pairs(datasets.Dataset.from_list(rows))
    from_list = read_pairs(rows)
    assert len(from_ds) == len(rows) and from_ds.examples == from_list.examples
    assert from_ds.data_hash == from_list.data_hash
    import hashlib

    assert read_pairs(pairs).data_hash == hashlib.sha256(pairs.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="no training records"):
        read_pairs([])


def test_surrogates_and_ignored_keys_in_records_given_as_a_list():
    """The same checks for in-memory records; keys the reader ignores stay out of the
    data hash, so an id of any type (numpy's int64 is not JSON) changes nothing."""
    rows = [{"query": f"q{i}", "positive": f"p{i}", "instruction": "x"} for i in range(4)]
    with pytest.raises(DataError, match=r"records row 2: field 'positive' holds a lone"):
        read_pairs([*rows[:2], {"query": "q", "positive": "\ud800"}], name="records")
    with_ids = [{**r, "id": np.int64(i), "meta": object()} for i, r in enumerate(rows)]
    assert read_pairs(with_ids).data_hash == read_pairs(rows).data_hash
    changed = [*rows[:3], {**rows[3], "positive": "other"}]
    assert read_pairs(changed).data_hash != read_pairs(rows).data_hash


def test_jsonl_line_breaks_inside_strings_are_text(tmp_path):
    """JSON allows U+2028, U+2029, U+0085 and form feeds raw inside a string, and
    json.dumps(ensure_ascii=False) writes them so: only "\\n" ends a record."""
    rows = [{"query": f"line{sep}break", "positive": f"p{i}", "instruction": "x"}
            for i, sep in enumerate(["\u2028", "\u2029", "\u0085", "\f", "\v", "\x1c"])]
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows),
                    encoding="utf-8")
    data = read_pairs(path)
    assert [e.query for e in data.examples] == [r["query"] for r in rows]


def test_deep_nesting_and_bad_bytes_are_data_errors(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"query": "q", "positive": "p"}\n'
                    '{"query": "q", "positive": "p", "x": ' + "[" * 200_000 + "]" * 200_000
                    + "}\n")
    with pytest.raises(DataError, match=r"deep.jsonl:2: .*nested too deeply"):
        read_pairs(path)
    path.write_bytes(b'{"query": "q", "positive": "p"}\n{"query": "\xff", "positive": "p"}\n')
    with pytest.raises(DataError, match=r"deep.jsonl:2: not UTF-8"):
        read_pairs(path)


@pytest.mark.parametrize(("negatives", "cap", "message"), [
    ([["n1"], ["n2"], ["n3"], ["n4"]], 3, r"record 1 .*has 1 hard negative.*is 3.*to 1"),
    ([["n1"], [], ["n3"], ["n4"]], 1, r"record 2 .*has 0 hard negative.*--hard-negatives 0"),
    ([["a", "b"], ["c"], ["d", "e"], ["f", "g"]], 2, r"record 2 .*has 1 .*to 1"),
])
def test_hard_negatives_training_would_drop_are_refused(negatives, cap, message):
    from pe_core.training.data import check_negatives

    rows = [{"query": f"q{i}", "positive": f"p{i}", "negatives": n}
            for i, n in enumerate(negatives)]
    with pytest.raises(DataError, match=message):
        check_negatives(read_pairs(rows), cap)
    check_negatives(read_pairs(rows), 0)  # 0: negatives ignored, nothing dropped by surprise
    plain = [{"query": f"q{i}", "positive": f"p{i}"} for i in range(4)]
    check_negatives(read_pairs(plain), 1)  # the default: use one where records have them
    with pytest.raises(DataError, match="hard_negatives is 2 but no record has"):
        check_negatives(read_pairs(plain), 2)


def test_hard_negatives_that_fit_or_tasks_without_any_pass():
    from pe_core.training.data import check_negatives

    rows = [{"query": f"q{i}", "positive": f"p{i}", "negatives": ["a", "b", "c"][: 2 + i % 2],
             "task": "t"} for i in range(4)]
    rows += [{"query": f"r{i}", "positive": f"s{i}", "task": "u"} for i in range(4)]
    check_negatives(read_pairs(rows), 2)  # task u trains on in-batch negatives alone


def test_tasks_of_one_example_say_why_no_batch_forms():
    rows = [{"query": f"q{i}", "positive": f"p{i}", "instruction": f"task {i}"}
            for i in range(5)]
    with pytest.raises(DataError, match=r"5 task\(s\), the largest with 1.*the same task"):
        TaskBatches(read_pairs(rows), batch_size=4)


def test_a_bom_is_skipped_and_other_file_shapes_are_named(tmp_path):
    """A UTF-8 BOM (as some editors write) is not part of the first record; a folder, a
    JSON array or an indented file are named for what they are."""
    rows = [{"query": f"q{i}", "positive": f"p{i}"} for i in range(3)]
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert [e.query for e in read_pairs(path).examples] == ["q0", "q1", "q2"]
    with pytest.raises(DataError, match="is a folder: pass a JSONL file"):
        read_pairs(tmp_path)
    for name, text in (("array.json", json.dumps(rows, indent=1)),
                       ("indented.jsonl", json.dumps(rows[0], indent=2))):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=rf"{name}:1: .*one JSON object per line"):
            read_pairs(tmp_path / name)
