"""``pe serve`` against the real server: a subprocess on a free loopback port, driven by
the ``openai`` client and raw HTTP (httpx). Every embedding is compared with a direct
``encode`` of the same texts in this process, within 1e-6 (another batch composition
pads differently, so the sums may run in another order)."""

from __future__ import annotations

import base64
import re
import threading

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import embeddings, load_direct, post, texts

from pe_core.testing.server_process import ServerProcess

pytestmark = pytest.mark.slow  # a server subprocess

KEY = "test-key"
MAX_TOKENS = 48
ATOL = 1e-6


@pytest.fixture(scope="module")
def direct():
    return load_direct()


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--backbone", "llama", "--api-key", KEY, "--max-inputs", "64",
                        "--max-tokens", str(MAX_TOKENS), "--max-batch-size", "16",
                        "--batch-wait-ms", "5", "--max-body-mb", "1"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=60) as c:
        yield c


def metric(client, url: str, name: str, **labels) -> float:
    """One sample of ``/metrics`` (0 if it is not there yet)."""
    families = text_string_to_metric_families(client.get(url + "/metrics").text)
    for family in families:
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_openai_client_gets_what_encode_gives(server, direct):
    from openai import OpenAI

    batch = texts(7)
    oa = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    # the client asks for base64 unless told otherwise, and decodes it
    got = oa.embeddings.create(model="pe", input=batch)
    np.testing.assert_allclose([d.embedding for d in got.data], direct.encode(batch), atol=ATOL)
    n_tokens = sum(len(x) for x in direct.tokenizer(batch)["input_ids"])
    assert (got.usage.prompt_tokens, got.usage.total_tokens) == (n_tokens, n_tokens)
    assert got.model == "pe"

    floats = oa.embeddings.create(model="pe", input=batch[0], encoding_format="float")
    assert len(floats.data) == 1 and len(floats.data[0].embedding) == direct.dim
    np.testing.assert_allclose(floats.data[0].embedding, direct.encode([batch[0]])[0], atol=ATOL)

    instruction = "Retrieve a passage that answers the question"
    queries = oa.embeddings.create(model="pe", input=batch[:3],
                                   extra_body={"instruction": instruction})
    np.testing.assert_allclose([d.embedding for d in queries.data],
                               direct.encode(batch[:3], instruction=instruction), atol=ATOL)
    # the instruction changes the soft prompt, so the vectors
    assert np.abs(np.array(queries.data[0].embedding) - got.data[0].embedding).max() > 1e-3

    assert [m.id for m in oa.models.list().data] == ["pe"]


def test_raw_http_float_and_base64_shapes(server, client, direct):
    batch = texts(3)
    floats = post(client, server.url, {"model": "pe", "input": batch, "user": "u1"}, KEY)
    assert floats.status_code == 200
    body = floats.json()
    assert set(body) == {"object", "data", "model", "usage"} and body["object"] == "list"
    assert {d["object"] for d in body["data"]} == {"embedding"}
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    packed = post(client, server.url, {"model": "pe", "input": batch,
                                       "encoding_format": "base64"}, KEY)
    decoded = [np.frombuffer(base64.b64decode(e), dtype="<f4") for e in embeddings(packed)]
    np.testing.assert_allclose(decoded, embeddings(floats), atol=ATOL)
    np.testing.assert_allclose(decoded, direct.encode(batch), atol=ATOL)
    # curl -d sends a form content type: the body is JSON all the same
    curl_like = post(client, server.url, '{"model": "pe", "input": "hello"}', KEY,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    np.testing.assert_allclose(embeddings(curl_like), direct.encode(["hello"]), atol=ATOL)


def test_health_models_and_metrics(server, client):
    assert client.get(server.url + "/health").json() == {"status": "ok", "model": "pe"}
    models = client.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    card = models.json()["data"][0]
    assert (card["id"], card["object"], card["pe"]["backend"]) == ("pe", "model", "torch")
    assert card["pe"]["dimensions"] == 256 and card["pe"]["instructions"] is None
    assert client.get(server.url + "/v1/models/pe",
                      headers={"Authorization": f"Bearer {KEY}"}).json()["id"] == "pe"
    # /health and /metrics need no key, so probes and scrapers work without one
    text = client.get(server.url + "/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(text.text)}
    assert {"pe_requests", "pe_request_duration_seconds", "pe_batch_size", "pe_queue_depth",
            "pe_model_ready"} <= names
    assert metric(client, server.url, "pe_model_ready", model="pe") == 1


LONG = "word " * (MAX_TOKENS * 2)
BAD = [  # (id, body, key, status, code)
    ("malformed-json", b'{"model": "pe", "input": [', KEY, 400, None),
    ("lone-surrogate", b'{"model": "pe", "input": ["a\\ud800b"]}', KEY, 400, None),
    ("invalid-utf8", b'{"model": "pe", "input": ["\xff"]}', KEY, 400, None),
    ("not-an-object", b'["hello"]', KEY, 422, "invalid_input"),
    ("empty-list", {"model": "pe", "input": []}, KEY, 422, "invalid_input"),
    ("non-string-item", {"model": "pe", "input": ["a", {"t": 1}]}, KEY, 422, "invalid_input"),
    ("token-ids", {"model": "pe", "input": [[1, 2, 3]]}, KEY, 422, "invalid_input"),
    ("empty-string", {"model": "pe", "input": ["a", ""]}, KEY, 422, "invalid_input"),
    ("no-model", {"input": ["a"]}, KEY, 422, "invalid_input"),
    ("unknown-field", {"model": "pe", "input": ["a"], "inptu": 1}, KEY, 422, "invalid_input"),
    ("bad-format", {"model": "pe", "input": ["a"], "encoding_format": "int8"}, KEY, 422,
     "invalid_input"),
    ("zero-dimensions", {"model": "pe", "input": ["a"], "dimensions": 0}, KEY, 422,
     "invalid_dimensions"),
    ("negative-dimensions", {"model": "pe", "input": ["a"], "dimensions": -4}, KEY, 422,
     "invalid_dimensions"),
    ("wide-dimensions", {"model": "pe", "input": ["a"], "dimensions": 257}, KEY, 422,
     "invalid_dimensions"),
    ("bool-dimensions", {"model": "pe", "input": ["a"], "dimensions": True}, KEY, 422,
     "invalid_input"),
    ("unknown-prompt-name", {"model": "pe", "input": ["a"], "prompt_name": "nope"}, KEY, 422,
     "invalid_input"),
    ("prompt-name-and-instruction", {"model": "pe", "input": ["a"], "prompt_name": "query",
                                     "instruction": "Retrieve"}, KEY, 422, "invalid_input"),
    ("instruction-too-long", {"model": "pe", "input": ["a"], "instruction": "why " * 600},
     KEY, 422, "invalid_input"),
    ("instruction-megabytes", {"model": "pe", "input": ["a"], "instruction": "x" * 300_000},
     KEY, 422, "invalid_input"),
    ("too-many-inputs", {"model": "pe", "input": ["a"] * 65}, KEY, 413, "too_many_inputs"),
    ("over-long-input", {"model": "pe", "input": ["a", LONG]}, KEY, 413, "input_too_long"),
    ("body-too-large", {"model": "pe", "input": ["a" * (2**20 + 10)]}, KEY, 413,
     "body_too_large"),
    ("wrong-key", {"model": "pe", "input": ["a"]}, "nope", 401, "invalid_api_key"),
    ("no-key", {"model": "pe", "input": ["a"]}, None, 401, "invalid_api_key"),
]


@pytest.mark.parametrize("name,body,key,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_its_4xx_and_the_server_keeps_serving(
    server, client, direct, name, body, key, status, code
):
    before = metric(client, server.url, "pe_requests_total", path="/v1/embeddings",
                    code=str(status))
    response = post(client, server.url, body, key)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert len(error["message"]) > 20  # says what is wrong and what to do
    after = metric(client, server.url, "pe_requests_total", path="/v1/embeddings",
                   code=str(status))
    assert after == before + 1
    good = post(client, server.url, {"model": "pe", "input": ["still here"]}, KEY)
    np.testing.assert_allclose(embeddings(good), direct.encode(["still here"]), atol=ATOL)


WARNED = re.compile(r"a request named the model '([^']*)'; serving 'pe'")


def test_any_model_name_is_served_with_one_warning(server, client, direct):
    from openai import OpenAI

    batch = texts(5)
    oa = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    for name in ("text-embedding-ada-002", "gpt-4", "text-embedding-3-small"):
        got = oa.embeddings.create(model=name, input=batch)
        assert got.model == "pe"  # the answer says which model embedded them
        np.testing.assert_allclose([d.embedding for d in got.data], direct.encode(batch),
                                   atol=ATOL)
    server.wait_for(WARNED, 30)
    post(client, server.url, {"model": "yet-another", "input": ["x"]}, KEY)
    client.get(server.url + "/health")
    assert sum(WARNED.search(line) is not None for line in server.lines) == 1


def test_embeddings_path_dimensions_and_prompt_name(server, client, direct):
    from openai import OpenAI

    batch = texts(6)
    # TEI's and infinity's path, without /v1
    plain = client.post(server.url + "/embeddings", json={"model": "m", "input": batch},
                        headers={"Authorization": f"Bearer {KEY}"})
    np.testing.assert_allclose(embeddings(plain), direct.encode(batch), atol=ATOL)
    # dimensions: the first values, re-normalised, as encode's truncate_dim
    short = post(client, server.url, {"model": "pe", "input": batch, "dimensions": 64}, KEY)
    vectors = np.array(embeddings(short))
    assert vectors.shape == (6, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(vectors, direct.encode(batch, truncate_dim=64), atol=ATOL)
    oa = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    packed = oa.embeddings.create(model="pe", input=batch, dimensions=32)  # base64
    np.testing.assert_allclose([d.embedding for d in packed.data],
                               direct.encode(batch, truncate_dim=32), atol=ATOL)
    # prompt_name: one of the model's named prompts, as encode(prompt_name=...)
    for name in ("query", "document"):
        named = oa.embeddings.create(model="pe", input=batch, extra_body={"prompt_name": name})
        np.testing.assert_allclose([d.embedding for d in named.data],
                                   direct.encode(batch, prompt_name=name), atol=ATOL)
    # an empty instruction is one too (its own soft prompt), as in encode
    empty = post(client, server.url, {"model": "pe", "input": batch, "instruction": ""}, KEY)
    np.testing.assert_allclose(embeddings(empty), direct.encode(batch, instruction=""),
                               atol=ATOL)
    query = direct.config.prompts["query"]
    np.testing.assert_allclose(direct.encode(batch, prompt_name="query"),
                               direct.encode(batch, instruction=query), atol=ATOL)
    card = client.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert card.json()["data"][0]["pe"]["prompts"] == direct.config.prompts


def test_client_errors_name_what_is_known(server, client):
    unknown = post(client, server.url, {"model": "pe", "input": ["a"], "prompt_name": "nope"},
                   KEY).json()["error"]["message"]
    assert "'nope'" in unknown and "'query'" in unknown and "'document'" in unknown
    wide = post(client, server.url, {"model": "pe", "input": ["a"], "dimensions": 0},
                KEY).json()["error"]["message"]
    assert "send 1 to 256" in wide
    both = post(client, server.url, {"model": "pe", "input": ["a"], "prompt_name": "query",
                                     "instruction": "x"}, KEY).json()["error"]["message"]
    assert "not instruction and prompt_name" in both
    long = post(client, server.url, {"model": "pe", "input": ["a"], "instruction": "why " * 600},
                KEY).json()["error"]["message"]
    assert "shorten" in long
    ids = post(client, server.url, {"model": "pe", "input": [[1, 2]]}, KEY).json()
    assert "check_embedding_ctx_length=False" in ids["error"]["message"]
    assert not any("Traceback" in line for line in server.lines)


def test_error_messages_name_the_fix(server, client):
    surrogate = post(client, server.url, b'{"model": "pe", "input": ["\\ud800"]}', KEY)
    assert "hex escape at line 1 column" in surrogate.json()["error"]["message"]
    long = post(client, server.url, {"model": "pe", "input": ["a", LONG]}, KEY).json()
    assert "input 1 has" in long["error"]["message"] and "--truncate" in long["error"]["message"]
    many = post(client, server.url, {"model": "pe", "input": ["a"] * 65}, KEY).json()
    assert "at most 64" in many["error"]["message"]
    unknown = client.get(server.url + "/v2/embeddings")
    assert unknown.status_code == 404 and "POST /v1/embeddings" in unknown.json()["error"][
        "message"]


def test_32_concurrent_clients_are_batched_and_answered_exactly(server, client, direct):
    pool = texts(96)
    reference = direct.encode(pool)
    clients, per_client = 32, 4
    jobs = [[[(c * 11 + r * 5 + k) % len(pool) for k in range(1 + (c + r) % 4)]
             for r in range(per_client)] for c in range(clients)]
    batches_before = metric(client, server.url, "pe_batch_size_count", model="pe")
    texts_before = metric(client, server.url, "pe_batch_size_sum", model="pe")
    start = threading.Barrier(clients)
    results: dict[tuple[int, int], object] = {}

    def run(c: int) -> None:
        with httpx.Client(timeout=120) as own:
            start.wait()
            for r, rows in enumerate(jobs[c]):
                results[c, r] = post(own, server.url,
                                     {"model": "pe", "input": [pool[i] for i in rows]}, KEY)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == clients * per_client
    for (c, r), response in results.items():
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(embeddings(response), reference[jobs[c][r]], atol=ATOL)
    n_texts = sum(len(rows) for job in jobs for rows in job)
    batches = metric(client, server.url, "pe_batch_size_count", model="pe") - batches_before
    assert metric(client, server.url, "pe_batch_size_sum", model="pe") - texts_before == n_texts
    # requests from different clients shared forward passes
    assert batches < clients * per_client
    assert metric(client, server.url, "pe_queue_depth", model="pe") == 0


def test_one_access_log_line_per_request(server, client):
    access = re.compile(r'pe\.serve\.access INFO 127\.0\.0\.1 "(\w+ \S+)" (\d+) [\d.]+ms')
    before = sum(access.search(line) is not None for line in server.lines)
    client.get(server.url + "/health")
    post(client, server.url, {"model": "pe", "input": ["x"]}, "nope")
    client.get(server.url + "/v1/nothing")
    last = server.wait_for(access, 30, nth=before + 3)
    lines = [m for line in server.lines if (m := access.search(line)) is not None]
    assert [m.groups() for m in lines[before:before + 3]] == [
        ("GET /health", "200"), ("POST /v1/embeddings", "401"), ("GET /v1/nothing", "404")]
    assert last.groups() == ("GET /v1/nothing", "404")


def test_pe_help_imports_no_server_stack():
    import subprocess
    import sys

    code = ("import sys; from pe_core.cli.main import build_parser; build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'fastapi', 'uvicorn', 'starlette', 'prometheus_client'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args,message", [
    (["serve"], "pass --backbone NAME (torch backend) or --onnx FOLDER"),
    (["serve", "--backend", "onnx", "--backbone", "llama"], "pass --onnx FOLDER"),
    (["serve", "--onnx", "x", "--backend", "torch"], "--onnx needs --backend onnx"),
    (["serve", "--onnx", "x", "--backbone", "llama"], "drop --backbone"),
    (["serve", "--onnx", "/nonexistent/onnx"], "holds no exported graph"),
    (["serve", "--backbone", "phi9"], "pip install pe-plugin-phi9"),
    (["serve", "--backbone", "llama", "--max-inputs", "10", "--max-queue", "5"],
     "raise --max-queue"),
    (["serve", "--backbone", "llama", "--max-batch-size", "0"],
     "max_batch_size must be an integer > 0"),
    (["serve", "--backbone", "llama", "--port", "70000"], "port must be an integer >= 0"),
    (["serve", "--backbone", "llama", "--name", ""], "pass --name NAME"),
])
def test_serve_cli_refuses_bad_arguments_before_starting(args, message, capsys):
    from pe_core.cli.main import main

    assert main(args) == 2
    assert message in capsys.readouterr().err
