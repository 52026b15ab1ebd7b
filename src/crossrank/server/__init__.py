"""``crossrank serve``: a rerank server speaking the Cohere, Jina, vLLM, TEI and Infinity APIs.

- :mod:`.app` — the FastAPI app (routes, guard, error shapes) over one shared ``Reranker``;
- :mod:`.schemas` — request and response bodies; :mod:`.settings` — limits, API key, model names;
- :mod:`.metrics` — Prometheus metrics; :mod:`.run` — uvicorn with graceful shutdown;
- :mod:`.ray` — the same app on Ray Serve (replicas, ``@serve.batch``) and Ray Data pair scoring.

Needs the ``server`` extra (``pip install 'crossrank[server]'``); Ray needs ``crossrank[ray]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossrank.server.settings import ServerSettings, model_names

if TYPE_CHECKING:
    from fastapi import FastAPI

    from crossrank.reranker import Reranker
    from crossrank.server.app import RankFn


def create_app(
    reranker: Reranker, settings: ServerSettings | None = None, *, rank: RankFn | None = None, **kwargs: Any
) -> FastAPI:
    """The FastAPI app serving ``reranker`` (see :func:`crossrank.server.app.create_app`)."""
    from crossrank.server.app import create_app as _create

    return _create(reranker, settings, rank=rank, **kwargs)


__all__ = ["ServerSettings", "create_app", "model_names"]
