"""crossrank serve answers as the real APIs do (issue #25, part 3), against a real server on loopback.

- ``model`` is the served name (the folder name), and no response, error or ``/health`` body shows
  the model's filesystem path;
- token usage is what was scored, checked against Hugging Face ``transformers``' own pair encoding
  (``tokenizer(query, doc, truncation="only_second", max_length=...)``), in each API's place: Cohere
  ``meta.tokens`` (read by the cohere SDK), Jina/vLLM ``usage``, Infinity ``usage`` (infinity-client),
  TEI's ``x-compute-tokens`` header;
- ``X-Request-ID`` round-trips (generated when absent, on errors too) and every request gets one
  access log line, JSON lines from ``crossrank serve --log-format json``;
- request fields are honoured (the scores equal ``transformers``' scores of the input the field asks
  for: a document cut by ``max_tokens_per_doc``, TEI's left/right truncation, the ``rank_fields``
  text, Qwen3-Reranker's instruction in its authors' prompt) or refused in the API's error shape.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from crossrank import Reranker  # noqa: E402
from crossrank.server import ServerSettings, create_app  # noqa: E402
from crossrank.server.access import ACCESS_LOGGER, JsonFormatter  # noqa: E402
from crossrank.server.testing import serve_in_thread  # noqa: E402

KEY = "fidelity-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY = "does aspirin lower heart risk"
DOCS = [
    "aspirin lowers the risk of heart attacks in some adults",
    "the cancer study tested a new drug dose",
    "python is a language for code",
]
# Longer than the tiny model's 128 tokens, with different words at its start and its end.
LONG = "aspirin heart risk " * 50 + "python code program language " * 10
OPTS = {"max_retries": 0}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------------------------- references
class HF:
    """The tiny model scored straight with ``transformers``: its tokenizer builds and truncates every pair."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.left = AutoTokenizer.from_pretrained(str(path), truncation_side="left")
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        self.max_length = 128

    def encode(self, query: str, doc: str, *, side: str = "right", doc_tokens: int | None = None) -> Any:
        tok = self.left if side == "left" else self.tok
        length = self.max_length
        if doc_tokens is not None:  # room for the query, the special tokens and doc_tokens of the document
            q = len(tok(query, add_special_tokens=False)["input_ids"])
            length = min(length, q + doc_tokens + tok.num_special_tokens_to_add(pair=True))
        return tok(query, doc, truncation="only_second", max_length=length, return_tensors="pt")

    def raw(self, query: str, doc: str, **kw: Any) -> float:
        import torch

        with torch.no_grad():
            return float(self.model(**self.encode(query, doc, **kw)).logits[0, 0])

    def tokens(self, query: str, docs: list[str], **kw: Any) -> int:
        return sum(int(self.encode(query, d, **kw)["input_ids"].shape[1]) for d in docs)


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> HF:
    return HF(tiny_model)


@pytest.fixture(scope="module")
def served(tiny_model: Path) -> Any:
    """The tiny model served with the settings ``crossrank serve --model <its folder>`` builds."""
    from crossrank.cli import build_parser
    from crossrank.cli.serve import settings_from

    args = build_parser().parse_args(["serve", "--model", str(tiny_model), "--api-key", KEY])
    settings = settings_from(args, str(tiny_model))
    rr = Reranker(tiny_model, backend="torch")
    with serve_in_thread(create_app(rr, settings)) as url:
        yield url, settings


@pytest.fixture(scope="module")
def client(served: Any) -> Any:
    with httpx.Client(base_url=served[0], headers=AUTH, timeout=30) as c:
        yield c


# ---------------------------------------------------------------------------------------------- served name
def test_the_served_name_is_the_folder_name_and_no_answer_shows_the_path(
    served: Any, client: Any, tiny_model: Path
) -> None:
    url, settings = served
    name = tiny_model.name
    assert settings.served_model_names == (name,)
    bodies = []
    for r in (
        client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}),
        client.post("/rerank", json={"query": QUERY, "documents": DOCS}),
        client.get("/info"),
    ):
        assert r.status_code == 200 and r.json()["model"] == name, r.text
        bodies.append(r.text)
    errors = [
        client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "model": "other"}),
        client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "x"}),
        client.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": False, "raw_scores": True}),
        client.post("/rerank", json={"query": QUERY, "texts": [LONG], "truncate": False}),
        httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": DOCS}),
    ]
    assert [r.status_code for r in errors] == [404, 400, 200, 413, 401]
    bodies += [r.text for r in errors] + [client.get("/openapi.json").text, client.get("/metrics").text]
    for text in bodies:
        assert str(tiny_model) not in text and str(tiny_model.resolve()) not in text
        assert str(tiny_model.parent) not in text
    # Naming the model by its path is refused exactly like any other unknown name: nothing to probe paths with.
    for path, body in (("/v2/rerank", {"documents": DOCS}), ("/rerank", {"texts": DOCS})):
        by_path = client.post(path, json={"query": QUERY, **body, "model": str(tiny_model)})
        by_other = client.post(path, json={"query": QUERY, **body, "model": "/srv/models/other"})
        assert by_path.status_code == by_other.status_code == 404
        assert by_path.text.replace(str(tiny_model), "M") == by_other.text.replace("/srv/models/other", "M")


def test_a_load_failure_is_reported_without_the_path(tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "private-dir" / "broken-reranker"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    rr = Reranker(broken, backend="torch")
    settings = ServerSettings(served_model_names=("broken-reranker",))
    with serve_in_thread(create_app(rr, settings), wait_ready=None) as url:
        deadline = time.monotonic() + 60
        while (h := httpx.get(url + "/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert h.status_code == 503 and h.json()["status"] == "failed"
    assert "broken-reranker" in h.json()["error"]  # the error still says what failed
    assert r.status_code == 503 and "failed to load" in r.json()["message"]
    for text in (h.text, r.text):
        assert str(tmp_path) not in text and "private-dir" not in text


# ---------------------------------------------------------------------------------------------- token usage
def test_usage_is_the_tokens_scored_in_every_api(served: Any, client: Any, hf: HF) -> None:
    cohere = pytest.importorskip("cohere")
    pytest.importorskip("infinity_client")
    from infinity_client import AuthenticatedClient
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput, ReRankResult

    url = served[0]
    docs = [*DOCS, LONG]  # the long one counts its truncated length, 128
    want = hf.tokens(QUERY, docs)
    assert want == sum(len(hf.tok(QUERY, d)["input_ids"]) for d in DOCS) + 128

    v1 = cohere.Client(api_key=KEY, base_url=url).rerank(query=QUERY, documents=docs, request_options=OPTS)
    assert v1.meta is not None and v1.meta.tokens is not None and v1.meta.tokens.input_tokens == want
    assert v1.meta.billed_units is not None and v1.meta.billed_units.search_units == 1
    v2 = cohere.ClientV2(api_key=KEY, base_url=url).rerank(
        model=served[1].model_name, query=QUERY, documents=docs, request_options=OPTS
    )
    assert v2.meta is not None and v2.meta.tokens is not None and v2.meta.tokens.input_tokens == want

    jina = client.post("/v1/rerank", json={"query": QUERY, "documents": docs}).json()
    assert jina["usage"] == {"total_tokens": want}

    inf = rerank.sync(
        client=AuthenticatedClient(base_url=url, token=KEY), body=RerankInput(query=QUERY, documents=docs)
    )
    assert isinstance(inf, ReRankResult)
    assert inf.usage.prompt_tokens == want and inf.usage.total_tokens == want

    tei = client.post("/rerank", json={"query": QUERY, "texts": docs})
    assert tei.headers["x-compute-tokens"] == str(want)
    assert tei.headers["x-compute-characters"] == str(len(QUERY) * len(docs) + sum(len(d) for d in docs))

    # 252 documents: three Cohere search units (one query with up to 100 documents each)
    many = client.post("/v2/rerank", json={"query": QUERY, "documents": [f"{d} {i}" for i in range(84) for d in DOCS]})
    assert many.json()["meta"]["billed_units"]["search_units"] == 3


# ---------------------------------------------------------------------------------------------- request ids and the log
def _access(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of an access log record (what the JSON formatter writes)."""
    fields: dict[str, Any] = record.__dict__["crossrank_access"]
    return fields


def test_request_ids_round_trip_and_each_request_is_one_access_line(
    served: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = served[0]
    logging.getLogger(ACCESS_LOGGER).addHandler(caplog.handler)  # whatever configured the loggers before
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        r = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}, headers={"X-Request-ID": "trace-42/a"})
        assert r.headers["x-request-id"] == "trace-42/a" and r.json()["id"] == "trace-42/a"
        fresh = [client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS}) for _ in range(2)]
        ids = [f.headers["x-request-id"] for f in fresh]
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and ids[0] != ids[1]
        assert [f.json()["id"] for f in fresh] == ids
        # unusable ids (spaces, over 200 characters) are replaced, never echoed into headers or logs
        for bad in ("two words", "x" * 201):
            assert client.get("/info", headers={"X-Request-ID": bad}).headers["x-request-id"] != bad
        # errors carry the id too: each API's 4xx, the guard's 401 and 413, and a route's 404
        errors = [
            client.post("/rerank", json={"query": QUERY, "texts": []}, headers={"X-Request-ID": "e1"}),
            client.post("/v1/rerank", content=b"{", headers={"X-Request-ID": "e2", "Content-Type": "application/json"}),
            httpx.post(url + "/v2/rerank", json={"query": QUERY, "documents": DOCS}, headers={"X-Request-ID": "e3"}),
            client.post("/v1/rerank", content=b"x" * (5 << 20), headers={"X-Request-ID": "e4"}),
            client.get("/nowhere", headers={"X-Request-ID": "e5"}),
        ]
        assert [e.status_code for e in errors] == [400, 400, 401, 413, 404]
        assert [e.headers["x-request-id"] for e in errors] == ["e1", "e2", "e3", "e4", "e5"]
    logging.getLogger(ACCESS_LOGGER).removeHandler(caplog.handler)
    records = {_access(rec)["request_id"]: rec for rec in caplog.records if rec.name == ACCESS_LOGGER}
    line = _access(records["trace-42/a"])
    assert line["method"] == "POST" and line["route"] == "/v1/rerank" and line["status"] == 200
    assert line["documents"] == len(DOCS) and line["tokens"] == r.json()["usage"]["total_tokens"]
    assert line["latency_ms"] > 0 and line["client"].startswith("127.0.0.1:")
    assert records["trace-42/a"].levelno == logging.INFO
    assert "request_id=trace-42/a" in records["trace-42/a"].getMessage()
    for i, e in zip(("e1", "e2", "e3", "e4", "e5"), errors):
        assert _access(records[i])["status"] == e.status_code
    # the JSON formatter writes the same fields as one JSON object
    parsed = json.loads(JsonFormatter().format(records["trace-42/a"]))
    assert parsed["request_id"] == "trace-42/a" and parsed["status"] == 200 and parsed["level"] == "info"


def test_a_500_carries_the_request_id(tiny: Reranker) -> None:
    from fastapi.testclient import TestClient

    async def broken(query: str, texts: list[str], top_n: int | None, **options: Any) -> Any:
        raise RuntimeError("boom")

    with TestClient(
        create_app(tiny, ServerSettings(), rank=broken, load_on_startup=False), raise_server_exceptions=False
    ) as c:
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"X-Request-ID": "crash-1"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "crash-1" and "boom" in r.json()["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_cli_serve_writes_json_lines(tiny_model: Path) -> None:
    port = _free_port()
    argv = [sys.executable, "-m", "crossrank", "serve", "--model", str(tiny_model), "--backend", "torch"]
    argv += ["--port", str(port), "--log-format", "json"]
    env = {**os.environ, "CROSSRANK_API_KEY": ""}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "crossrank serve exited"
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "crossrank serve did not become healthy"
            time.sleep(0.2)
        r = httpx.post(base + "/v1/rerank", json={"query": QUERY, "documents": DOCS}, headers={"X-Request-ID": "cli-7"})
        assert r.status_code == 200 and r.json()["model"] == tiny_model.name
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is a JSON object
    access = [x for x in lines if x.get("request_id") == "cli-7"]
    assert len(access) == 1, err[-2000:]
    (a,) = access
    assert a["logger"] == ACCESS_LOGGER and a["level"] == "info"
    assert (a["method"], a["route"], a["status"], a["documents"]) == ("POST", "/v1/rerank", 200, len(DOCS))
    assert a["tokens"] == r.json()["usage"]["total_tokens"] > 0 and a["latency_ms"] > 0


# ---------------------------------------------------------------------------------------------- request fields
def test_cohere_v2_max_tokens_per_doc_cuts_each_document(served: Any, hf: HF) -> None:
    cohere = pytest.importorskip("cohere")
    co = cohere.ClientV2(api_key=KEY, base_url=served[0])
    docs = [DOCS[0], LONG]
    res = co.rerank(model=served[1].model_name, query=QUERY, documents=docs, max_tokens_per_doc=4, request_options=OPTS)
    got = {r.index: r.relevance_score for r in res.results}
    for i, d in enumerate(docs):
        assert got[i] == pytest.approx(_sigmoid(hf.raw(QUERY, d, doc_tokens=4)), abs=1e-5)
        assert got[i] != pytest.approx(_sigmoid(hf.raw(QUERY, d)), abs=1e-4)  # the cut changed the score
    assert res.meta is not None and res.meta.tokens is not None
    assert res.meta.tokens.input_tokens == hf.tokens(QUERY, docs, doc_tokens=4)
    assert res.meta.warnings and "max_tokens_per_doc=4" in res.meta.warnings[0]
    from cohere.errors import UnprocessableEntityError

    with pytest.raises(UnprocessableEntityError):
        co.rerank(model=served[1].model_name, query=QUERY, documents=docs, max_tokens_per_doc=0, request_options=OPTS)


def test_tei_truncation_direction_and_truncate(client: Any, hf: HF) -> None:
    texts = [LONG, DOCS[0]]
    scores = {}
    for direction in ("Right", "Left"):
        r = client.post(
            "/rerank",
            json={"query": QUERY, "texts": texts, "raw_scores": True, "truncation_direction": direction},
        )
        assert r.status_code == 200, r.text
        scores[direction] = {x["index"]: x["score"] for x in r.json()}
        for i, t in enumerate(texts):
            assert scores[direction][i] == pytest.approx(hf.raw(QUERY, t, side=direction.lower()), abs=1e-4)
    assert scores["Left"][0] != pytest.approx(scores["Right"][0], abs=1e-3)  # a different end was kept
    assert scores["Left"][1] == pytest.approx(scores["Right"][1], abs=1e-6)  # a text that fits is not cut

    bad = client.post("/rerank", json={"query": QUERY, "texts": texts, "truncation_direction": "middle"})
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation"
    # truncate=false: TEI's 413 for a text that does not fit, a normal answer for texts that do
    long = client.post("/rerank", json={"query": QUERY, "texts": texts, "truncate": False})
    assert long.status_code == 413 and long.json()["error_type"] == "Validation" and "tokens" in long.json()["error"]
    short = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": False, "return_text": True})
    assert short.status_code == 200 and all(x["text"] == DOCS[x["index"]] for x in short.json())
    inf = client.post("/rerank", json={"query": QUERY, "documents": texts, "truncate": False})
    assert inf.status_code == 413


def test_cohere_v1_rank_fields_pick_the_fields(served: Any, hf: HF) -> None:
    cohere = pytest.importorskip("cohere")
    from cohere.errors import UnprocessableEntityError

    co = cohere.Client(api_key=KEY, base_url=served[0])
    docs = [{"title": "aspirin and the heart", "text": "python code program", "year": "2020"}]

    def score(fields: list[str] | None) -> float:
        res = co.rerank(query=QUERY, documents=docs, rank_fields=fields, return_documents=True, request_options=OPTS)
        (r,) = res.results
        assert r.document is not None and r.document.text == docs[0]["text"]  # the document comes back as sent
        return float(r.relevance_score)

    assert score(None) == pytest.approx(_sigmoid(hf.raw(QUERY, "python code program")), abs=1e-5)
    assert score(["title"]) == pytest.approx(_sigmoid(hf.raw(QUERY, "title: aspirin and the heart")), abs=1e-5)
    both = "year: 2020\ntitle: aspirin and the heart"
    assert score(["year", "missing", "title"]) == pytest.approx(_sigmoid(hf.raw(QUERY, both)), abs=1e-5)
    assert score(["title"]) != pytest.approx(score(["text"]), abs=1e-4)
    with pytest.raises(UnprocessableEntityError) as err:
        co.rerank(query=QUERY, documents=docs, rank_fields=["author"], request_options=OPTS)
    assert "rank_fields" in str(err.value.body)


def test_max_chunks_per_doc_caps_the_windows(tiny_model: Path, hf: HF) -> None:
    from fastapi.testclient import TestClient

    rr = Reranker(tiny_model, backend="torch", long_documents="windows")
    with TestClient(create_app(rr, ServerSettings(), load_on_startup=False)) as c:
        one = c.post("/v1/rerank", json={"query": QUERY, "documents": [LONG], "max_chunks_per_doc": 1}).json()
        every = c.post("/v1/rerank", json={"query": QUERY, "documents": [LONG]}).json()
        bad = c.post("/v1/rerank", json={"query": QUERY, "documents": [LONG], "max_chunks_per_doc": 0})
    # one chunk: the document's first window, which is what truncation scores
    assert one["results"][0]["relevance_score"] == pytest.approx(_sigmoid(hf.raw(QUERY, LONG)), abs=1e-5)
    assert one["meta"]["tokens"]["input_tokens"] == 128
    assert every["meta"]["tokens"]["input_tokens"] > 128  # every window was scored
    assert bad.status_code == 422 and "message" in bad.json()


def test_instruction_is_refused_in_each_api_shape_for_a_cross_encoder(client: Any) -> None:
    v1 = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "find abstracts"})
    v2 = client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "find abstracts"})
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "instruction": "find abstracts"})
    inf = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "find abstracts"})
    for r in (v1, v2):
        assert r.status_code == 400 and "instruction slot" in r.json()["message"]
    for r in (tei, inf):
        assert r.status_code == 400 and r.json()["error_type"] == "Validation" and "instruction" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/rerank", "top_n", "2"),
        ("/v1/rerank", "max_chunks_per_doc", True),
        ("/v1/rerank", "return_documents", "yes"),
        ("/v2/rerank", "max_tokens_per_doc", 1.5),
        ("/rerank", "raw_scores", 1),
        ("/rerank", "top_n", True),
    ],
)
def test_numbers_and_booleans_are_not_coerced(client: Any, path: str, field: str, value: Any) -> None:
    """The OpenAPI schema says integer / boolean, and the real APIs' typed parsers (TEI's serde, the
    SDKs' models) refuse a string or a bool there: never read ``true`` as 1 or ``"2"`` as 2."""
    body: dict[str, Any] = {"query": QUERY, ("texts" if path == "/rerank" else "documents"): DOCS, field: value}
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert field in (r.json().get("message") or r.json().get("error"))


@pytest.fixture(scope="module")
def causal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from crossrank.testing_causal import make_tiny_causal_reranker

    root = tmp_path_factory.mktemp("causal-served")
    return {fam: make_tiny_causal_reranker(root / fam, fam) for fam in ("qwen3", "gemma")}


def test_instruction_is_applied_for_qwen3_reranker_as_its_authors_build_the_prompt(causal: dict[str, Path]) -> None:
    from causal_reference import qwen3_input_ids, qwen3_scores
    from fastapi.testclient import TestClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = causal["qwen3"]
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    own = "Given a medical claim, retrieve abstracts that support it"

    def reference(instruction: str | None) -> list[float]:
        rows = qwen3_input_ids(tok, [(QUERY, d) for d in DOCS], instruction)
        return [math.exp(yes) for _, yes in qwen3_scores(model, tok, rows)]  # P(yes), the authors' score

    app = create_app(Reranker(path), ServerSettings(served_model_names=("qwen3",)), load_on_startup=False)
    with TestClient(app) as c:
        results = {}
        for instruction in (None, own):
            body: dict[str, Any] = {"query": QUERY, "documents": DOCS}
            if instruction is not None:
                body["instruction"] = instruction
            r = c.post("/v2/rerank", json=body)
            assert r.status_code == 200, r.text
            results[instruction] = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
        tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "instruction": own}).json()
    for instruction, got in results.items():
        assert [got[i] for i in range(len(DOCS))] == pytest.approx(reference(instruction), abs=1e-4)
    assert results[own] != pytest.approx(results[None], abs=1e-4)
    assert {x["index"]: x["score"] for x in tei} == pytest.approx(results[own], abs=1e-6)


def test_instruction_is_refused_for_a_family_without_a_slot(causal: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    app = create_app(Reranker(causal["gemma"]), ServerSettings(), load_on_startup=False)
    with TestClient(app) as c:
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "x"})
        ok = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 400 and "instruction" in r.json()["message"]
    assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] > 0


# ---------------------------------------------------------------------------------------------- the Reranker underneath
def test_per_call_options_reach_the_cache_key_and_are_never_dropped(tiny_model: Path, hf: HF) -> None:
    import numpy as np

    from crossrank import InvalidArgumentError, Scored, ScorerInfo, ScoreSettings

    rr = Reranker(tiny_model, backend="torch", cache_size=16)
    full = rr.score(QUERY, [LONG])[0]  # cached now: the calls below must not be answered from it
    left = rr.rerank(QUERY, [LONG], truncation_side="left")
    short = rr.rerank(QUERY, [LONG], max_document_tokens=4)
    assert full == pytest.approx(hf.raw(QUERY, LONG), abs=1e-4)
    assert left[0].raw_score == pytest.approx(hf.raw(QUERY, LONG, side="left"), abs=1e-4)
    assert short[0].raw_score == pytest.approx(hf.raw(QUERY, LONG, doc_tokens=4), abs=1e-4)
    assert short.stats.tokens == hf.tokens(QUERY, [LONG], doc_tokens=4) and short[0].truncated

    class Fixed:
        identity = "fixed"

        def describe(self) -> ScorerInfo:
            return ScorerInfo(kind="fake", model="fixed", backend="none", max_length=None)

        def score(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
            n = len(texts)
            return Scored(raw=np.zeros(n), windows=[1] * n, truncated=[False] * n)

        async def ascore(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
            return self.score(query, texts, settings)

    other = Reranker(Fixed())
    assert len(other.rerank(QUERY, DOCS)) == len(DOCS)
    for option in ({"instruction": "x"}, {"max_document_tokens": 8}, {"truncation_side": "left"}):
        with pytest.raises(InvalidArgumentError, match="cannot be applied"):
            other.rerank(QUERY, DOCS, **option)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        rr.rerank(QUERY, DOCS, truncation_side="middle")
    with pytest.raises(InvalidArgumentError):
        rr.rerank(QUERY, DOCS, max_document_tokens=0)
