"""Chroma access with clear errors: embedded ``PersistentClient`` by default, ``HttpClient`` for a server."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from crossrank.errors import CollectionNotFoundError, InvalidArgumentError, VectorStoreError, missing_extra

DEFAULT_COLLECTION = "crossrank"


def default_db_path() -> Path:
    """``CROSSRANK_DB`` if set, else ``<user data dir>/crossrank/chroma``."""
    env = os.environ.get("CROSSRANK_DB")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("crossrank")) / "chroma"


def _chromadb() -> Any:
    try:
        import chromadb
    except ImportError as exc:
        raise missing_extra("chromadb", "chroma") from exc
    return chromadb


def open_client(db: str | os.PathLike[str] | None = None, url: str | None = None, *, timeout: float = 10.0) -> Any:
    """An embedded client on ``db`` (default path if None), or an HTTP client when ``url`` is given."""
    chromadb = _chromadb()
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if url:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if not parsed.hostname:
            raise InvalidArgumentError(f"--chroma-url {url!r} is not a URL like http://127.0.0.1:8000")
        port = parsed.port or (443 if parsed.scheme == "https" else 8000)
        with contextlib.suppress(Exception):  # older chromadb: setting unknown
            settings.chroma_query_request_timeout_seconds = int(max(1, timeout))
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname, port=port, ssl=parsed.scheme == "https", settings=settings
            )
            client.heartbeat()
        except Exception as exc:
            raise VectorStoreError(
                f"Chroma server at {parsed.hostname}:{port} is unreachable ({exc}); start it with "
                f"`chroma run --path DIR --port {port}` or drop --chroma-url to use the embedded database"
            ) from exc
        return client
    path = Path(db).expanduser() if db is not None else default_db_path()
    try:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    except Exception as exc:
        raise VectorStoreError(f"cannot open the Chroma database at {path} ({exc})") from exc


def existing_collection(client: Any, name: str) -> Any | None:
    """The named collection without an embedding function (metadata only: loads no model), or None."""
    try:
        return client.get_collection(name)
    except Exception:
        return None


def get_collection(
    client: Any, name: str, embedding_function: Any, *, create: bool, embedder: str | None = None
) -> Any:
    """The named collection (cosine space); a missing one is an error unless ``create``.

    A collection created here records ``embedder`` in its metadata (see ``embedder_record``).
    """
    try:
        if create:
            from crossrank.retrieval.embedder_record import embedder_record

            meta = {"hnsw:space": "cosine", **(embedder_record(embedder) if embedder else {})}
            return client.get_or_create_collection(name, embedding_function=embedding_function, metadata=meta)
        return client.get_collection(name, embedding_function=embedding_function)
    except Exception as exc:
        text = str(exc).lower()
        if "does not exist" in text or "not found" in text or type(exc).__name__ == "NotFoundError":
            try:
                names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
            except Exception:
                names = []
            known = f" (existing: {', '.join(names)})" if names else " (the database is empty)"
            raise CollectionNotFoundError(
                f"collection {name!r} does not exist{known}; create it with `crossrank index PATH --collection {name}`"
            ) from exc
        raise VectorStoreError(f"Chroma failed opening collection {name!r}: {exc}") from exc
