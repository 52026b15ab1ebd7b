"""Bring a :class:`~crossrank.late.store.LateVectorStore` in step with its Chroma collection.

:func:`sync_store` is the one indexing routine (``crossrank index --late-interaction MODEL`` and
``Pipeline.index_late`` run it after the chunks are in Chroma): it pages through the collection's
ids and documents, encodes the chunks whose id has no vectors or whose text changed (the stored
text hash differs), stores them batch by batch (each batch durable before it is indexed; see
:mod:`crossrank.late.store`), and forgets ids Chroma no longer has. So add, update, delete and
re-index all reduce to one comparison, and a run that was killed resumes where it stopped: the
batches it committed are current and are not encoded again.

The collection is any object with Chroma's ``count()`` and ``get(include=..., limit=, offset=)``
(embedded ``PersistentClient`` and ``HttpClient`` collections alike); this module does not import
chromadb.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crossrank.errors import VectorStoreError
from crossrank.late.maxsim import pack
from crossrank.late.model import MultiVectorModel
from crossrank.late.store import LateVectorStore, text_hash

#: Chunks read from Chroma per request while syncing.
PAGE = 1000


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_store` did: chunks in the collection, encoded, deleted, unchanged; time; store size."""

    chunks: int
    encoded: int
    deleted: int
    unchanged: int
    seconds: float
    store_bytes: int
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "encoded": self.encoded,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "seconds": round(self.seconds, 2),
            "store_bytes": self.store_bytes,
            "tokens": self.tokens,
        }


def _chroma(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise VectorStoreError(f"Chroma request failed while syncing late-interaction vectors ({exc})") from exc


def sync_store(
    collection: Any,
    store: LateVectorStore,
    model: MultiVectorModel,
    *,
    precision: str = "fp16",
    pool_factor: int | None = None,
    rebuild: bool = False,
    batch_size: int = 32,
    commit_every: int = 256,
    progress: bool = True,
    fix: str = "crossrank index --collection NAME --late-interaction MODEL --rebuild",
) -> SyncReport:
    """Store every chunk's token vectors, keyed by Chroma id, and drop ids Chroma no longer has.

    ``rebuild`` empties the store first (required to switch models, precision or pooling: a store
    holds one model's vectors, and :class:`~crossrank.late.errors.LateModelMismatchError` says so,
    naming ``fix``). Chunks are encoded ``batch_size`` at a time and committed to the store
    ``commit_every`` at a time (each commit costs a few fsyncs; a killed run loses at most the
    uncommitted ones). Progress is shown per chunk.
    """
    t0 = time.perf_counter()
    if rebuild:
        store.clear()
    store.bind(model.record.to_dict(), precision=precision, pool_factor=pool_factor, fix=fix)
    store.begin_run()
    try:
        return _sync(collection, store, model, precision, pool_factor, batch_size, commit_every, progress, t0)
    except BaseException:
        store.abandon_run()  # the marker stays: the next open says the run did not finish
        raise


def _sync(
    collection: Any,
    store: LateVectorStore,
    model: MultiVectorModel,
    precision: str,
    pool_factor: int | None,
    batch_size: int,
    commit_every: int,
    progress: bool,
    t0: float,
) -> SyncReport:
    from tqdm.auto import tqdm

    total = int(_chroma(collection.count))
    have = store.hashes()
    seen: set[str] = set()
    encoded = unchanged = tokens = 0
    bar = tqdm(total=total, unit="chunk", desc="late-interaction vectors", disable=not progress)
    offset = 0
    while True:
        page = _chroma(collection.get, include=["documents"], limit=PAGE, offset=offset)
        ids = list(page.get("ids") or [])
        if not ids:
            break
        offset += len(ids)
        docs = page.get("documents") or [None] * len(ids)
        todo: list[tuple[str, str]] = []
        for i, d in zip(ids, docs):
            seen.add(i)
            text = d or ""
            if have.get(i) == text_hash(text):
                unchanged += 1
            else:
                todo.append((i, text))
        bar.update(len(ids) - len(todo))
        for s in range(0, len(todo), max(1, commit_every)):
            part = todo[s : s + max(1, commit_every)]
            texts = [t for _, t in part]
            packed = []
            for b in range(0, len(texts), batch_size):
                floats = model.encode_documents(
                    texts[b : b + batch_size], batch_size=batch_size, pool_factor=pool_factor
                )
                packed += [pack(v, precision) for v in floats]
                bar.update(len(floats))
            store.put([i for i, _ in part], texts, packed, model.truncated(texts))
            encoded += len(part)
            tokens += sum(p.tokens for p in packed)
        if len(ids) < PAGE:
            break
    bar.close()
    gone = [i for i in have if i not in seen]
    deleted = store.delete(gone) if gone else 0
    store.finish_run()
    return SyncReport(
        chunks=len(seen),
        encoded=encoded,
        deleted=deleted,
        unchanged=unchanged,
        seconds=time.perf_counter() - t0,
        store_bytes=store.size_bytes(),
        tokens=tokens,
    )
