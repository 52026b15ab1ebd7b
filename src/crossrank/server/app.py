"""The HTTP app: Cohere v1/v2, Jina, vLLM, TEI and Infinity rerank routes over one shared ``Reranker``.

Every scoring route goes through ``Reranker.arerank``, so concurrent requests, whichever API they
speak, share forward passes through the micro-batcher. One pure-ASGI guard runs before any route:
API key, body size, concurrency (429 with ``Retry-After``) and the request metrics, so a refused
request costs no JSON parsing and no model time. Errors are JSON in the shape of the API the client
speaks (Cohere ``{"message"}``, TEI ``{"error", "error_type"}``), and nothing a request sends can
kill the worker or make the server load a model.

Scores: ``relevance_score`` is a probability in [0, 1], the sigmoid of the model's raw score (the
scale Cohere and Jina clients assume); TEI's ``raw_scores: true`` and Infinity's ``raw_scores``
give the raw score itself. Ranking is by the raw score, ties in input order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossrank.errors import CrossrankError, InvalidArgumentError, missing_extra
from crossrank.reranker import Reranker
from crossrank.results import RankedResults
from crossrank.scoring.local import LocalScorer
from crossrank.server.metrics import LiveStats, Metrics, route_label
from crossrank.server.settings import ServerSettings

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - the server extra brings it
    raise missing_extra("fastapi", "server") from exc

from crossrank.server.schemas import (
    CohereError,
    DocumentObject,
    Health,
    Info,
    RerankRequest,
    RerankV1Request,
    RerankV1Response,
    RerankV2Request,
    RerankV2Response,
    TEIError,
)

log = logging.getLogger("crossrank.server")

# (query, texts, top_n) -> ranked results; the default is ``reranker.arerank`` (Ray swaps in its batcher).
RankFn = Callable[[str, list[str], "int | None"], Awaitable[RankedResults]]

SCORING_PATHS = frozenset({"/v1/rerank", "/v2/rerank", "/rerank"})
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
TEI_PATHS = frozenset({"/rerank"})
_CLIP = 500.0  # sigmoid input clip: exp() overflows past ~709


class ApiError(Exception):
    """An error answered as JSON in the caller's API shape; ``error_type`` is TEI's name for it."""

    def __init__(self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or {}


def error_response(
    path: str, status: int, message: str, error_type: str, headers: Mapping[str, str] | None = None
) -> Any:
    """The error body the client of ``path`` expects: TEI's ``{"error", "error_type"}`` or Cohere's ``{"message"}``."""
    body: dict[str, Any] = {"error": message, "error_type": error_type} if path in TEI_PATHS else {"message": message}
    return JSONResponse(body, status_code=status, headers=headers)


def sigmoid(x: float) -> float:
    """The logistic function, safe for any float."""
    return 1.0 / (1.0 + math.exp(-max(-_CLIP, min(_CLIP, x))))


@dataclass
class ServerState:
    """What the routes share: the reranker, its settings, metrics, readiness and in-flight count."""

    reranker: Reranker
    settings: ServerSettings
    rank: RankFn
    long_documents: str
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    inflight: int = 0
    metrics: Metrics = field(init=False)
    probability_scores: bool = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.live)
        # Whether the scorer's raw scores are already probabilities (then no sigmoid); fixed per scorer.
        self.probability_scores = self.reranker.scorer.describe().scale == "probability"

    def relevance(self, raw: float) -> float:
        """``relevance_score``: the probability of relevance in [0, 1]."""
        return float(raw) if self.probability_scores else sigmoid(float(raw))

    def live(self) -> LiveStats:
        scorer = self.reranker.scorer
        if isinstance(scorer, LocalScorer) and scorer.loaded:
            b = scorer.engine.batcher(max_wait_ms=scorer.max_wait_ms, max_pairs=scorer.max_batch_pairs)
            return LiveStats(self.inflight, b.queued, b.batches, b.requests)
        return LiveStats(self.inflight)

    def load(self) -> None:
        """Load the model (score one pair) so ``/health`` turns 200 only when the first request will not wait."""
        try:
            self.reranker.warmup()
        except Exception as exc:  # any load failure is reported by /health, never raised into the loop
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("crossrank server: the model failed to load")
            return
        self.ready.set()


class Guard:
    """Pure-ASGI front door: API key, body size, concurrency and metrics, before any route runs."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        st = self.state
        t0 = time.perf_counter()
        status = [500]

        async def send_tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        scoring = path in SCORING_PATHS
        try:
            refusal = self._refuse(scope, path)
            if refusal is not None:
                await refusal(scope, receive, send_tracked)
                return
            if not scoring:
                await self.app(scope, receive, send_tracked)
                return
            if st.inflight >= st.settings.max_concurrent:
                st.metrics.rejected.labels("concurrency").inc()
                retry = str(st.settings.retry_after_s)
                busy = f"the server is busy ({st.settings.max_concurrent} requests in flight): retry after {retry} s"
                await error_response(path, 429, busy, "Overloaded", {"Retry-After": retry})(
                    scope, receive, send_tracked
                )
                return
            st.inflight += 1
            try:
                body = await self._read_body(receive)
                if body is None:
                    limit = st.settings.max_body_bytes
                    st.metrics.rejected.labels("body_size").inc()
                    too_big = f"request body is larger than the server's limit of {limit} bytes: send fewer documents"
                    await error_response(path, 413, too_big, "Validation")(scope, receive, send_tracked)
                    return
                await self.app(scope, _replay(body, receive), send_tracked)
            finally:
                st.inflight -= 1
        finally:
            route = route_label(path)
            st.metrics.requests.labels(route, str(status[0])).inc()
            st.metrics.latency.labels(route).observe(time.perf_counter() - t0)

    def _refuse(self, scope: dict[str, Any], path: str) -> Any:
        """A response that refuses the request before any route runs (401, 413), or None."""
        st = self.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = st.settings.api_key
        if key is not None and path not in OPEN_PATHS:
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
            if not ok:
                st.metrics.rejected.labels("auth").inc()
                why = "missing" if not given else "wrong"
                return error_response(
                    path,
                    401,
                    f"API key {why}: send 'Authorization: Bearer <key>' with the key the server was started with",
                    "Unauthorized",
                    {"WWW-Authenticate": "Bearer"},
                )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > st.settings.max_body_bytes:
            st.metrics.rejected.labels("body_size").inc()
            return error_response(
                path,
                413,
                f"request body ({int(length)} bytes) is larger than the server's limit of "
                f"{st.settings.max_body_bytes} bytes: send fewer or shorter documents per request",
                "Validation",
            )
        return None

    async def _read_body(self, receive: Any) -> bytes | None:
        """The whole request body, or None once it passes the size limit (chunked uploads included)."""
        limit = self.state.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


# ---------------------------------------------------------------------------------------------- helpers
def _v1_texts(docs: Sequence[str | DocumentObject], rank_fields: list[str] | None) -> list[str]:
    texts = []
    for i, d in enumerate(docs):
        if isinstance(d, str):
            texts.append(d)
            continue
        fields = {"text": d.text, **(d.model_extra or {})}
        if rank_fields:
            parts = [f"{k}: {fields[k]}" for k in rank_fields if fields.get(k) is not None]
            if parts:
                texts.append("\n".join(parts))
                continue
        if not isinstance(d.text, str):
            raise ApiError(
                422,
                f"documents[{i}] has no 'text': send strings, {{'text': ...}} objects, or name fields with rank_fields",
                "Validation",
            )
        texts.append(d.text)
    return texts


def _v1_document(doc: str | DocumentObject, text: str) -> dict[str, Any]:
    if isinstance(doc, str):
        return {"text": doc}
    out: dict[str, Any] = {k: v for k, v in (doc.model_extra or {}).items()}
    out["text"] = doc.text if isinstance(doc.text, str) else text
    return out


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON, an empty query or no documents"},
    401: {"description": "Missing or wrong API key"},
    404: {"description": "The request names a model this server does not serve"},
    413: {"description": "Body or document count over the server's limits"},
    422: {"description": "A field has the wrong type or value"},
    429: {"description": "Too many requests in flight; retry after the Retry-After header"},
    500: {"description": "An unexpected server error (reported, never fatal)"},
    503: {"description": "The model is still loading or failed to load"},
    504: {"description": "Scoring took longer than the server's per-request timeout"},
}


def _responses(error_model: type) -> dict[int | str, dict[str, Any]]:
    return {code: {**v, "model": error_model} for code, v in _ERROR_RESPONSES.items()}


# ---------------------------------------------------------------------------------------------- the app
def create_app(
    reranker: Reranker,
    settings: ServerSettings | None = None,
    *,
    rank: RankFn | None = None,
    load_on_startup: bool = True,
) -> FastAPI:
    """The FastAPI app serving ``reranker``.

    ``rank`` replaces how a request is scored (``reranker.arerank`` by default; Ray Serve passes
    its ``@serve.batch`` method). ``load_on_startup`` loads the model in the background when the
    app starts, with ``/health`` answering 503 until it is ready; with False the app is ready at
    once (the scorer loads on the first request).
    """
    from crossrank import __version__

    settings = settings or ServerSettings()
    long_documents = reranker.long_documents

    async def default_rank(query: str, texts: list[str], top_n: int | None) -> RankedResults:
        return await reranker.arerank(query, texts, top_n=top_n, normalize="none")

    state = ServerState(reranker, settings, rank or default_rank, long_documents)
    if not load_on_startup:
        state.ready.set()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not state.ready.is_set():
            threading.Thread(target=state.load, name="crossrank-model-load", daemon=True).start()
        yield
        # Graceful shutdown happens before this point: the server stops accepting and finishes in-flight requests.

    app = FastAPI(
        title="crossrank",
        version=__version__,
        description=(
            "Cross-encoder reranking with Cohere v1/v2, Jina, vLLM, Hugging Face TEI and Infinity compatible routes. "
            "relevance_score is a probability in [0, 1] (the sigmoid of the model's raw score)."
        ),
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.crossrank = state
    app.add_middleware(Guard, state=state)

    # ------------------------------------------------------------------ errors, in each API's shape
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Any:
        return error_response(request.url.path, exc.status, exc.message, exc.error_type, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Any:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(request.url.path, 400, "invalid request: the body is not valid JSON", "Validation")
        parts = []
        for e in errors[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return error_response(request.url.path, 422, "invalid request: " + "; ".join(parts) + more, "Validation")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Any:
        return error_response(request.url.path, exc.status_code, str(exc.detail), "Validation", exc.headers)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Any:
        log.exception("crossrank server: unexpected error on %s", request.url.path)
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}: {exc}", "Backend")

    # ------------------------------------------------------------------ scoring, shared by every route
    def check_model(model: str | None) -> None:
        if not settings.accepts_model(model):
            raise ApiError(
                404,
                f"model {model!r} is not served here: this server serves {settings.model_name!r} "
                f"(names: {', '.join(settings.served_model_names)}) and never loads models named in a request",
                "Validation",
            )

    async def score(query: str, texts: list[str], top_n: int | None, *, tei: bool = False) -> RankedResults:
        if not query.strip():
            raise ApiError(400, "invalid request: query is empty; send the user's question", "Validation")
        if not texts:
            raise ApiError(400, "invalid request: documents is empty; send at least one document", "Empty")
        if len(texts) > settings.max_documents:
            raise ApiError(
                422 if tei else 413,
                f"too many documents: {len(texts)} > the server's limit of {settings.max_documents} per request; "
                "split them over several requests",
                "Validation",
            )
        if not state.ready.is_set():
            why = f"the model failed to load ({state.load_error})" if state.load_error else "the model is loading"
            raise ApiError(503, f"{why}; retry shortly", "Unhealthy", {"Retry-After": str(settings.retry_after_s)})
        try:
            res = await asyncio.wait_for(state.rank(query, texts, top_n), settings.request_timeout_s)
        except asyncio.TimeoutError as exc:
            state.metrics.rejected.labels("timeout").inc()
            raise ApiError(
                504,
                f"scoring took longer than the server's timeout of {settings.request_timeout_s:g} s; "
                "send fewer documents per request",
                "Backend",
            ) from exc
        except (InvalidArgumentError, ValueError) as exc:
            raise ApiError(400, f"invalid request: {exc}", "Validation") from exc
        except CrossrankError as exc:
            raise ApiError(500, f"scoring failed: {exc}", "Backend") from exc
        m = state.metrics
        m.documents.observe(len(texts))
        m.pairs.inc(res.stats.pairs_scored or len(texts))
        if res.stats.truncated:
            m.truncated.inc(res.stats.truncated)
        return res

    def notes_for(res: RankedResults, n: int, ignored: Sequence[str] = ()) -> list[str]:
        out = []
        limit = reranker.max_length
        if res.stats.truncated:
            out.append(
                f"{res.stats.truncated} of {n} documents were longer than the model's {limit} tokens and were "
                "truncated (the server runs with long_documents=truncate; 'windows' scores every part)"
            )
        if long_documents == "windows" and res.stats.windows > n:
            out.append(f"long documents were scored in {res.stats.windows} windows for {n} documents (best window)")
        if res.stats.query_truncated:
            out.append(f"the query was longer than the model allows and was cut to fit {limit} tokens")
        out.extend(f"{name} is accepted but not applied: documents follow the server's settings" for name in ignored)
        return out

    def cohere_meta(version: str, res: RankedResults, n: int, ignored: Sequence[str]) -> dict[str, Any]:
        """Cohere's ``meta``: the API version, billed units and, when there are any, :func:`notes_for` as warnings."""
        meta: dict[str, Any] = {"api_version": {"version": version}, "billed_units": {"search_units": 1}}
        notes = notes_for(res, n, ignored)
        if notes:
            meta["warnings"] = notes
        return meta

    # ------------------------------------------------------------------ routes
    def cohere_route(path: str, response: type, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A POST route in Cohere's shape: ``response`` on success, Cohere's error body on every failure."""
        return app.post(
            path, response_model=None, responses={200: {"model": response}, **_responses(CohereError)}, summary=summary
        )

    @cohere_route("/v1/rerank", RerankV1Response, "Cohere v1, Jina and vLLM rerank")
    async def rerank_v1(body: RerankV1Request) -> Any:
        check_model(body.model)
        texts = _v1_texts(body.documents, body.rank_fields)
        res = await score(body.query, texts, body.top_n)
        results = []
        for r in res:
            item: dict[str, Any] = {"index": r.index, "relevance_score": state.relevance(r.raw_score)}
            if body.return_documents:
                item["document"] = _v1_document(body.documents[r.index], texts[r.index])
            results.append(item)
        ignored = ["max_chunks_per_doc"] if body.max_chunks_per_doc is not None else []
        return JSONResponse(
            {
                "id": uuid.uuid4().hex,
                "model": settings.model_name,
                "results": results,
                "meta": cohere_meta("1", res, len(texts), ignored),
                "usage": {"total_tokens": 0},
            }
        )

    @cohere_route("/v2/rerank", RerankV2Response, "Cohere v2 rerank")
    async def rerank_v2(body: RerankV2Request) -> Any:
        check_model(body.model)
        res = await score(body.query, body.documents, body.top_n)
        results = [{"index": r.index, "relevance_score": state.relevance(r.raw_score)} for r in res]
        ignored = ["max_tokens_per_doc"] if body.max_tokens_per_doc is not None else []
        meta = cohere_meta("2", res, len(body.documents), ignored)
        return JSONResponse({"id": uuid.uuid4().hex, "results": results, "meta": meta})

    @app.post(
        "/rerank",
        response_model=None,
        responses={
            200: {
                "description": "TEI: a list best first; Infinity: an object",
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"type": "array", "items": {"$ref": "#/components/schemas/TEIResult"}},
                                {"$ref": "#/components/schemas/InfinityResponse"},
                            ]
                        }
                    }
                },
            },
            **_responses(TEIError),
        },
        summary="Hugging Face TEI rerank (texts) or Infinity rerank (documents)",
    )
    async def rerank_tei(body: RerankRequest) -> Any:
        if body.texts is None and body.documents is not None:
            return await _infinity(body)
        if body.texts is None:
            raise ApiError(422, "invalid request: send 'texts' (TEI) or 'documents' (Infinity)", "Validation")
        check_model(body.model)
        res = await score(body.query, body.texts, body.top_n, tei=True)
        out = []
        for r in res:
            item: dict[str, Any] = {
                "index": r.index,
                "score": r.raw_score if body.raw_scores else state.relevance(r.raw_score),
            }
            if body.return_text:
                item["text"] = body.texts[r.index]
            out.append(item)
        return JSONResponse(out)

    async def _infinity(body: RerankRequest) -> Any:
        assert body.documents is not None
        check_model(body.model)
        res = await score(body.query, body.documents, body.top_n, tei=True)
        results = []
        for r in res:
            item: dict[str, Any] = {
                "relevance_score": r.raw_score if body.raw_scores else state.relevance(r.raw_score),
                "index": r.index,
            }
            if body.return_documents:
                item["document"] = body.documents[r.index]
            results.append(item)
        return JSONResponse(
            {
                "object": "rerank",
                "results": results,
                "model": settings.model_name,
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
                "id": f"infinity-{uuid.uuid4()}",
                "created": int(time.time()),
            }
        )

    # ------------------------------------------------------------------ operations
    @app.get("/health", response_model=None, responses={200: {"model": Health}, 503: {"model": Health}})
    async def health() -> Any:
        if state.ready.is_set():
            return JSONResponse({"status": "ok"})
        if state.load_error:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/info", response_model=None, responses={200: {"model": Info}, 401: {"model": CohereError}})
    async def info() -> Any:
        d = reranker.scorer.describe()
        return JSONResponse(
            {
                "model": settings.model_name,
                "served_model_names": list(settings.served_model_names),
                "kind": d.kind,
                "backend": d.backend,
                "max_length": d.max_length,
                "score_scale": "relevance_score: probability (sigmoid of the raw score); raw_scores: the raw score"
                if d.scale == "logit"
                else "probability",
                "long_documents": long_documents,
                "limits": {
                    "max_documents": settings.max_documents,
                    "max_body_bytes": settings.max_body_bytes,
                    "max_concurrent": settings.max_concurrent,
                    "request_timeout_s": settings.request_timeout_s,
                },
                "version": __version__,
            }
        )

    @app.get("/metrics", response_model=None, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Any:
        data, content_type = state.metrics.render()
        return Response(data, media_type=content_type)

    return app
