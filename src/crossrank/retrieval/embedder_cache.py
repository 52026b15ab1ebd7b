"""The collection's bi-encoder, exported once into crossrank's cache, so short-lived processes skip torch.

A one-off ``crossrank query`` spends most of its life importing sentence-transformers (and with it
torch and transformers) to embed a single query. ``crossrank index`` therefore exports the
collection's embedder once (``crossrank export``'s bi-encoder folder: an ONNX fp32 graph, the
tokenizer and the pooling) into the cache, keyed by the embedder folder's content fingerprint; a
:class:`~crossrank.retrieval.pipeline.Pipeline` opening an existing collection to query it
(``create=False``) whose embedder has such an export embeds with it
(:class:`~crossrank.retrieval.portable_embedder.PortableEmbedder`: ONNX Runtime, the same vectors
as sentence-transformers within float32 rounding) and never imports torch. Collections are still
created and indexed with sentence-transformers, so Chroma records the same embedding function
either way.

Only local embedder folders are exported (a Hub id has no fingerprint to key on; the bundled
all-MiniLM-L6-v2 is a folder). ``CROSSRANK_EMBEDDER_EXPORT=0`` turns both the export and its use off.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from crossrank.errors import CrossrankError
from crossrank.retrieval.portable_embedder import (
    FOLDER_FORMAT,
    GRAPH,
    is_exported_embedder,
    read_embedder_manifest,
)

ENV = "CROSSRANK_EMBEDDER_EXPORT"
"""Set to ``0`` (or ``false`` / ``off`` / ``no``) to embed with sentence-transformers only."""


def enabled() -> bool:
    """Whether cached embedder exports are made and used (:data:`ENV`)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def cache_path(fingerprint: str) -> Path:
    """Where the export of the embedder with this content fingerprint lives."""
    from crossrank.backends.export import cache_root

    return cache_root() / "embedders" / f"{fingerprint}-v{FOLDER_FORMAT}"


def _fingerprint(spec: str) -> str | None:
    from crossrank.retrieval.embedder_record import embedder_fingerprint

    if is_exported_embedder(spec):  # already an export: nothing to stand in for it
        return None
    return embedder_fingerprint(spec)


def cached_export(spec: str) -> Path | None:
    """The cached export of the embedder ``spec`` (a resolved folder), or None when there is none to use."""
    fp = _fingerprint(spec) if enabled() else None
    return _usable(fp) if fp is not None else None


def _usable(fp: str) -> Path | None:
    """The cache folder for fingerprint ``fp`` if it holds a complete export of that embedder."""
    path = cache_path(fp)
    if not is_exported_embedder(path):
        return None
    try:
        manifest = read_embedder_manifest(path)
        size = (path / GRAPH).stat().st_size
    except (CrossrankError, OSError):
        return None
    source, graph = manifest["source"], manifest["graph"]
    if not isinstance(source, dict) or source.get("fingerprint") != fp:
        return None
    # A cut-short graph is caught here, cheaply; the embedder checks its SHA-256 when it loads.
    return path if isinstance(graph, dict) and graph.get("size") == size else None


def ensure_cached_export(spec: str, *, on_export: Callable[[], None] | None = None) -> tuple[Path | None, str]:
    """Export ``spec`` into the cache unless it is there: ``(folder, "cached" | "exported")`` or ``(None, why not)``.

    ``on_export`` is called just before an export starts (not when the export is cached), e.g. to say so.

    Never raises for a model the export cannot take (the pipeline then keeps sentence-transformers);
    two processes exporting at once both end with the one folder.
    """
    if not enabled():
        return None, f"{ENV}=0"
    fp = _fingerprint(spec)
    if fp is None:
        return None, "the embedder is not a local sentence-transformers folder"
    found = _usable(fp)
    if found is not None:
        return found, "cached"
    from crossrank.retrieval.embedder_export import export_embedder

    dest = cache_path(fp)
    if on_export is not None:
        on_export()
    if dest.exists():  # something unusable in the way (not a complete export of this embedder)
        shutil.rmtree(dest, ignore_errors=True)
    try:
        export_embedder(spec, dest)  # written aside and renamed into place: never half there
    except (CrossrankError, ImportError) as exc:
        found = _usable(fp)  # another process may have finished the same export meanwhile
        return (found, "cached") if found is not None else (None, str(exc))
    return dest, "exported"
