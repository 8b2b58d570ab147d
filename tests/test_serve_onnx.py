"""``pe serve --onnx``: a folder of exported graphs, one per instruction, served under one
model name; each answer equals that graph's own ``encode`` (onnxruntime, in this process)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from serving_helpers import embeddings, load_direct, post, texts

from pe_core.testing.server_process import ServerProcess

pytestmark = pytest.mark.slow  # a server subprocess

QUERY = "Retrieve a passage that answers the question"
ATOL = 1e-6


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """onnx/query (QUERY baked in) and onnx/document (the document instruction)."""
    from pe_core.plugins import get_plugin_manager

    onnx = get_plugin_manager().exporters().get("onnx")
    model = load_direct()
    root = tmp_path_factory.mktemp("onnx")
    folders = {QUERY: onnx.export(model, QUERY, root / "query"),
               model.config.document_instruction: onnx.export(model, None, root / "document")}
    return root, {instruction: onnx.load(f) for instruction, f in folders.items()}, model


def test_onnx_folder_serves_one_graph_per_instruction(graphs):
    from openai import OpenAI

    root, encoders, model = graphs
    batch = texts(9)
    with ServerProcess(["--onnx", str(root)]) as server:
        oa = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        # no instruction: the document graph, as encode(instruction=None) would use
        docs = oa.embeddings.create(model="pe", input=batch)
        want = encoders[model.config.document_instruction].encode(batch)
        np.testing.assert_allclose([d.embedding for d in docs.data], want, atol=ATOL)
        queries = oa.embeddings.create(model="pe", input=batch, extra_body={"instruction": QUERY})
        np.testing.assert_allclose([d.embedding for d in queries.data],
                                   encoders[QUERY].encode(batch), atol=ATOL)
        # the graphs hold the torch embedder's soft prompts (export parity is 1e-4)
        np.testing.assert_allclose([d.embedding for d in queries.data],
                                   model.encode(batch, instruction=QUERY), atol=1e-4)
        with httpx.Client(timeout=60) as client:
            card = client.get(server.url + "/v1/models").json()["data"][0]
            assert card["pe"]["backend"] == "onnx"
            assert sorted(card["pe"]["instructions"]) == sorted(encoders)
            other = post(client, server.url, {"model": "pe", "input": ["a"],
                                              "instruction": "Classify the sentiment"})
            assert other.status_code == 422
            assert "--backend torch" in other.json()["error"]["message"]
            one = post(client, server.url, {"model": "pe", "input": "a"})
            document = encoders[model.config.document_instruction]
            np.testing.assert_allclose(embeddings(one), document.encode(["a"]), atol=ATOL)
