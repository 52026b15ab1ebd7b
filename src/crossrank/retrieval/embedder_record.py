"""Which embedder built a Chroma collection, recorded in its metadata, so queries never mix embedders.

Vectors from two embedders are not comparable: a query embedded by one model and matched against
documents embedded by another returns confident nonsense. Every collection crossrank creates
records its embedder (:data:`EMBEDDER_KEY`, plus a content fingerprint of a local model folder,
:data:`FINGERPRINT_KEY`); :func:`check_embedder` refuses a mismatch with
:class:`~crossrank.errors.EmbedderMismatchError`, and the pipeline queries with the recorded
embedder when none is named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crossrank.errors import EmbedderMismatchError

EMBEDDER_KEY = "crossrank:embedder"
"""Collection metadata key: the embedder (model id or folder) that made the collection's vectors."""
FINGERPRINT_KEY = "crossrank:embedder_fingerprint"
"""Collection metadata key: content hash of the embedder folder, so a moved folder still matches."""


def embedder_fingerprint(spec: str) -> str | None:
    """A content hash of a local embedder folder (config, tokenizer, weights); None for a Hub id.

    A folder made by ``crossrank export`` of a bi-encoder has its source's hash (from its manifest):
    it embeds as its source does, so either may query a collection the other built.
    """
    from crossrank.model_files import fingerprint
    from crossrank.retrieval.portable_embedder import is_exported_embedder, read_embedder_manifest

    path = Path(spec).expanduser()
    if is_exported_embedder(path):
        fp = read_embedder_manifest(path)["source"].get("fingerprint")
        return str(fp) if fp else None
    return fingerprint(path) if path.is_dir() else None


def embedder_record(spec: str) -> dict[str, str]:
    """The metadata entries that name ``spec`` as a collection's embedder."""
    record = {EMBEDDER_KEY: spec}
    fp = embedder_fingerprint(spec)
    if fp:
        record[FINGERPRINT_KEY] = fp
    return record


def recorded_embedder(collection: Any) -> tuple[str | None, str | None]:
    """``(embedder, fingerprint)`` a collection records, or what Chroma persisted for its embedding function.

    Collections made before crossrank recorded embedders still carry the model name in Chroma's own
    embedding-function configuration (Chroma 1.x); that is used when the metadata has none.
    """
    meta = dict(getattr(collection, "metadata", None) or {})
    spec = meta.get(EMBEDDER_KEY)
    if isinstance(spec, str) and spec:
        fp = meta.get(FINGERPRINT_KEY)
        return spec, fp if isinstance(fp, str) else None
    try:  # Chroma's persisted configuration: {"embedding_function": {"config": {"model_name": ...}}}
        config = collection._model.configuration_json or {}
        name = (config.get("embedding_function") or {}).get("config", {}).get("model_name")
    except Exception:
        name = None
    return (name, None) if isinstance(name, str) and name else (None, None)


def same_embedder(spec: str, recorded: str, recorded_fingerprint: str | None) -> bool:
    """Whether ``spec`` is the embedder recorded as ``recorded`` (by content when both are local folders)."""
    if recorded_fingerprint:
        fp = embedder_fingerprint(spec)
        if fp is not None:
            return fp == recorded_fingerprint
    norm = os.path.abspath if os.path.isdir(spec) or os.path.isdir(recorded) else str
    return norm(spec) == norm(recorded) or _hub_name(_source(spec)) == _hub_name(_source(recorded))


def _source(spec: str) -> str:
    """The model an exported embedder folder was made from, as its manifest names it; else ``spec``."""
    from crossrank.retrieval.portable_embedder import is_exported_embedder, read_embedder_manifest

    return str(read_embedder_manifest(spec)["source"]["model"]) if is_exported_embedder(spec) else spec


def _hub_name(spec: str) -> str:
    """``sentence-transformers/all-MiniLM-L6-v2`` and ``all-MiniLM-L6-v2`` name one model."""
    return spec.removeprefix("sentence-transformers/")


def check_embedder(collection: Any, spec: str) -> None:
    """Raise :class:`EmbedderMismatchError` if ``collection`` records an embedder other than ``spec``.

    A collection that records none is accepted (nothing to compare with).
    """
    recorded, fp = recorded_embedder(collection)
    if recorded is None or same_embedder(spec, recorded, fp):
        return
    raise EmbedderMismatchError(
        f"collection {collection.name!r} was embedded with {recorded!r}, but {spec!r} was asked to query it: "
        f"vectors of two embedders do not mix. Pass --embedder {recorded} (or leave --embedder out), or "
        "re-embed the collection with `crossrank distill` or `crossrank index`"
    )
