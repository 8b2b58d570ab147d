"""``pe serve`` under pressure: a full queue, truncation, timeouts, SIGTERM during load,
a model that fails to load. Each server runs in its own subprocess."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from serving_helpers import embeddings, load_direct, post, texts

from pe_core.testing.server_process import STOPPED, ServerProcess

pytestmark = pytest.mark.slow  # a server subprocess per test

ATOL = 1e-6


@pytest.fixture(scope="module")
def direct():
    return load_direct()


def long_text(tokenizer, tokens: int, seed: int = 0) -> str:
    """A text of exactly ``tokens`` tokens (special tokens included)."""
    words = texts(64 + seed, longest=24)[seed:]
    ids = tokenizer(" ".join(words * 40), add_special_tokens=False)["input_ids"]
    specials = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)[
        "input_ids"])
    out = tokenizer.decode(ids[: tokens - specials])
    assert len(tokenizer(out)["input_ids"]) == tokens
    return out


def concurrently(n: int, send) -> list:
    """``send(i)`` from ``n`` threads released together; their results in order."""
    start = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        with httpx.Client(timeout=120) as own:
            start.wait()
            results[i] = send(own, i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def test_full_queue_answers_429_at_once_and_truncation_says_so(direct):
    # each request holds 16 texts of ~500 tokens (hundreds of ms to encode) and the queue
    # has room for one of them: of 6 sent together, one runs, one waits, the rest bounce
    big = [long_text(direct.tokenizer, 500 - i, seed=i) for i in range(16)]
    reference = direct.encode(big)
    with ServerProcess(["--backbone", "llama", "--max-queue", "16", "--max-inputs", "16",
                        "--truncate"]) as server:
        results = concurrently(6, lambda c, i: post(c, server.url, {"model": "pe", "input": big}))
        codes = sorted(r.status_code for r in results)
        assert 429 in codes and set(codes) <= {200, 429}, codes
        assert codes.count(200) >= 1
        for r in results:
            if r.status_code == 200:
                np.testing.assert_allclose(embeddings(r), reference, atol=ATOL)
            else:
                assert r.json()["error"]["code"] == "queue_full"
                assert r.headers["retry-after"] == "1"
        with httpx.Client(timeout=60) as client:
            # the queue drained: the server serves again
            ok = post(client, server.url, {"model": "pe", "input": ["after the flood"]})
            np.testing.assert_allclose(embeddings(ok), direct.encode(["after the flood"]),
                                       atol=ATOL)
            # --truncate: a 600-token text is cut where encode cuts it (max_length, lowered
            # to what the backbone's 512 positions leave beside the soft prompt)
            over = long_text(direct.tokenizer, 600)
            cut = post(client, server.url, {"model": "pe", "input": [over, "short"]})
            assert cut.status_code == 200 and cut.headers["x-pe-truncated"] == "1"
            with pytest.warns(UserWarning, match="truncated"):
                want = direct.encode([over, "short"])
            np.testing.assert_allclose(embeddings(cut), want, atol=ATOL)
            short = len(direct.tokenizer("short")["input_ids"])
            assert cut.json()["usage"]["prompt_tokens"] == direct.max_text_tokens() + short
            assert "x-pe-truncated" not in ok.headers
            # a text far past what the model reads is cut at the character bound before
            # it is tokenized: the answer is still encode's, which reads its first tokens
            huge = " ".join(texts(4000, longest=24))
            assert len(huge) > 100 * direct.max_text_tokens()
            cut = post(client, server.url, {"model": "pe", "input": [huge]})
            assert cut.status_code == 200 and cut.headers["x-pe-truncated"] == "1"
            with pytest.warns(UserWarning, match="truncated"):
                np.testing.assert_allclose(embeddings(cut), direct.encode([huge]), atol=ATOL)


def test_request_timeout_answers_504_and_skips_the_waiting_job(direct):
    big = [long_text(direct.tokenizer, 500 - i, seed=i) for i in range(16)]
    with ServerProcess(["--backbone", "llama", "--request-timeout", "0.02",
                        "--no-batching"]) as server:
        # one job runs past its timeout; the other waits behind it past its own
        results = concurrently(2, lambda c, i: post(c, server.url, {"model": "pe",
                                                                    "input": big}))
        for r in results:
            assert r.status_code == 504, r.text
            assert r.json()["error"]["code"] == "timeout"
        with httpx.Client(timeout=60) as client:
            assert client.get(server.url + "/health").status_code == 200
        assert server.stop() == -signal.SIGTERM  # uvicorn re-raises it after draining
        stopped = server.wait_for(STOPPED, 30)
    assert stopped["skipped"] == "1"  # the waiting job was never encoded
    assert stopped["answered"] == stopped["accepted"]


def test_sigterm_during_load_loses_no_accepted_request(direct):
    pool = texts(48)
    reference = direct.encode(pool)
    answered = threading.Semaphore(0)
    outcomes: dict[int, list] = {}

    with ServerProcess(["--backbone", "llama", "--batch-wait-ms", "5"]) as server:
        def client_loop(c: int) -> None:
            outcomes[c] = []
            for r in range(40):  # bounded: the server stops long before
                rows = [(c * 3 + r + k) % len(pool) for k in range(1 + r % 3)]
                try:  # a fresh connection per request: no keep-alive races
                    with httpx.Client(timeout=60) as own:
                        response = post(own, server.url,
                                        {"model": "pe", "input": [pool[i] for i in rows]})
                except httpx.TransportError as exc:  # refused or closed before it was read
                    outcomes[c].append(("transport", type(exc).__name__))
                    return
                outcomes[c].append((response.status_code, rows, response))
                answered.release()

        threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(16)]
        for t in threads:
            t.start()
        for _ in range(24):  # some load has been answered: now stop the server
            assert answered.acquire(timeout=120)
        server.signal(signal.SIGTERM)
        for t in threads:
            t.join(300)
        assert server.proc.wait(60) == -signal.SIGTERM
        stopped = server.wait_for(STOPPED, 30)

    responses = [o for out in outcomes.values() for o in out if o[0] != "transport"]
    assert all(o[0] == 200 for o in responses), [o[0] for o in responses]
    for _, rows, response in responses:
        np.testing.assert_allclose(embeddings(response), reference[rows], atol=ATOL)
    # every request the server accepted was answered, and every answer reached a client
    assert int(stopped["accepted"]) == int(stopped["answered"]) == len(responses)
    assert len(responses) >= 24
    # the signal landed under load: clients were still sending when it came (whether an
    # answer is also logged after uvicorn's "Shutting down" line is timing, not asserted)
    assert len(responses) > 24 or any(o[0] == "transport" for out in outcomes.values()
                                      for o in out)


def test_a_model_that_fails_to_load_stops_the_server_with_its_error(tmp_path):
    server = ServerProcess(["--backbone", "llama", "--alignment", str(tmp_path / "none")])
    with pytest.raises(RuntimeError, match="could not load"):
        server.start()
    assert server.proc.wait(60) == 2
    assert any("pe: error:" in line for line in server.lines)


def test_a_huge_text_is_refused_at_once_and_a_dropped_upload_is_a_499(direct):
    small = texts(4)
    with ServerProcess(["--backbone", "llama"]) as server, httpx.Client(timeout=120) as client:
        post(client, server.url, {"model": "pe", "input": small})  # warm
        # 20 MB in one text (the body limit is 64 MB): tokenizing it took 20 s, during
        # which no other request was answered
        huge = {"model": "pe", "input": ["word " * 4_000_000]}
        answers: list = []

        def send_huge() -> None:
            with httpx.Client(timeout=120) as own:
                start = time.perf_counter()
                answers.append((post(own, server.url, huge), time.perf_counter() - start))

        thread = threading.Thread(target=send_huge)
        thread.start()
        waits = []
        while thread.is_alive():  # other clients are answered meanwhile
            start = time.perf_counter()
            r = post(client, server.url, {"model": "pe", "input": small})
            waits.append(time.perf_counter() - start)
            assert r.status_code == 200
        thread.join()
        (refused, seconds), = answers
        assert refused.status_code == 413, refused.text
        message = refused.json()["error"]["message"]
        assert re.search(r"input 0 has more than \d+ tokens; at most 507", message), message
        assert seconds < 10 and max(waits) < 5, (seconds, waits)

        # half a body, then the client goes away: a 499 in the metrics, no traceback
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                        b'{"model": "pe", "input": ["' + b"a" * 1000)
        server.wait_for(re.compile(r'"POST /v1/embeddings" 499 '), 30)
        codes = [m.group(1) for line in server.lines
                 if (m := re.search(r'"POST /v1/embeddings" (\d+)', line))]
        assert "500" not in codes, codes
        assert not any("Traceback" in line or "Exception in ASGI" in line
                       for line in server.lines)
        metrics = client.get(server.url + "/metrics").text
        assert 'pe_requests_total{code="499",path="/v1/embeddings"} 1.0' in metrics
        assert 'code="500"' not in metrics
