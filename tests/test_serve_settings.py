"""``pe serve``'s pieces without a server process: its settings are its flags (declared
once, in :mod:`pe_core.options`), texts are measured without tokenizing what cannot fit,
a served model resolves an instruction or prompt name as ``encode`` does and routes it
to its graph (``pe demo`` routes its ONNX graphs the same way), and the app answers a
client's mistakes 4xx (in-process, through Starlette's test client)."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import fields
from functools import partial

import numpy as np
import pytest

from pe_core.errors import ArgumentTypeError, ConfigError
from pe_core.serving.backends import ANY_INSTRUCTION, ServedModel
from pe_core.serving.settings import ServeSettings


def parse(*argv: str):
    from pe_core.cli.main import build_parser
    from pe_core.cli.serve_cmd import settings_from

    return settings_from(build_parser().parse_args(["serve", *argv]))


def test_every_setting_is_a_flag_with_its_declared_help(capsys):
    from pe_core.cli.main import build_parser
    from pe_core.options import meta, option_fields

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in option_fields(ServeSettings):
        m = meta(f)
        assert (m["flag"] or "--" + f.name.replace("_", "-")) in text, f.name
        assert " ".join(m["help"].split()) in text, f.name
    assert len(option_fields(ServeSettings)) == len(fields(ServeSettings))


def test_flags_make_the_settings(monkeypatch):
    monkeypatch.delenv("PE_API_KEY", raising=False)
    assert parse() == ServeSettings()
    got = parse("--no-batching", "--strict-model", "--max-body-mb", "2", "--name", "m",
                "--request-timeout", "3", "--no-access-log", "--max-tokens", "64")
    assert (got.batching, got.strict_model, got.max_body_bytes, got.model_name) == (
        False, True, 2 * 2**20, "m")
    assert (got.request_timeout_s, got.access_log, got.max_tokens) == (3.0, False, 64)
    monkeypatch.setenv("PE_API_KEY", "from-env")
    assert parse().api_key == "from-env" and parse("--api-key", "k").api_key == "k"


def test_defaults_take_what_clients_send():
    # LangChain sends 1,000 texts per request
    assert ServeSettings().max_inputs >= 2048 and not ServeSettings().strict_model


@pytest.mark.parametrize("kw,error,message", [
    ({"max_inputs": 0}, ConfigError, "max_inputs must be an integer > 0"),
    ({"port": 65536}, ConfigError, "port must be an integer >= 0 and <= 65535"),
    ({"batch_wait_ms": math.nan}, ConfigError, "batch_wait_ms must be a finite number"),
    ({"max_body_mb": -1.0}, ConfigError, "max_body_mb must be a finite number > 0"),
    ({"max_tokens": 0}, ConfigError, "max_tokens must be an integer >= 1"),
    ({"log_level": "loud"}, ConfigError, "log_level must be one of"),
    ({"max_inputs": "8"}, ArgumentTypeError, "max_inputs must be an integer"),
    ({"strict_model": 1}, ArgumentTypeError, "strict_model must be True or False"),
    ({"max_inputs": 10, "max_queue": 5}, ConfigError, "raise --max-queue"),
    ({"model_name": ""}, ConfigError, "pass --name NAME"),
])
def test_bad_settings_are_refused(kw, error, message):
    with pytest.raises(error, match=message):
        ServeSettings(**kw)


@pytest.fixture(scope="module")
def model():
    from serving_helpers import load_direct

    return load_direct()


def test_measure_cuts_at_the_character_bound_without_tokenizing_the_rest(model):
    route = ServedModel.from_encoders("pe", "torch", {ANY_INSTRUCTION: model}).route(None)
    limit = 40
    bound = limit * route.chars_per_token
    short, huge = "a short text", "word " * 2_000_000  # 10 MB
    start = time.perf_counter()
    got = route.measure([short, huge], limit)
    assert time.perf_counter() - start < 0.5  # the whole text takes seconds
    assert got.cut == [False, True] and got.texts == [short, huge[:bound]]
    assert got.counts[0] == len(model.tokenizer(short)["input_ids"]) and got.counts[1] > limit
    # the bound is sound for this tokenizer: no token is longer than chars_per_token
    assert all(len(model.tokenizer.decode([i])) <= route.chars_per_token
               for i in range(len(model.tokenizer)))


def test_measure_counts_whole_texts_for_a_tokenizer_that_drops_characters(model):
    """A pre-tokenizer that drops whitespace breaks the character bound: the text is
    then counted whole, not refused."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from pe_core.serving.backends import Route

    raw = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    spaces = Route(model, None, PreTrainedTokenizerFast(tokenizer_object=raw), 8, 1)
    got = spaces.measure([" " * 100 + "a"], 8)
    assert got.counts == [1] and got.cut == [False] and got.texts == [" " * 100 + "a"]


class Graph:
    """What a server needs of an exported graph (the ONNX embedder's interface), with
    one instruction baked in; encode records what it was asked."""

    def __init__(self, model, instruction):
        self.instruction, self.config, self.tokenizer = instruction, model.config, model.tokenizer
        self.dim, self.calls = model.dim, []

    def max_text_tokens(self, instruction=None):
        return 100

    def encode(self, texts, instruction=None, prompt=None, **kw):
        asked = instruction if prompt is None else prompt or None
        self.calls.append(asked)
        if asked != self.instruction:
            raise ConfigError(f"baked {self.instruction!r}, asked {asked!r}")
        return np.zeros((len(texts), self.dim), dtype=np.float32)


def test_graph_routing_by_instruction_and_prompt_name(model):
    query, document = model.config.prompts["query"], model.config.document_instruction
    graphs = {query: Graph(model, query), document: Graph(model, document)}
    served = ServedModel.from_encoders("pe", "onnx", graphs)
    assert served.instructions == [query, document]
    served.encode(["a"])  # no instruction: the document graph, as encode would choose
    served.encode(["a"], prompt_name="query")
    served.encode(["a"], instruction=document)
    assert graphs[document].calls == [document, document] and graphs[query].calls == [query]
    with pytest.raises(ConfigError, match="no graph for the instruction 'Classify'.*"
                                          "--backend torch"):
        served.encode(["a"], instruction="Classify")
    with pytest.raises(ConfigError, match=r"unknown prompt_name 'nope'.*\['document', 'query'"):
        served.resolve(prompt_name="nope")
    with pytest.raises(ConfigError, match="not instruction and prompt_name"):
        served.resolve("x", prompt_name="query")


@pytest.fixture(scope="module")
def strict_app():
    from starlette.testclient import TestClient

    from pe_core.serving.app import create_app
    from pe_core.serving.backends import load_torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = create_app(partial(load_torch, "pe", backbone="llama"),
                         ServeSettings(strict_model=True))
        with TestClient(app) as client:
            deadline = time.monotonic() + 120
            while client.get("/health").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            yield client


def test_strict_model_keeps_the_404(strict_app):
    for path in ("/v1/embeddings", "/embeddings"):
        r = strict_app.post(path, json={"model": "text-embedding-ada-002", "input": ["a"]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "serves 'pe'" in r.json()["error"]["message"]
    assert strict_app.get("/v1/models/gpt-4").status_code == 404
    assert strict_app.post("/embeddings", json={"model": "pe", "input": ["a"]}).status_code \
        == 200
