"""The shipped Gemma 3 embedder (issue 37 point 4): a fresh install loads it trained, in one
line, with no flag and no untrained warning, and its files match their manifest."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pe_core.zoo import names as zoo_names

QUERY = "how do I reverse a list in python"
DOCS = ["Return a new list with the items of the input in reverse order.",
        "Open a TCP socket to the given host and port.",
        "Compute the SHA-256 digest of a file.",
        "Parse a date string in ISO 8601 format."]


def test_the_zoo_ships_a_trained_gemma3_embedder_loaded_in_one_line():
    import pe_core
    from pe_core import zoo

    assert "gemma3-270m" in zoo.names()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "no trained alignment" warning
        model = pe_core.load(backbone="gemma", model="pe-real:gemma3-270m", device="cpu")
    assert model.config.model_id == "pe-real:gemma3-270m"
    assert model.config.eval_results  # the trained run's, not a fresh least-squares one


@pytest.mark.parametrize("name", zoo_names())
def test_each_shipped_entry_loads_trained_and_ranks_its_positive_first(name):
    from pe_core import zoo
    from pe_core.safe_io import check_manifest_beside

    check_manifest_beside(zoo.entry(name))  # every shipped byte as published
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = zoo.load(name, device="cpu")
    assert model.config.eval_results
    scores = model.similarity(model.encode_query([QUERY]), model.encode_document(DOCS))
    assert int(np.argmax(np.asarray(scores)[0])) == 0
