"""crossrank serve over real HTTP: every route's shape, scores, limits, auth, errors, health, metrics, shutdown."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from crossrank import Reranker, Scored, ScorerInfo, ScoreSettings  # noqa: E402
from crossrank.server import ServerSettings, create_app  # noqa: E402
from crossrank.server.testing import serve_in_thread  # noqa: E402

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = [
    "aspirin lowers the risk of heart attacks in some adults",
    "the eiffel tower is in paris",
    "statins reduce cholesterol",
    "aspirin lowers the risk of heart attacks in some adults",
]


@pytest.fixture(scope="module")
def base(tiny: Reranker) -> Any:
    settings = ServerSettings(served_model_names=("tiny", "tiny-alias"), api_key=KEY)
    with serve_in_thread(create_app(tiny, settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> Any:
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as c:
        yield c


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _alive(client: Any) -> None:
    r = client.post("/v1/rerank", json={"query": "aspirin", "documents": ["aspirin helps"]})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------------- shapes
def test_v1_cohere_shape_matches_local_reranker(client: Any, tiny: Reranker) -> None:
    r = client.post(
        "/v1/rerank",
        json={
            "model": "tiny",
            "query": "does aspirin prevent heart attacks?",
            "documents": [DOCS[0], {"text": DOCS[1], "id": "b"}, DOCS[2], DOCS[3]],
            "top_n": None,
            "return_documents": False,
            "rank_fields": None,
            "max_chunks_per_doc": None,
            "some_future_field": {"x": 1},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"id", "results", "meta", "usage"}
    local = tiny.rerank("does aspirin prevent heart attacks?", DOCS)
    assert [x["index"] for x in body["results"]] == local.indices
    for got, want in zip(body["results"], local):
        assert "document" not in got  # left out, not null
        assert 0.0 <= got["relevance_score"] <= 1.0
        assert got["relevance_score"] == pytest.approx(_sigmoid(want.raw_score), abs=1e-6)


def test_v1_return_documents_top_n_and_jina_objects(client: Any) -> None:
    r = client.post(
        "/v1/rerank",
        json={
            "query": "aspirin",
            "documents": [{"text": d, "tag": i} for i, d in enumerate(DOCS)],
            "top_n": 2,
            "return_documents": True,
        },
    )
    body = r.json()
    assert r.status_code == 200 and len(body["results"]) == 2
    for item in body["results"]:
        assert item["document"]["text"] == DOCS[item["index"]]
        assert item["document"]["tag"] == item["index"]


def test_v1_rank_fields(client: Any) -> None:
    r = client.post(
        "/v1/rerank",
        json={
            "query": "aspirin",
            "documents": [{"title": "Aspirin", "body": "heart"}, {"title": "Paris"}],
            "rank_fields": ["title", "body"],
        },
    )
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_v2_shape(client: Any) -> None:
    r = client.post(
        "/v2/rerank",
        json={"model": "tiny-alias", "query": "aspirin", "documents": DOCS, "top_n": 3, "max_tokens_per_doc": 512},
    )
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"id", "results", "meta"}
    assert len(body["results"]) == 3 and set(body["results"][0]) == {"index", "relevance_score"}
    assert "warnings" not in body["meta"]  # max_tokens_per_doc is applied, and no document reached it


def test_tei_shape_raw_and_sigmoid(client: Any, tiny: Reranker) -> None:
    texts = DOCS[:3]
    raw = client.post(
        "/rerank",
        json={
            "query": "aspirin",
            "texts": texts,
            "raw_scores": True,
            "return_text": True,
            "truncate": True,
            "truncation_direction": "Right",
        },
    ).json()
    assert isinstance(raw, list) and len(raw) == 3
    local = tiny.rerank("aspirin", texts)
    assert [x["index"] for x in raw] == local.indices
    assert [x["score"] for x in raw] == pytest.approx([r.raw_score for r in local], abs=1e-5)
    assert all(x["text"] == texts[x["index"]] for x in raw)
    prob = client.post("/rerank", json={"query": "aspirin", "texts": texts}).json()
    assert all("text" not in x for x in prob)
    assert [x["score"] for x in prob] == pytest.approx([_sigmoid(r.raw_score) for r in local], abs=1e-6)
    scores = [x["score"] for x in prob]
    assert scores == sorted(scores, reverse=True)


def test_infinity_shape(client: Any) -> None:
    r = client.post(
        "/rerank",
        json={
            "query": "aspirin",
            "documents": DOCS,
            "return_documents": True,
            "raw_scores": False,
            "model": "default/not-specified",
            "top_n": 2,
        },
    )
    body = r.json()
    assert r.status_code == 200
    assert body["object"] == "rerank" and body["model"] == "tiny"
    assert set(body) >= {"results", "usage", "id", "created"}
    assert len(body["results"]) == 2
    assert all(item["document"] == DOCS[item["index"]] for item in body["results"])


def test_long_documents_are_truncated_and_reported(client: Any) -> None:
    long_doc = "aspirin " * 2000
    r = client.post("/v1/rerank", json={"query": "aspirin", "documents": [long_doc, "short"]})
    assert r.status_code == 200
    assert any("truncated" in w for w in r.json()["meta"]["warnings"])


def test_windows_mode_scores_long_documents(tiny_model: Path) -> None:
    from fastapi.testclient import TestClient

    rr = Reranker(tiny_model, backend="torch", long_documents="windows", max_length=64)
    with TestClient(create_app(rr, ServerSettings(), load_on_startup=False)) as c:
        r = c.post("/v1/rerank", json={"query": "aspirin", "documents": ["aspirin " * 300, "short"]})
    assert r.status_code == 200
    assert any("windows" in w for w in r.json()["meta"]["warnings"])


# ---------------------------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/rerank", b"{not json", 400),
        ("/v2/rerank", b"[1, 2", 400),
        ("/v1/rerank", json.dumps({"query": 5, "documents": ["a"]}).encode(), 422),
        ("/v1/rerank", json.dumps({"query": "q", "documents": "a"}).encode(), 422),
        ("/v1/rerank", json.dumps({"query": "q", "documents": [None]}).encode(), 422),
        ("/v1/rerank", json.dumps({"query": "q", "documents": [{"no_text": 1}]}).encode(), 422),
        ("/v1/rerank", json.dumps({"query": "q", "documents": ["a"], "top_n": 0}).encode(), 422),
        ("/v1/rerank", json.dumps({"documents": ["a"]}).encode(), 422),
        ("/v1/rerank", json.dumps({"query": "   ", "documents": ["a"]}).encode(), 400),
        ("/v1/rerank", json.dumps({"query": "q", "documents": []}).encode(), 400),
        ("/v1/rerank", json.dumps({"query": "q", "documents": ["a"], "model": "../../etc/passwd"}).encode(), 404),
        ("/v2/rerank", json.dumps({"query": "q", "documents": ["a"], "model": "/tmp/evil-model"}).encode(), 404),
        ("/v1/rerank", json.dumps({"query": "q", "documents": ["d"] * 10_001}).encode(), 413),
    ],
)
def test_bad_requests_cohere_shape(client: Any, path: str, body: bytes, status: int) -> None:
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert isinstance(r.json()["message"], str) and r.json()["message"]
    _alive(client)


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        (b"{oops", 400, "Validation"),
        (json.dumps({"query": "q", "texts": [1, 2]}).encode(), 422, "Validation"),
        (json.dumps({"query": "q"}).encode(), 422, "Validation"),
        (json.dumps({"query": "q", "texts": []}).encode(), 400, "Empty"),
        (json.dumps({"query": "q", "texts": ["t"] * 10_001}).encode(), 422, "Validation"),
        (json.dumps({"query": "q", "texts": ["t"], "model": "/root/model"}).encode(), 404, "Validation"),
    ],
)
def test_bad_requests_tei_shape(client: Any, body: bytes, status: int, error_type: str) -> None:
    r = client.post("/rerank", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error_type"] == error_type and r.json()["error"]
    _alive(client)


def test_five_megabyte_body_is_413(client: Any) -> None:
    big = json.dumps({"query": "q", "documents": ["x" * 1000] * 5000}).encode()
    assert len(big) > 5_000_000
    r = client.post("/v1/rerank", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["message"]

    def chunks() -> Any:  # chunked upload: no Content-Length, the guard counts bytes
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    r = client.post("/rerank", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation"
    _alive(client)


def test_api_key(base: str) -> None:
    body = {"query": "q", "documents": ["a"]}
    assert httpx.post(base + "/v1/rerank", json=body).status_code == 401
    r = httpx.post(base + "/v1/rerank", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "API key" in r.json()["message"]
    r = httpx.post(base + "/rerank", json={"query": "q", "texts": ["a"]}, headers={"Authorization": "Basic x"})
    assert r.status_code == 401 and r.json()["error_type"] == "Unauthorized"
    assert httpx.get(base + "/info").status_code == 401
    assert httpx.get(base + "/metrics").status_code == 401
    assert httpx.get(base + "/health").status_code == 200  # stays open
    assert httpx.post(base + "/v1/rerank", json=body, headers=AUTH).status_code == 200


def test_unknown_route_and_method(client: Any) -> None:
    assert client.get("/nope").status_code == 404
    r = client.get("/v1/rerank")
    assert r.status_code == 405 and "message" in r.json()


# ---------------------------------------------------------------------------------------------- operations
def test_info_and_openapi(client: Any) -> None:
    info = client.get("/info").json()
    assert info["model"] == "tiny" and info["kind"] == "cross-encoder"
    assert info["max_length"] == 128 and info["limits"]["max_documents"] == 10_000
    assert "probability" in info["score_scale"] and info["version"]
    spec = client.get("/openapi.json").json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/health", "/info", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_metrics(client: Any) -> None:
    client.post("/v1/rerank", json={"query": "aspirin", "documents": DOCS})
    text = client.get("/metrics").text
    assert 'crossrank_http_requests_total{route="/v1/rerank",status="200"}' in text
    assert "crossrank_http_request_duration_seconds_bucket" in text
    for name in (
        "crossrank_pairs_scored_total",
        "crossrank_request_documents_bucket",
        "crossrank_queue_depth",
        "crossrank_inflight_requests",
        "crossrank_truncated_documents_total",
        "crossrank_forward_groups_total",
    ):
        assert name in text, name


def test_concurrent_requests_share_forward_passes(base: str, tiny: Reranker) -> None:
    async def go() -> list[Any]:
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as c:
            return await asyncio.gather(
                *(c.post("/v1/rerank", json={"query": f"query {i}", "documents": DOCS}) for i in range(16))
            )

    batcher = tiny.local.engine.batcher(max_wait_ms=tiny.local.max_wait_ms, max_pairs=tiny.local.max_batch_pairs)
    groups, served = batcher.batches, batcher.requests
    responses = asyncio.run(go())
    assert all(r.status_code == 200 for r in responses)
    assert batcher.requests - served >= 16
    assert batcher.batches - groups < batcher.requests - served  # some requests shared a forward pass


# ------------------------------------------------------------------------ limits, with a scorer we control
class SlowScorer:
    """Scores texts by position after a delay; ``gate`` holds the first (warm-up) call until set."""

    identity = "slow"

    def __init__(self, delay: float, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate

    def describe(self) -> ScorerInfo:
        return ScorerInfo(kind="fake", model="slow", backend="none", max_length=None)

    def _scored(self, texts: Any) -> Scored:
        n = len(texts)
        return Scored(raw=np.arange(n, dtype=np.float64), windows=[1] * n, truncated=[False] * n)

    def score(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        if self.gate is not None:
            self.gate.wait(30)
        return self._scored(texts)

    async def ascore(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        await asyncio.sleep(self.delay)
        return self._scored(texts)


def test_concurrency_limit_429_timeout_504_and_graceful_shutdown() -> None:
    settings = ServerSettings(max_concurrent=2, request_timeout_s=2.0, retry_after_s=3)
    body = {"query": "q", "documents": ["a", "b"]}
    with serve_in_thread(create_app(Reranker(SlowScorer(0.6)), settings)) as url:

        async def burst() -> list[Any]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                return await asyncio.gather(*(c.post("/v1/rerank", json=body) for _ in range(6)))

        codes = [r.status_code for r in asyncio.run(burst())]
        assert codes.count(200) >= 2 and 429 in codes and set(codes) <= {200, 429}
        r429 = next(r for r in asyncio.run(burst()) if r.status_code == 429)
        assert r429.headers["Retry-After"] == "3" and "busy" in r429.json()["message"]

        # graceful shutdown: a request in flight when shutdown starts still gets its answer
        results: list[int] = []
        t = threading.Thread(target=lambda: results.append(httpx.post(url + "/v1/rerank", json=body).status_code))
        t.start()
        time.sleep(0.2)
    t.join(10)
    assert results == [200]

    slow = ServerSettings(request_timeout_s=0.2)
    with serve_in_thread(create_app(Reranker(SlowScorer(2.0)), slow)) as url:
        r = httpx.post(url + "/v1/rerank", json=body, timeout=10)
        assert r.status_code == 504 and "timeout" in r.json()["message"]
        r = httpx.post(url + "/rerank", json={"query": "q", "texts": ["a"]}, timeout=10)
        assert r.status_code == 504 and r.json()["error_type"] == "Backend"


def test_health_is_503_until_the_model_is_loaded() -> None:
    gate = threading.Event()
    with serve_in_thread(create_app(Reranker(SlowScorer(0.0, gate)), ServerSettings()), wait_ready=None) as url:
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(url + "/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert r.status_code == 503 and "Retry-After" in r.headers
        gate.set()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.post(url + "/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200


def test_ignore_model_field_and_settings_checks(tiny: Reranker) -> None:
    from fastapi.testclient import TestClient

    from crossrank.errors import InvalidArgumentError
    from crossrank.server import model_names

    with TestClient(create_app(tiny, ServerSettings(ignore_model_field=True), load_on_startup=False)) as c:
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["a"], "model": "rerank-english-v3.0"})
        assert r.status_code == 200
    assert model_names("../models/my-model/") == ("my-model",)  # a path is never a served name
    assert model_names("org/name", ["alias"]) == ("alias", "org/name", "name")
    with pytest.raises(InvalidArgumentError):
        ServerSettings(max_documents=0)
    with pytest.raises(InvalidArgumentError):
        ServerSettings(api_key=" ")


def test_cli_serve_parses_and_builds_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank.cli import build_parser
    from crossrank.cli.serve import reranker_options, settings_from

    monkeypatch.setenv("CROSSRANK_API_KEY", "from-env")
    args = build_parser().parse_args(
        ["serve", "--model", "some/dir/m", "--max-documents", "50", "--served-model-name", "rr", "--max-body-mb", "1"]
    )
    assert args.host == "127.0.0.1" and args.port == 8080
    s = settings_from(args, "some/dir/m")
    assert s.api_key == "from-env" and s.max_documents == 50 and s.max_body_bytes == 2**20
    assert s.served_model_names == ("rr", "some/dir/m", "m")  # "some/dir/m" does not exist here: a Hub id
    assert s.access_log and s.log_format == "text"
    assert reranker_options(args)["long_documents"] == "truncate"


def test_an_unexpected_error_is_a_json_500_and_the_app_keeps_serving(tiny: Reranker) -> None:
    from fastapi.testclient import TestClient

    calls = []

    async def flaky(query: str, texts: list[str], top_n: int | None) -> Any:
        calls.append(query)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return await tiny.arerank(query, texts, top_n=top_n)

    app = create_app(tiny, ServerSettings(), rank=flaky, load_on_startup=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/rerank", json={"query": "q", "texts": ["a"]})
        assert r.status_code == 500 and r.json()["error_type"] == "Backend" and "boom" in r.json()["error"]
        assert c.post("/rerank", json={"query": "q", "texts": ["a"]}).status_code == 200
