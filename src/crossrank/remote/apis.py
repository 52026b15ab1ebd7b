"""The rerank APIs the remote backend speaks: where each one's route is, what it sends, what it reads back.

=========== ============ ===================================================== ======================
``api=``    route        body                                                  scores read back
=========== ============ ===================================================== ======================
cohere      /v1/rerank   query, documents, model, return_documents=false       probability
cohere-v2   /v2/rerank   query, documents, model                               probability
jina        /v1/rerank   query, documents, model, return_documents=false       probability (also vLLM)
tei         /rerank      query, texts, raw_scores=true, truncate=true          raw score
infinity    /rerank      query, documents, raw_scores=true, model              raw score
=========== ============ ===================================================== ======================

No ``top_n`` is sent: the :class:`~crossrank.Reranker` needs every score (for threshold, fusion
and its own ``top_n``), and a long list is split over several requests anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Probabilities are turned back into logits; this clip keeps logit(p) finite (|logit| <= ~34.5).
_EPS = 1e-15


def logit(p: float) -> float:
    """The inverse sigmoid, clipped so 0 and 1 stay finite."""
    q = min(max(float(p), _EPS), 1.0 - _EPS)
    return math.log(q / (1.0 - q))


@dataclass(frozen=True)
class Api:
    """One rerank API dialect."""

    name: str
    path: str
    probability: bool  # True: the API answers probabilities (turned into logits); False: raw scores
    key_envs: tuple[str, ...] = ()

    def body(self, query: str, texts: list[str], model: str | None) -> dict[str, Any]:
        """The JSON body of one request."""
        if self.name == "tei":
            out: dict[str, Any] = {"query": query, "texts": texts, "raw_scores": True, "truncate": True}
        elif self.name == "infinity":
            out = {"query": query, "documents": texts, "raw_scores": True, "return_documents": False}
        elif self.name == "cohere-v2":
            out = {"query": query, "documents": texts}
        else:
            out = {"query": query, "documents": texts, "return_documents": False}
        if model is not None:
            out["model"] = model
        return out

    def parse(self, data: Any, n: int) -> list[float]:
        """Raw scores (logits) in input order from a response body; ValueError when it is not one."""
        items = data if self.name == "tei" else (data.get("results") if isinstance(data, dict) else None)
        if not isinstance(items, list):
            raise ValueError("the response has no result list")
        key = "score" if self.name == "tei" else "relevance_score"
        out: list[float | None] = [None] * n
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("a result is not an object")
            i, s = item.get("index"), item.get(key)
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise ValueError(f"a result has index {i!r}, outside the {n} documents sent")
            if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s):
                raise ValueError(f"result {i} has no numeric {key!r}")
            out[i] = logit(s) if self.probability else float(s)
        missing = [i for i, s in enumerate(out) if s is None]
        if missing:
            raise ValueError(f"{len(missing)} of {n} documents got no score (first: {missing[0]})")
        return [float(s) for s in out if s is not None]


APIS: dict[str, Api] = {
    "cohere": Api("cohere", "/v1/rerank", True, ("CO_API_KEY", "COHERE_API_KEY")),
    "cohere-v2": Api("cohere-v2", "/v2/rerank", True, ("CO_API_KEY", "COHERE_API_KEY")),
    "jina": Api("jina", "/v1/rerank", True, ("JINA_API_KEY",)),
    "tei": Api("tei", "/rerank", False),
    "infinity": Api("infinity", "/rerank", False),
}
API_CHOICES = tuple(APIS)

# Hosted services: the model to ask for when none is named, and the only hosts their keys are sent to.
HOSTED_DEFAULT_MODEL = {
    "api.cohere.com": "rerank-v3.5",
    "api.cohere.ai": "rerank-v3.5",
    "api.jina.ai": "jina-reranker-v2-base-multilingual",
}
HOSTED_KEY_ENVS = {
    "api.cohere.com": ("CO_API_KEY", "COHERE_API_KEY"),
    "api.cohere.ai": ("CO_API_KEY", "COHERE_API_KEY"),
    "api.jina.ai": ("JINA_API_KEY",),
}


def endpoint(url: str, api: Api) -> str:
    """The full route URL: ``url`` itself when it already ends with the route, else base + route.

    ``http://host:8000/v1`` (an OpenAI-style base, as vLLM users write it) and
    ``https://api.jina.ai/v1/rerank`` both resolve to the same ``/v1/rerank`` route.
    """
    base = url.rstrip("/")
    path = urlsplit(base).path
    if path.endswith(api.path):
        return base
    version = api.path.split("/")[1] if api.path.count("/") > 1 else ""
    if version and path.endswith("/" + version):
        base = base[: -len(version) - 1]
    return base + api.path


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
