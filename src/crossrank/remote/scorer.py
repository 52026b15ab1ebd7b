"""``RemoteScorer``: score through a rerank server (crossrank serve, vLLM, TEI, Infinity, hosted Cohere or Jina).

``Reranker("http://127.0.0.1:8080")`` builds one, so everything the Reranker does (validation,
duplicates, the score cache, threshold, top_n, fusion, result records) works unchanged over HTTP.

Scores: APIs that answer probabilities (Cohere, Jina, vLLM, crossrank serve's ``relevance_score``)
are turned back into logits, ``logit(p)`` clipped to about ±34.5, and TEI and Infinity are asked
for raw scores. So raw scores are logits on every API, ``ScorerInfo.scale`` is ``"logit"``, and
``normalize="sigmoid"`` gives back exactly the probability the server reported. Against crossrank
serve, ranking matches the local model's (logit and sigmoid are monotone).

Transport: one ``httpx`` connection pool per scorer (sync) and one per event loop (async, a real
async client, never a thread per call). A list longer than ``max_documents`` is split over several
requests (run concurrently by ``ascore``); a 413 halves the split and tries again. 429, 5xx and
dropped connections are retried with jittered exponential backoff (``Retry-After`` honoured) until
``max_retries`` or the call's ``timeout`` deadline; every other failure is a typed
:class:`~crossrank.remote.errors.RemoteError` that says what to do. Long documents follow the
server's own setting (windows or truncation): ``ScoreSettings`` cannot be sent over these APIs.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crossrank.errors import InvalidArgumentError, missing_extra
from crossrank.inputs import check_choice, check_positive_int
from crossrank.remote.apis import (
    API_CHOICES,
    APIS,
    HOSTED_DEFAULT_MODEL,
    HOSTED_KEY_ENVS,
    Api,
    endpoint,
    host_of,
)
from crossrank.remote.errors import (
    RemoteAuthError,
    RemoteError,
    RemoteNotFoundError,
    RemoteOverloadedError,
    RemoteRequestError,
    RemoteServerError,
    RemoteTimeoutError,
    RemoteUnavailableError,
)
from crossrank.scoring.base import Scored, ScorerInfo, ScoreSettings, ScoreStats

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CROSSRANK_KEY_ENV = "CROSSRANK_API_KEY"


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise missing_extra("httpx", "remote") from exc
    return httpx


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying; ``wait`` is the server's Retry-After, if any."""

    def __init__(self, error: RemoteError, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


class _Split(Exception):
    """Internal: 413, the chunk is too large for the server; score it in halves."""


class RemoteScorer:
    """A :class:`~crossrank.scoring.Scorer` that asks a rerank server over HTTP.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8080`` (the route is added per ``api``) or a full
            route URL such as ``https://api.jina.ai/v1/rerank``.
        api: ``cohere`` (default), ``cohere-v2``, ``jina`` (also vLLM), ``tei`` or ``infinity``.
        model: the ``model`` field to send; None sends none (crossrank serve, TEI) or the hosted
            service's default (Cohere ``rerank-v3.5``, Jina ``jina-reranker-v2-base-multilingual``).
        api_key: sent as ``Authorization: Bearer``; default: ``$CO_API_KEY`` for api.cohere.com,
            ``$JINA_API_KEY`` for api.jina.ai, else ``$CROSSRANK_API_KEY`` (hosted keys are sent
            only to their own hosts).
        timeout: seconds one ``score`` call may take in all, retries included.
        max_retries: retries of one request after 429, 5xx or a dropped connection.
        max_documents: documents per request; longer lists are split.
        max_connections: the connection pool's size.
        headers: extra headers for every request.
    """

    def __init__(
        self,
        url: str,
        *,
        api: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_documents: int = 1000,
        max_connections: int = 32,
        headers: Mapping[str, str] | None = None,
        backoff_s: float = 0.25,
        max_backoff_s: float = 4.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"url must start with http:// or https://, got {url!r}")
        self.api: Api = APIS[check_choice("api", api or "cohere", API_CHOICES)]
        self.url = url
        self.endpoint = endpoint(url, self.api)
        host = host_of(url)
        self.model = model if model is not None else HOSTED_DEFAULT_MODEL.get(host)
        if model is not None and (not isinstance(model, str) or not model):
            raise InvalidArgumentError(f"model must be a non-empty str or None, got {model!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidArgumentError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_documents = check_positive_int("max_documents", max_documents) or 1000
        self.max_connections = check_positive_int("max_connections", max_connections) or 32
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        key = api_key if api_key is not None else self._key_from_env(host)
        self._headers = {"Accept": "application/json", "User-Agent": "crossrank-remote", **dict(headers or {})}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._has_key = bool(key)
        self._lock = threading.Lock()
        self._client: Any = None
        self._aclients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    @staticmethod
    def _key_from_env(host: str) -> str | None:
        for env in HOSTED_KEY_ENVS.get(host, (CROSSRANK_KEY_ENV,)):
            value = os.environ.get(env)
            if value:
                return value
        return None

    # ------------------------------------------------------------------ the Scorer protocol
    @property
    def identity(self) -> str:
        return f"remote:{self.api.name}:{self.endpoint}:{self.model}"

    def describe(self) -> ScorerInfo:
        return ScorerInfo(
            kind="remote",
            model=self.model or self.url,
            backend=f"remote-{self.api.name}",
            max_length=None,
            scale="logit",
        )

    def score(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        if not texts:
            return Scored.empty()
        deadline = time.monotonic() + self.timeout
        t = time.perf_counter()
        raw: list[float] = []
        for chunk in self._chunks(list(texts)):
            raw.extend(self._score_chunk(query, chunk, deadline))
        return self._scored(raw, time.perf_counter() - t)

    async def ascore(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        if not texts:
            return Scored.empty()
        deadline = time.monotonic() + self.timeout
        t = time.perf_counter()
        parts = await asyncio.gather(*(self._ascore_chunk(query, c, deadline) for c in self._chunks(list(texts))))
        return self._scored([s for p in parts for s in p], time.perf_counter() - t)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the sync connection pool (async pools close with :meth:`aclose` or their loop)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this event loop's async connection pool."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aclients.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()

    def __repr__(self) -> str:
        return f"RemoteScorer({self.url!r}, api={self.api.name!r}, model={self.model!r})"

    # ------------------------------------------------------------------ internals
    def _chunks(self, texts: list[str]) -> list[list[str]]:
        n = self.max_documents
        return [texts[i : i + n] for i in range(0, len(texts), n)]

    @staticmethod
    def _scored(raw: list[float], seconds: float) -> Scored:
        n = len(raw)
        return Scored(
            raw=np.asarray(raw, dtype=np.float64),
            windows=[1] * n,
            truncated=[False] * n,
            stats=ScoreStats(pairs=n, model_s=seconds),
        )

    def _limits(self) -> Any:
        httpx = _httpx()
        return httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)

    def _sync_client(self) -> Any:
        with self._lock:
            if self._client is None:
                httpx = _httpx()
                self._client = httpx.Client(headers=self._headers, limits=self._limits(), timeout=self.timeout)
            return self._client

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aclients.get(id(loop))
            if entry is None or entry[0] is not loop:
                # Pools of loops that are gone are dropped: their connections died with the loop.
                self._aclients = {k: v for k, v in self._aclients.items() if not v[0].is_closed()}
                httpx = _httpx()
                client = httpx.AsyncClient(headers=self._headers, limits=self._limits(), timeout=self.timeout)
                entry = self._aclients[id(loop)] = (loop, client)
            return entry[1]

    def _score_chunk(self, query: str, texts: list[str], deadline: float) -> list[float]:
        attempt = 0
        while True:
            try:
                return self._attempt(query, texts, deadline)
            except _Split:
                if len(texts) == 1:
                    raise self._too_large(texts) from None
                half = len(texts) // 2
                return self._score_chunk(query, texts[:half], deadline) + self._score_chunk(
                    query, texts[half:], deadline
                )
            except _Retry as r:
                attempt += 1
                time.sleep(self._backoff(r, attempt, deadline))

    async def _ascore_chunk(self, query: str, texts: list[str], deadline: float) -> list[float]:
        attempt = 0
        while True:
            try:
                return await self._aattempt(query, texts, deadline)
            except _Split:
                if len(texts) == 1:
                    raise self._too_large(texts) from None
                half = len(texts) // 2
                a, b = await asyncio.gather(
                    self._ascore_chunk(query, texts[:half], deadline),
                    self._ascore_chunk(query, texts[half:], deadline),
                )
                return a + b
            except _Retry as r:
                attempt += 1
                await asyncio.sleep(self._backoff(r, attempt, deadline))

    def _attempt(self, query: str, texts: list[str], deadline: float) -> list[float]:
        httpx = _httpx()
        remaining = self._remaining(deadline)
        try:
            resp = self._sync_client().post(
                self.endpoint, json=self.api.body(query, texts, self.model), timeout=remaining
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline) from exc
        return self._read(resp, len(texts))

    async def _aattempt(self, query: str, texts: list[str], deadline: float) -> list[float]:
        httpx = _httpx()
        remaining = self._remaining(deadline)
        try:
            resp = await self._async_client().post(
                self.endpoint, json=self.api.body(query, texts, self.model), timeout=remaining
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline) from exc
        return self._read(resp, len(texts))

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RemoteTimeoutError(
                f"no answer from {self.endpoint} within the timeout of {self.timeout:g} s (retries included): "
                "raise timeout=, send fewer documents per call, or check the server's load",
                url=self.endpoint,
            )
        return left

    def _backoff(self, r: _Retry, attempt: int, deadline: float) -> float:
        """Seconds to wait before retry ``attempt``; raises the last error when no retry is left or fits."""
        if attempt > self.max_retries:
            raise r.error
        wait = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if r.wait is not None:
            wait = max(wait, min(r.wait, self.max_backoff_s * 4))
        if time.monotonic() + wait >= deadline:
            raise r.error
        return wait

    def _transport_error(self, exc: Exception, deadline: float) -> _Retry | RemoteError:
        httpx = _httpx()
        if isinstance(exc, httpx.TimeoutException) and time.monotonic() >= deadline - 0.01:
            return RemoteTimeoutError(
                f"no answer from {self.endpoint} within the timeout of {self.timeout:g} s: raise timeout=, "
                "send fewer documents per call, or check the server's load",
                url=self.endpoint,
                detail=str(exc),
            )
        if isinstance(exc, (httpx.TransportError,)):
            return _Retry(
                RemoteUnavailableError(
                    f"cannot reach the rerank server at {self.endpoint} ({type(exc).__name__}: {exc}): is it running "
                    "and is the URL right? (start one with: crossrank serve --model MODEL --port PORT)",
                    url=self.endpoint,
                    detail=str(exc),
                )
            )
        return RemoteServerError(f"request to {self.endpoint} failed: {type(exc).__name__}: {exc}", url=self.endpoint)

    def _too_large(self, texts: list[str]) -> RemoteRequestError:
        return RemoteRequestError(
            f"{self.endpoint} refused even a single document as too large (413, {len(texts[0])} characters): "
            "raise the server's body limit or shorten the document",
            url=self.endpoint,
            status=413,
        )

    def _read(self, resp: Any, n: int) -> list[float]:
        status = int(resp.status_code)
        if 200 <= status < 300:
            try:
                return self.api.parse(resp.json(), n)
            except ValueError as exc:
                raise RemoteServerError(
                    f"{self.endpoint} did not answer with a {self.api.name} rerank response ({exc}): "
                    f"check that api={self.api.name!r} is the API this server speaks",
                    url=self.endpoint,
                    status=status,
                ) from exc
        detail = _server_message(resp)
        said = f" Server said: {detail}" if detail else ""
        url = self.endpoint
        if status == 413 and n > 1:
            raise _Split()
        if status in RETRY_STATUSES:
            error: RemoteError
            if status == 429:
                error = RemoteOverloadedError(
                    f"{url} is overloaded (429) and kept refusing through {self.max_retries} retries: lower the "
                    f"request rate or concurrency, or raise max_retries= / timeout=.{said}",
                    url=url,
                    status=status,
                    detail=detail,
                )
            else:
                error = RemoteServerError(
                    f"{url} failed with {status} through {self.max_retries} retries: check the server's logs "
                    f"(/health tells whether its model loaded).{said}",
                    url=url,
                    status=status,
                    detail=detail,
                )
            raise _Retry(error, _retry_after(resp))
        if status in (401, 403):
            raise RemoteAuthError(
                f"{url} refused the API key ({status}): "
                + ("pass api_key= or set the key's environment variable " if not self._has_key else "check api_key= ")
                + "(CO_API_KEY for Cohere, JINA_API_KEY for Jina, CROSSRANK_API_KEY for crossrank serve)."
                + said,
                url=url,
                status=status,
                detail=detail,
            )
        if status == 404:
            raise RemoteNotFoundError(
                f"{url} answered 404: either no {self.api.name} rerank route is there (check the URL and api=; "
                "cohere and jina use /v1/rerank, cohere-v2 /v2/rerank, tei and infinity /rerank) or the server "
                f"does not serve model={self.model!r}.{said}",
                url=url,
                status=status,
                detail=detail,
            )
        if status in (400, 413, 422):
            raise RemoteRequestError(
                f"{url} rejected the request ({status}).{said}", url=url, status=status, detail=detail
            )
        raise RemoteServerError(f"{url} answered {status}.{said}", url=url, status=status, detail=detail)


def _server_message(resp: Any) -> str:
    """The server's own error text, from any API's error shape (or the raw body, cut short)."""
    try:
        data = resp.json()
    except ValueError:
        return str(resp.text)[:300]
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:300]
    return str(data)[:300]


def _retry_after(resp: Any) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
