"""Run the app on uvicorn: one process, one model, loopback by default, graceful shutdown.

On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets the requests in flight finish (up
to ``graceful_timeout_s``) and then exits; ``/health`` answers 503 until the model is loaded, so a
load balancer or orchestrator sends traffic only to a replica that can answer at once. The
server's log (crossrank's access lines and uvicorn's own) goes to stderr as text or JSON lines,
as ``settings.log_format`` says (:func:`crossrank.server.access.configure_logging`).
"""

from __future__ import annotations

import os
from typing import Any

from typing_extensions import TypedDict, Unpack

from crossrank.errors import missing_extra
from crossrank.reranker import Reranker
from crossrank.server.settings import ServerSettings

API_KEY_ENV = "CROSSRANK_API_KEY"


def api_key_from_env(given: str | None) -> str | None:
    """``given`` if set, else ``$CROSSRANK_API_KEY``, else None (no key required)."""
    return given or os.environ.get(API_KEY_ENV) or None


class ServeOptions(TypedDict, total=False):
    """Where and how :func:`serve` listens; the defaults are :func:`make_server`'s."""

    host: str
    port: int
    graceful_timeout_s: float
    log_level: str


def make_server(
    reranker: Reranker,
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    graceful_timeout_s: float = 30.0,
    log_level: str = "info",
    load_on_startup: bool = True,
    configure_logs: bool = True,
) -> Any:
    """A ``uvicorn.Server`` for the app (call ``.run()``, or run it in a thread in tests).

    ``configure_logs``: send the crossrank and uvicorn loggers to stderr at ``log_level`` in
    ``settings.log_format`` (False leaves logging to the caller; the access log still goes to the
    ``crossrank.server.access`` logger). uvicorn's own access log stays off: crossrank's replaces it.
    """
    try:
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG
    except ImportError as exc:
        raise missing_extra("uvicorn", "server") from exc
    from crossrank.server.access import configure_logging
    from crossrank.server.app import create_app

    app = create_app(reranker, settings, load_on_startup=load_on_startup)
    if configure_logs:
        configure_logging(log_level, settings.log_format, access=settings.access_log)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None if configure_logs else LOGGING_CONFIG,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_timeout_s),
        # The guard answers 429 itself; uvicorn's own cap is a backstop well above it (it answers 503).
        limit_concurrency=settings.max_concurrent * 4 + 16,
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(reranker: Reranker, settings: ServerSettings, **options: Unpack[ServeOptions]) -> None:
    """Serve until SIGTERM / Ctrl-C, then finish the requests in flight (``options``: see :func:`make_server`)."""
    make_server(reranker, settings, **options).run()
