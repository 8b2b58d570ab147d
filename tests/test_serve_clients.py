"""``pe serve`` driven by the clients people build on, given only a base URL:
LangChain's ``OpenAIEmbeddings`` (with ``check_embedding_ctx_length=False``, its
documented setting for servers that are not OpenAI) and LlamaIndex's
``OpenAIEmbedding``. Neither names a model pe knows (both send
``text-embedding-ada-002``) and LangChain sends 1,000 texts per request: 1,500 documents
each, every vector equal to a direct ``encode`` within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import load_direct, texts

from pe_core.testing.server_process import ServerProcess

pytestmark = pytest.mark.slow  # a server subprocess

ATOL = 1e-5
N_DOCS = 1500


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--backbone", "llama", "--max-batch-size", "64"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def docs():
    """1,500 documents and their direct embeddings."""
    batch = texts(N_DOCS)
    return batch, load_direct().encode(batch, batch_size=64)


@pytest.fixture
def no_tiktoken(monkeypatch):
    """tiktoken fetches its encodings from the network, which offline machines lack:
    any call to it fails the test."""
    import tiktoken

    def refuse(*args, **kwargs):
        raise AssertionError("tiktoken was called: it would download an encoding")

    monkeypatch.setattr(tiktoken, "encoding_for_model", refuse)
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)


def test_langchain_openai_embeddings(server, docs, no_tiktoken):
    from langchain_openai import OpenAIEmbeddings

    batch, reference = docs
    embedder = OpenAIEmbeddings(base_url=server.url + "/v1", api_key="x",
                                check_embedding_ctx_length=False)
    assert embedder.chunk_size >= 1000  # more than the 512 pe took per request before
    np.testing.assert_allclose(embedder.embed_documents(batch), reference, atol=ATOL)
    np.testing.assert_allclose(embedder.embed_query(batch[7]), reference[7], atol=ATOL)
    # OpenAI's `dimensions`, through LangChain's own setting
    short = OpenAIEmbeddings(base_url=server.url + "/v1", api_key="x", dimensions=64,
                             check_embedding_ctx_length=False).embed_documents(batch[:5])
    head = reference[:5, :64]
    np.testing.assert_allclose(short, head / np.linalg.norm(head, axis=1, keepdims=True),
                               atol=ATOL)


def test_langchain_default_setting_is_refused_with_the_fix(server, no_tiktoken):
    """Without check_embedding_ctx_length=False LangChain tokenizes with tiktoken first
    (here refused, offline it fails to download) and sends OpenAI's token ids."""
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(AssertionError, match="tiktoken was called"):
        embedder.embed_documents(["a text"])


def test_llama_index_openai_embedding(server, docs):
    from llama_index.embeddings.openai import OpenAIEmbedding

    batch, reference = docs
    embedder = OpenAIEmbedding(api_base=server.url + "/v1", api_key="x")
    got = embedder.get_text_embedding_batch(batch)
    np.testing.assert_allclose(got, reference, atol=ATOL)
    np.testing.assert_allclose(embedder.get_query_embedding(batch[3]), reference[3], atol=ATOL)
    # TEI's path: a base URL without /v1 is answered too
    plain = OpenAIEmbedding(api_base=server.url, api_key="x")
    np.testing.assert_allclose(plain.get_text_embedding(batch[0]), reference[0], atol=ATOL)
