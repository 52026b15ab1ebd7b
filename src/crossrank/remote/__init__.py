"""The remote backend: a :class:`~crossrank.scoring.Scorer` that scores through a rerank server over HTTP.

``Reranker("http://127.0.0.1:8080", api="cohere")`` builds a :class:`RemoteScorer`; it speaks the
Cohere v1/v2, Jina (and vLLM), TEI and Infinity APIs, and reaches crossrank serve, self-hosted
deployments and hosted Cohere or Jina alike. Needs ``httpx`` (``pip install 'crossrank[remote]'``).

A core-level scorer in its own area: it imports only the core, and nothing but the Reranker's
URL check (a lazy import) imports it.
"""

from crossrank.remote.apis import API_CHOICES
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
from crossrank.remote.scorer import RemoteScorer

__all__ = [
    "API_CHOICES",
    "RemoteAuthError",
    "RemoteError",
    "RemoteNotFoundError",
    "RemoteOverloadedError",
    "RemoteRequestError",
    "RemoteScorer",
    "RemoteServerError",
    "RemoteTimeoutError",
    "RemoteUnavailableError",
]
