"""The HTTP app: Cohere v1/v2, Jina, vLLM, TEI and Infinity rerank routes over one shared ``Reranker``.

Every scoring route goes through ``Reranker.arerank``, so concurrent requests, whichever API they
speak, share forward passes through the micro-batcher. One pure-ASGI guard runs before any route:
API key, body size, concurrency (429 with ``Retry-After``) and the request metrics, so a refused
request costs no JSON parsing and no model time. Errors are JSON in the shape of the API the client
speaks (Cohere ``{"message"}``, TEI ``{"error", "error_type"}``), and nothing a request sends can
kill the worker or make the server load a model.

Fidelity to the real APIs: the ``model`` of a response is the served name (never the model's
filesystem path, which is also scrubbed from every error message); token usage is what was scored
(the tokens of every model input after truncation, special and prompt tokens included, padding
not), reported where each API reports it: Cohere ``meta.tokens.input_tokens``, Jina/vLLM
``usage.total_tokens``, Infinity ``usage``, TEI's ``x-compute-tokens`` header. Every response
carries ``X-Request-ID`` and every request gets one access log line (:mod:`crossrank.server.access`).
Request fields the APIs define are honoured or refused in the API's error shape: Cohere v2
``max_tokens_per_doc``, Cohere v1 ``rank_fields`` and ``max_chunks_per_doc``, TEI ``truncate`` /
``truncation_direction`` / ``return_text``, and ``instruction`` (every route) for rerankers whose
prompt has an instruction slot.

Scores: ``relevance_score`` is a probability in [0, 1], the sigmoid of the model's raw score (the
scale Cohere and Jina clients assume); TEI's ``raw_scores: true`` and Infinity's ``raw_scores``
give the raw score itself. Ranking is by the raw score, ties in input order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import CrossrankError, InvalidArgumentError, VectorStoreError, missing_extra
from crossrank.reranker import Reranker
from crossrank.results import RankedResults
from crossrank.scoring.local import LocalScorer
from crossrank.server.access import REQUEST_ID_HEADER, RequestInfo, log_access, request_id
from crossrank.server.discovery import model_list, tei_info
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

# (query, texts, top_n, **options) -> ranked results; the default is ``reranker.arerank`` (Ray swaps in
# its batcher). ``options`` are per-call ``Reranker`` options (max_document_tokens, truncation_side,
# instruction, max_windows), passed only when a request sets one.
RankFn = Callable[..., Awaitable[RankedResults]]

SCORING_PATHS = frozenset({"/v1/rerank", "/v2/rerank", "/rerank"})
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
TEI_PATHS = frozenset({"/rerank"})
REQUEST_KEY = "crossrank.request"  # the scope key of the request's RequestInfo
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
    private_paths: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.live)
        # Whether the scorer's raw scores are already probabilities (then no sigmoid); fixed per scorer.
        self.probability_scores = self.reranker.scorer.describe().scale == "probability"
        self.private_paths = _model_paths(self.reranker)

    def redact(self, text: str) -> str:
        """``text`` with the model's filesystem paths replaced by the served name (for anything a client sees)."""
        for path in self.private_paths:
            text = text.replace(path, self.settings.model_name)
        return text

    def relevance(self, raw: float) -> float:
        """``relevance_score``: the probability of relevance in [0, 1]."""
        return float(raw) if self.probability_scores else sigmoid(float(raw))

    def live(self) -> LiveStats:
        scorer = self.reranker.scorer
        if isinstance(scorer, LocalScorer) and scorer.loaded:
            b = scorer.engine.batcher(max_wait_ms=scorer.max_wait_ms, max_pairs=scorer.max_batch_pairs)
            tokens = scorer.token_cache_info()
            return LiveStats(self.inflight, b.queued, b.batches, b.requests, tokens)
        return LiveStats(self.inflight)

    def load(self) -> None:
        """Load the model (score one pair) so ``/health`` turns 200 only when the first request will not wait."""
        try:
            self.reranker.warmup()
        except Exception as exc:  # any load failure is reported by /health, never raised into the loop
            self.load_error = self.redact(f"{type(exc).__name__}: {exc}")
            log.exception("crossrank server: the model failed to load")
            return
        self.ready.set()


def _model_paths(reranker: Reranker) -> tuple[str, ...]:
    """Where the model lives on this machine (as given, resolved, its snapshot folder), longest first."""
    found: set[str] = set()
    spec = reranker.scorer.describe().model
    candidates = [spec]
    if isinstance(reranker.scorer, LocalScorer):
        candidates.append(str(reranker.scorer.info.path))
    for c in candidates:
        if not c or "://" in c or not any(sep in c for sep in ("/", os.sep)):
            continue
        if not os.path.exists(c):  # a Hub id (org/name) is a public name, not a path
            continue
        found.add(c)
        with contextlib.suppress(OSError):
            found.add(str(Path(c).resolve()))
    return tuple(sorted((f for f in found if len(f) > 2), key=len, reverse=True))


class Guard:
    """Pure-ASGI front door: request id, API key, body size, concurrency, metrics and the access log."""

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
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        info = RequestInfo(request_id(headers.get(REQUEST_ID_HEADER)))
        scope[REQUEST_KEY] = info
        rid_header = (REQUEST_ID_HEADER.encode("latin-1"), info.id.encode("latin-1"))

        async def send_tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                out = list(message.get("headers", []))
                if not any(k.lower() == rid_header[0] for k, _ in out):
                    out.append(rid_header)
                message = {**message, "headers": out}
            await send(message)

        scoring = path in SCORING_PATHS
        try:
            refusal = self._refuse(headers, path)
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
            elapsed = time.perf_counter() - t0
            st.metrics.requests.labels(route, str(status[0])).inc()
            st.metrics.latency.labels(route).observe(elapsed)
            if st.settings.access_log:
                client = scope.get("client")
                log_access(
                    info,
                    method=str(scope.get("method", "")),
                    path=path,
                    status=status[0],
                    latency_ms=elapsed * 1000,
                    client=f"{client[0]}:{client[1]}" if client else None,
                )

    def _refuse(self, headers: Mapping[str, str], path: str) -> Any:
        """A response that refuses the request before any route runs (401, 413), or None."""
        st = self.state
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


def request_info(request: Request) -> RequestInfo:
    """The request's :class:`RequestInfo` (set by the guard; made here for an app mounted without it)."""
    info = request.scope.get(REQUEST_KEY)
    if not isinstance(info, RequestInfo):
        info = request.scope[REQUEST_KEY] = RequestInfo(request_id(request.headers.get(REQUEST_ID_HEADER)))
    return info


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
def _field_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _v1_texts(docs: Sequence[str | DocumentObject], rank_fields: list[str] | None) -> list[str]:
    """The text scored for each Cohere v1 document.

    A string is scored as it is; an object without ``rank_fields`` by its ``text``. With
    ``rank_fields`` an object is scored by those fields, in the order given, one ``key: value``
    line each (the YAML-style layout Cohere recommends for structured documents; values that are
    not strings as JSON); a field an object lacks is left out, and an object with none of them is
    a 422 naming it. String documents ignore ``rank_fields``.
    """
    if rank_fields is not None and not rank_fields:
        raise ApiError(422, "invalid request: rank_fields is empty; name a field or leave it out", "Validation")
    texts = []
    for i, d in enumerate(docs):
        if isinstance(d, str):
            texts.append(d)
            continue
        fields = {**(d.model_extra or {}), "text": d.text}
        if rank_fields:
            parts = [f"{k}: {_field_text(fields[k])}" for k in rank_fields if fields.get(k) is not None]
            if not parts:
                raise ApiError(
                    422,
                    f"documents[{i}] has none of the rank_fields {rank_fields}: "
                    f"it has {sorted(k for k, v in fields.items() if v is not None)}",
                    "Validation",
                )
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

    async def default_rank(query: str, texts: list[str], top_n: int | None, **options: Any) -> RankedResults:
        return await reranker.arerank(query, texts, top_n=top_n, normalize="none", **options)

    state = ServerState(reranker, settings, rank or default_rank, long_documents)
    if not load_on_startup:
        state.ready.set()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not state.ready.is_set():
            threading.Thread(target=state.load, name="crossrank-model-load", daemon=True).start()
        yield
        # Graceful shutdown happens before this point: the server stops accepting and finishes in-flight requests.

    started = int(time.time())  # the models' "created" time in /models
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
        # Runs outside the guard (Starlette's outermost middleware), so it sets the request id header itself.
        rid = request_info(request).id
        log.exception("crossrank server: unexpected error on %s (request %s)", request.url.path, rid)
        message = state.redact(f"internal error: {type(exc).__name__}: {exc}")
        return error_response(request.url.path, 500, message, "Backend", {REQUEST_ID_HEADER: rid})

    # ------------------------------------------------------------------ scoring, shared by every route
    def check_model(model: str | None) -> None:
        if not settings.accepts_model(model):
            raise ApiError(
                404,
                f"model {model!r} is not served here: this server serves {settings.model_name!r} "
                f"(names: {', '.join(settings.served_model_names)}) and never loads models named in a request",
                "Validation",
            )

    async def score(
        query: str,
        texts: list[str],
        top_n: int | None,
        req: RequestInfo,
        *,
        tei: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> RankedResults:
        """Rank ``texts`` (through ``state.rank``) with the per-call ``options`` a request set; errors in API shape."""
        req.documents = len(texts)
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
        opts = {k: v for k, v in (options or {}).items() if v is not None}
        try:
            ranked = state.rank(query, texts, top_n, **opts) if opts else state.rank(query, texts, top_n)
            res = await asyncio.wait_for(ranked, settings.request_timeout_s)
        except asyncio.TimeoutError as exc:
            state.metrics.rejected.labels("timeout").inc()
            raise ApiError(
                504,
                f"scoring took longer than the server's timeout of {settings.request_timeout_s:g} s; "
                "send fewer documents per request",
                "Backend",
            ) from exc
        except VectorStoreError as exc:  # the server's own store (e.g. rebuilt under it), not the request: logged here
            log.error("crossrank server: %s (request %s)", exc, req.id)
            raise ApiError(
                500, "scoring failed: the server's vector store cannot be read; see the server's log", "Backend"
            ) from exc
        except (InvalidArgumentError, ValueError) as exc:  # about the request: not redacted (no path oracle)
            raise ApiError(400, f"invalid request: {exc}", "Validation") from exc
        except CrossrankError as exc:
            raise ApiError(500, state.redact(f"scoring failed: {exc}"), "Backend") from exc
        req.tokens = res.stats.tokens
        m = state.metrics
        m.documents.observe(len(texts))
        m.pairs.inc(res.stats.pairs_scored or len(texts))
        if res.stats.truncated:
            m.truncated.inc(res.stats.truncated)
        return res

    def notes_for(res: RankedResults, n: int, cap: int | None = None, extra: Sequence[str] = ()) -> list[str]:
        out = []
        limit = reranker.max_length
        if res.stats.truncated and cap is not None:
            out.append(
                f"{res.stats.truncated} of {n} documents were truncated: to max_tokens_per_doc={cap} tokens, "
                f"or to fit the model's {limit} tokens"
            )
        elif res.stats.truncated:
            out.append(
                f"{res.stats.truncated} of {n} documents were longer than the model's {limit} tokens and were "
                "truncated (the server runs with long_documents=truncate; 'windows' scores every part)"
            )
        if long_documents == "windows" and res.stats.windows > n:
            out.append(f"long documents were scored in {res.stats.windows} windows for {n} documents (best window)")
        if res.stats.query_truncated:
            out.append(f"the query was longer than the model allows and was cut to fit {limit} tokens")
        out.extend(extra)
        return out

    def cohere_meta(
        version: str, res: RankedResults, n: int, cap: int | None = None, extra: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Cohere's ``meta``: API version, billed search units, tokens and, when there are any, warnings.

        ``search_units``: Cohere's unit, one query with up to 100 documents, a long document's extra
        chunks (windows) counting as documents; ``tokens.input_tokens``: the tokens scored.
        """
        units = max(1, math.ceil(max(n, res.stats.windows) / 100))
        meta: dict[str, Any] = {
            "api_version": {"version": version},
            "billed_units": {"search_units": units},
            "tokens": {"input_tokens": res.stats.tokens, "output_tokens": 0},
        }
        notes = notes_for(res, n, cap, extra)
        if notes:
            meta["warnings"] = notes
        return meta

    def tei_options(body: RerankRequest) -> dict[str, Any]:
        """TEI's ``truncation_direction`` (``Left``/``Right``) and ``instruction`` as ``Reranker`` options."""
        side = None
        if body.truncation_direction is not None:
            side = body.truncation_direction.lower()
            if side not in ("left", "right"):
                raise ApiError(
                    422,
                    f"invalid request: truncation_direction is 'Left' or 'Right', not {body.truncation_direction!r}",
                    "Validation",
                )
        return {"truncation_side": side, "instruction": body.instruction}

    def check_fit(body: RerankRequest, res: RankedResults, n: int) -> None:
        """TEI's ``truncate: false``: an input longer than the model takes is TEI's 413, not a silent cut."""
        if body.truncate is False and (res.stats.truncated or res.stats.query_truncated):
            what = f"{res.stats.truncated} of {n} texts" if res.stats.truncated else "the query"
            raise ApiError(
                413,
                f"`inputs` must have less than {reranker.max_length} tokens: {what} with the query do not fit; "
                "send truncate=true to cut them or send shorter texts",
                "Validation",
            )

    def tei_headers(res: RankedResults, query: str, texts: Sequence[str]) -> dict[str, str]:
        """TEI's per-request headers: tokens and characters computed on, and times in milliseconds."""
        chars = len(query) * len(texts) + sum(len(t) for t in texts)
        return {
            "x-compute-tokens": str(res.stats.tokens),
            "x-compute-characters": str(chars),
            "x-total-time": str(int(res.stats.total_ms)),
            "x-tokenization-time": str(int(res.stats.tokenize_ms)),
            "x-inference-time": str(int(res.stats.model_ms)),
        }

    # ------------------------------------------------------------------ routes
    def cohere_route(path: str, response: type, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A POST route in Cohere's shape: ``response`` on success, Cohere's error body on every failure."""
        return app.post(
            path, response_model=None, responses={200: {"model": response}, **_responses(CohereError)}, summary=summary
        )

    @cohere_route("/v1/rerank", RerankV1Response, "Cohere v1, Jina and vLLM rerank")
    async def rerank_v1(body: RerankV1Request, request: Request) -> Any:
        req = request_info(request)
        check_model(body.model)
        texts = _v1_texts(body.documents, body.rank_fields)
        options: dict[str, Any] = {"instruction": body.instruction}
        if body.max_chunks_per_doc is not None and long_documents == "windows":
            # Cohere's chunks are our windows; in truncate mode a document is one chunk, within any maximum.
            options["max_windows"] = min(body.max_chunks_per_doc, reranker.max_windows)
        res = await score(body.query, texts, body.top_n, req, options=options)
        results = []
        for r in res:
            item: dict[str, Any] = {"index": r.index, "relevance_score": state.relevance(r.raw_score)}
            if body.return_documents:
                item["document"] = _v1_document(body.documents[r.index], texts[r.index])
            results.append(item)
        return JSONResponse(
            {
                "id": req.id,
                "model": settings.model_name,
                "results": results,
                "meta": cohere_meta("1", res, len(texts)),
                "usage": {"total_tokens": res.stats.tokens},
            }
        )

    @cohere_route("/v2/rerank", RerankV2Response, "Cohere v2 rerank")
    async def rerank_v2(body: RerankV2Request, request: Request) -> Any:
        req = request_info(request)
        check_model(body.model)
        options = {"max_document_tokens": body.max_tokens_per_doc, "instruction": body.instruction}
        res = await score(body.query, body.documents, body.top_n, req, options=options)
        results = []
        for r in res:
            item: dict[str, Any] = {"index": r.index, "relevance_score": state.relevance(r.raw_score)}
            if body.return_documents:
                item["document"] = {"text": body.documents[r.index]}
            results.append(item)
        extra = []
        if body.priority:
            extra.append(f"priority={body.priority} is accepted; this server answers requests in arrival order")
        meta = cohere_meta("2", res, len(body.documents), body.max_tokens_per_doc, extra)
        return JSONResponse({"id": req.id, "results": results, "meta": meta})

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
    async def rerank_tei(body: RerankRequest, request: Request) -> Any:
        req = request_info(request)
        options = tei_options(body)
        if body.texts is None and body.documents is not None:
            return await _infinity(body, req, options)
        if body.texts is None:
            raise ApiError(422, "invalid request: send 'texts' (TEI) or 'documents' (Infinity)", "Validation")
        check_model(body.model)
        res = await score(body.query, body.texts, body.top_n, req, tei=True, options=options)
        check_fit(body, res, len(body.texts))
        out = []
        for r in res:
            item: dict[str, Any] = {
                "index": r.index,
                "score": r.raw_score if body.raw_scores else state.relevance(r.raw_score),
            }
            if body.return_text:
                item["text"] = body.texts[r.index]
            out.append(item)
        return JSONResponse(out, headers=tei_headers(res, body.query, body.texts))

    async def _infinity(body: RerankRequest, req: RequestInfo, options: Mapping[str, Any]) -> Any:
        assert body.documents is not None
        check_model(body.model)
        res = await score(body.query, body.documents, body.top_n, req, tei=True, options=options)
        check_fit(body, res, len(body.documents))
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
                "usage": {"prompt_tokens": res.stats.tokens, "total_tokens": res.stats.tokens},
                "id": req.id,
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
        """crossrank's description of the served model, with Hugging Face TEI's ``Info`` fields beside it."""
        d = reranker.scorer.describe()
        tei = tei_info(
            model_id=settings.model_name,
            scorer=reranker.scorer,
            backend=d.backend,
            max_length=d.max_length,
            max_concurrent=settings.max_concurrent,
            max_documents=settings.max_documents,
            version=__version__,
        )
        return JSONResponse(
            {
                **tei,
                "model": settings.model_name,
                "served_model_names": list(settings.served_model_names),
                "kind": d.kind,
                "backend": d.backend,
                "max_length": d.max_length,
                "score_scale": "relevance_score: probability (sigmoid of the raw score); raw_scores: the raw score"
                if d.scale == "logit"
                else "relevance_score: sigmoid of the raw score, a similarity (not a calibrated probability); "
                "raw_scores: the similarity"
                if d.scale == "similarity"
                else "probability",
                "long_documents": long_documents,
                "limits": {
                    "max_documents": settings.max_documents,
                    "max_body_bytes": settings.max_body_bytes,
                    "max_concurrent": settings.max_concurrent,
                    "request_timeout_s": settings.request_timeout_s,
                },
            }
        )

    def models(owned_by: str) -> Any:
        live = state.live()
        stats = {
            "queue_fraction": live.inflight / max(1, settings.max_concurrent),
            "queue_absolute": live.inflight,
            "results_pending": live.queued,
            "batch_size": getattr(reranker.scorer, "batch_size", None),
        }
        body = model_list(
            settings.served_model_names,
            backend=reranker.scorer.describe().backend,
            created=started,
            owned_by=owned_by,
            stats=stats,
        )
        return JSONResponse(body)

    @app.get("/models", response_model=None, summary="Infinity's model list")
    async def infinity_models() -> Any:
        return models("infinity")  # the only value Infinity sends (infinity_client parses it as an enum)

    @app.get("/v1/models", response_model=None, summary="OpenAI-style model list (as vLLM serves it)")
    async def openai_models() -> Any:
        return models("crossrank")

    @app.get("/metrics", response_model=None, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Any:
        data, content_type = state.metrics.render()
        return Response(data, media_type=content_type)

    return app
