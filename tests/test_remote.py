"""The remote backend: ``Reranker(URL)`` against crossrank serve in every API dialect, and against stub
servers that misbehave (429, 5xx, 413, slow, wrong key, wrong route, not a rerank response, gone)."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from crossrank import CrossrankError, Reranker  # noqa: E402
from crossrank.remote import (  # noqa: E402
    RemoteAuthError,
    RemoteNotFoundError,
    RemoteOverloadedError,
    RemoteRequestError,
    RemoteScorer,
    RemoteServerError,
    RemoteTimeoutError,
    RemoteUnavailableError,
)
from crossrank.remote.apis import APIS, endpoint, logit  # noqa: E402
from crossrank.server import ServerSettings, create_app  # noqa: E402
from crossrank.server.testing import serve_in_thread  # noqa: E402

KEY = "remote-key"
QUERY = "does aspirin prevent heart attacks?"
DOCS = [f"document {i}: aspirin and the heart, part {i % 3}" for i in range(12)] + ["paris", "statins"]


@pytest.fixture(scope="module")
def url(tiny: Reranker) -> Any:
    settings = ServerSettings(served_model_names=("tiny",), api_key=KEY, max_documents=5)
    with serve_in_thread(create_app(tiny, settings)) as base:
        yield base


def remote(url: str, api: str = "cohere", **options: Any) -> Reranker:
    return Reranker(url, api=api, remote_options={"api_key": KEY, **options})


@pytest.mark.parametrize("api", ["cohere", "cohere-v2", "jina", "tei", "infinity"])
def test_every_api_ranks_like_the_local_reranker(url: str, tiny: Reranker, api: str) -> None:
    rr = remote(url, api, max_documents=4)  # 14 documents: 4 requests
    local = tiny.rerank(QUERY, DOCS)
    got = rr.rerank(QUERY, DOCS)
    assert got.indices == local.indices
    assert [r.raw_score for r in got] == pytest.approx([r.raw_score for r in local], abs=1e-4)
    assert rr.score(QUERY, DOCS[:3], normalize="sigmoid") == pytest.approx(
        tiny.score(QUERY, DOCS[:3], normalize="sigmoid"), abs=1e-6
    )
    assert rr.scorer.describe().scale == "logit" and rr.backend_name == f"remote-{api}"
    assert got.stats.pairs_scored == len(DOCS)


def test_async_concurrent_and_top_n(url: str, tiny: Reranker) -> None:
    rr = remote(url, max_documents=5)

    async def go() -> list[Any]:
        return list(await asyncio.gather(*(rr.arerank(f"{QUERY} {i}", DOCS, top_n=3) for i in range(8))))

    for i, res in enumerate(asyncio.run(go())):
        assert res.indices == tiny.rerank(f"{QUERY} {i}", DOCS, top_n=3).indices
    # a second event loop gets its own pool; the first loop's is dropped
    assert asyncio.run(rr.ascore(QUERY, DOCS[:2])) == pytest.approx(tiny.score(QUERY, DOCS[:2]), abs=1e-4)


def test_413_splits_the_request(url: str, tiny: Reranker) -> None:
    rr = remote(url, max_documents=1000)  # the server takes 5 per request: 413, halve, retry
    assert rr.rerank(QUERY, DOCS).indices == tiny.rerank(QUERY, DOCS).indices
    assert asyncio.run(rr.arerank(QUERY, DOCS)).indices == tiny.rerank(QUERY, DOCS).indices


def test_typed_errors_from_crossrank_serve(url: str) -> None:
    with pytest.raises(RemoteAuthError, match="API key") as auth:
        Reranker(url, remote_options={"api_key": "wrong"}).rerank(QUERY, DOCS[:2])
    assert auth.value.status == 401 and isinstance(auth.value, CrossrankError)
    with pytest.raises(RemoteNotFoundError, match="never loads"):
        remote(url, model="/etc/passwd").rerank(QUERY, DOCS[:2])
    with pytest.raises(RemoteRequestError, match="400"):
        RemoteScorer(url, api_key=KEY).score(" ", ["a"], _settings())


def test_unreachable_server_is_a_typed_error_fast() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rr = Reranker(f"http://127.0.0.1:{port}", remote_options={"max_retries": 2, "backoff_s": 0.05, "timeout": 5})
    t = time.monotonic()
    with pytest.raises(RemoteUnavailableError, match="cannot reach"):
        rr.rerank(QUERY, DOCS[:2])
    with pytest.raises(RemoteUnavailableError):
        asyncio.run(rr.arerank(QUERY, DOCS[:2]))
    assert time.monotonic() - t < 3


# ---------------------------------------------------------------------------------------------- stub servers
class Stub:
    """A Cohere-shaped server whose answers the test scripts: a status per call, then 200s."""

    def __init__(self, statuses: list[int], delay: float = 0.0, body: Any = None) -> None:
        self.statuses = list(statuses)
        self.delay = delay
        self.body = body
        self.calls = 0
        self.ports: list[int] = []
        self.auth: list[str | None] = []

    async def rerank(self, request: Request) -> JSONResponse:
        self.calls += 1
        self.ports.append(request.client.port if request.client else 0)
        self.auth.append(request.headers.get("authorization"))
        data = await request.json()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.statuses:
            status = self.statuses.pop(0)
            return JSONResponse({"message": f"scripted {status}"}, status_code=status, headers={"Retry-After": "0"})
        if self.body is not None:
            return JSONResponse(self.body)
        n = len(data["documents"])
        results = [{"index": i, "relevance_score": (i + 1) / (n + 1)} for i in reversed(range(n))]
        return JSONResponse({"id": "x", "results": results})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/rerank", self.rerank, methods=["POST"])])


def _settings() -> Any:
    from crossrank import ScoreSettings

    return ScoreSettings()


def test_retries_429_and_5xx_then_succeeds_on_one_connection() -> None:
    stub = Stub([429, 503, 502])
    with serve_in_thread(stub.app(), wait_ready=None) as base:
        sc = RemoteScorer(base, max_retries=3, backoff_s=0.01)
        scored = sc.score("q", ["a", "b", "c"], _settings())
        assert stub.calls == 4
        assert scored.raw.tolist() == pytest.approx([logit(0.25), logit(0.5), logit(0.75)])
        sc.score("q", ["a"], _settings())
        assert len(set(stub.ports)) == 1  # one pooled keep-alive connection for every call
        sc.close()


def test_gives_up_with_typed_errors() -> None:
    stub = Stub([429] * 10)
    with serve_in_thread(stub.app(), wait_ready=None) as base:
        with pytest.raises(RemoteOverloadedError, match="429"):
            RemoteScorer(base, max_retries=2, backoff_s=0.01).score("q", ["a"], _settings())
        assert stub.calls == 3
    stub = Stub([500] * 10)
    with serve_in_thread(stub.app(), wait_ready=None) as base, pytest.raises(RemoteServerError, match="500"):
        asyncio.run(RemoteScorer(base, max_retries=1, backoff_s=0.01).ascore("q", ["a"], _settings()))
    stub = Stub([], body={"unexpected": True})
    with serve_in_thread(stub.app(), wait_ready=None) as base:
        with pytest.raises(RemoteServerError, match="did not answer with a cohere rerank response"):
            RemoteScorer(base).score("q", ["a"], _settings())
        with pytest.raises(RemoteNotFoundError, match="404"):
            RemoteScorer(base, api="tei").score("q", ["a"], _settings())


def test_deadline_bounds_the_whole_call() -> None:
    stub = Stub([], delay=3.0)
    with serve_in_thread(stub.app(), wait_ready=None) as base:
        t = time.monotonic()
        with pytest.raises(RemoteTimeoutError):
            RemoteScorer(base, timeout=0.5).score("q", ["a"], _settings())
        with pytest.raises(RemoteTimeoutError):
            asyncio.run(RemoteScorer(base, timeout=0.5).ascore("q", ["a"], _settings()))
        assert time.monotonic() - t < 2.5


def test_keys_go_only_to_their_own_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CO_API_KEY", "cohere-secret")
    monkeypatch.setenv("JINA_API_KEY", "jina-secret")
    monkeypatch.delenv("CROSSRANK_API_KEY", raising=False)
    stub = Stub([])
    with serve_in_thread(stub.app(), wait_ready=None) as base:
        RemoteScorer(base, api="cohere").score("q", ["a"], _settings())
        monkeypatch.setenv("CROSSRANK_API_KEY", "local-secret")
        RemoteScorer(base, api="cohere").score("q", ["a"], _settings())
    assert stub.auth == [None, "Bearer local-secret"]
    assert RemoteScorer("https://api.cohere.com")._headers["Authorization"] == "Bearer cohere-secret"
    assert RemoteScorer("https://api.jina.ai", api="jina")._headers["Authorization"] == "Bearer jina-secret"
    assert RemoteScorer("https://api.cohere.com").model == "rerank-v3.5"


def test_endpoints_and_options() -> None:
    assert endpoint("http://h:8080", APIS["cohere"]) == "http://h:8080/v1/rerank"
    assert endpoint("http://h:8000/v1", APIS["jina"]) == "http://h:8000/v1/rerank"
    assert endpoint("https://api.jina.ai/v1/rerank", APIS["jina"]) == "https://api.jina.ai/v1/rerank"
    assert endpoint("http://h/", APIS["cohere-v2"]) == "http://h/v2/rerank"
    assert endpoint("http://h/prefix", APIS["tei"]) == "http://h/prefix/rerank"
    assert math.isfinite(logit(1.0)) and math.isfinite(logit(0.0))
    from crossrank.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError):
        Reranker("http://h", api="grpc")
    with pytest.raises(InvalidArgumentError):
        RemoteScorer("http://h", timeout=0)
    with pytest.raises(InvalidArgumentError):
        RemoteScorer("ftp://h")
    sc = RemoteScorer("http://h:1", api="tei", model="m")
    assert sc.identity == "remote:tei:http://h:1/rerank:m"
    assert sc.score("q", [], _settings()).raw.shape == (0,)
    assert isinstance(np.asarray(sc.score("q", [], _settings()).raw), np.ndarray)


def test_remote_with_score_cache(url: str) -> None:
    rr = Reranker(url, remote_options={"api_key": KEY}, cache_size=100)
    first = rr.rerank(QUERY, DOCS[:3])
    second = rr.rerank(QUERY, DOCS[:3])
    assert second.stats.cache_hits == 3 and first.indices == second.indices
