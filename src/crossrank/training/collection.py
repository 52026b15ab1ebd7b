"""Which embedder built a Chroma collection, and re-embedding one with a new embedder, swapped in safely.

Every collection this module builds records its embedder in its metadata
(:mod:`crossrank.retrieval.embedder_record`), so queries never mix embedders.

:func:`reembed` builds the new collection next to the old one under a staging name, verifies it
(document count, and probe queries that must find their own documents), and only then swaps the
names: the old collection is renamed ``<name>--previous-<time>`` and kept until the user deletes
it. Any failure before the swap deletes the staging collection and leaves the old one untouched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import CollectionNotFoundError, VectorStoreError
from crossrank.retrieval.embedder_record import (
    embedder_record,
)

BUILT_FROM_KEY = "crossrank:built_from"
"""Collection metadata key: the collection whose documents were re-embedded into this one."""


def get_existing(client: Any, name: str) -> Any:
    """A collection's handle without an embedding function (metadata and reads only; no model loads)."""
    try:
        return client.get_collection(name)
    except Exception as exc:
        text = str(exc).lower()
        if "does not exist" in text or "not found" in text or type(exc).__name__ == "NotFoundError":
            raise CollectionNotFoundError(
                f"collection {name!r} does not exist; create it with `crossrank index PATH --collection {name}`"
            ) from exc
        raise VectorStoreError(f"Chroma failed opening collection {name!r}: {exc}") from exc


@dataclass(frozen=True)
class Snapshot:
    """Every document of a collection: ids, texts and metadata, in Chroma's order."""

    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]

    def as_docs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """id -> (text, metadata)."""
        return {i: (t, m) for i, t, m in zip(self.ids, self.texts, self.metadatas)}


def snapshot(collection: Any, *, page: int = 2000) -> Snapshot:
    """Read all documents of ``collection`` (paged, so a large collection is not one huge request)."""
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    total = int(collection.count())
    for offset in range(0, total, page):
        got = collection.get(include=["documents", "metadatas"], limit=page, offset=offset)
        ids += [str(i) for i in got["ids"]]
        texts += [d or "" for d in got.get("documents") or [""] * len(got["ids"])]
        metas += [dict(m or {}) for m in got.get("metadatas") or [{}] * len(got["ids"])]
    return Snapshot(ids, texts, metas)


@dataclass(frozen=True)
class SwapReport:
    """What :func:`reembed` did: the collection that now serves the name and where the old one went."""

    collection: str
    previous: str | None
    count: int
    embedder: str
    probes: int
    seconds: float
    swapped: bool
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "collection": self.collection,
            "previous": self.previous,
            "count": self.count,
            "embedder": self.embedder,
            "probes": self.probes,
            "seconds": round(self.seconds, 2),
            "swapped": self.swapped,
        }


def _valid_name(name: str) -> str:
    """Chroma's rule: 3-512 of [a-zA-Z0-9._-], starting and ending with a letter or digit."""
    return name[:500].rstrip("._-")


def reembed(
    client: Any,
    name: str,
    embedding_function: Any,
    embedder: str,
    *,
    swap: bool = True,
    batch_size: int = 64,
    probes: int = 3,
    progress: bool = True,
    staging: str | None = None,
    verify: Callable[[Any, Snapshot], None] | None = None,
) -> SwapReport:
    """Re-embed every document of collection ``name`` with ``embedding_function`` into a new collection.

    The new collection records ``embedder`` in its metadata. With ``swap`` it then takes over
    ``name`` (the old one is renamed ``<name>--previous-<UTC time>`` and kept); without, it stays
    under its staging name ``<name>--<staging>`` (default: the embedder folder's name) for the user to
    try; a collection already under that name is a leftover of an interrupted build and is replaced.
    ``verify`` is an extra check run after the built-in ones (tests use it to fail on purpose). Raises
    ``VectorStoreError`` when building or verifying fails; the old collection is then untouched
    and the staging collection removed.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    old = get_existing(client, name)
    docs = snapshot(old)
    if not docs.ids:
        raise VectorStoreError(f"collection {name!r} is empty: nothing to re-embed")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    staging = _valid_name(f"{name}--{staging or Path(embedder).name or 'student'}")
    if staging == name:
        raise VectorStoreError(f"the staging name {staging!r} is the collection's own name")
    _drop(client, staging)
    meta = {
        "hnsw:space": (old.metadata or {}).get("hnsw:space", "cosine"),
        **{k: v for k, v in (old.metadata or {}).items() if not k.startswith(("hnsw:", "crossrank:"))},
        **embedder_record(embedder),
        BUILT_FROM_KEY: name,
    }
    try:
        new = client.create_collection(staging, embedding_function=embedding_function, metadata=meta)
    except Exception as exc:
        raise VectorStoreError(f"could not create collection {staging!r} ({exc}); {name!r} is unchanged") from exc
    try:
        bar = tqdm(total=len(docs.ids), unit="doc", desc=f"re-embedding {name}", disable=not progress)
        for s in range(0, len(docs.ids), batch_size):
            part = slice(s, s + batch_size)
            new.add(
                ids=docs.ids[part],
                documents=docs.texts[part],
                metadatas=[m or {"source": ""} for m in docs.metadatas[part]],
            )
            bar.update(len(docs.ids[part]))
        bar.close()
        checked = _verify(new, docs, probes)
        if verify is not None:
            verify(new, docs)
    except Exception as exc:
        _drop(client, staging)
        if isinstance(exc, VectorStoreError):
            raise VectorStoreError(f"{exc}; {name!r} is unchanged") from exc
        raise VectorStoreError(
            f"re-embedding {name!r} failed ({type(exc).__name__}: {exc}); {name!r} is unchanged"
        ) from exc
    if not swap:
        return SwapReport(staging, None, len(docs.ids), embedder, checked, time.perf_counter() - t0, False, meta)
    previous = _valid_name(f"{name}--previous-{stamp}")
    try:
        old.modify(name=previous)
    except Exception as exc:
        _drop(client, staging)
        raise VectorStoreError(f"could not rename {name!r} to {previous!r} ({exc}); {name!r} is unchanged") from exc
    try:
        new.modify(name=name)
    except Exception as exc:
        try:
            old.modify(name=name)
        except Exception as back:
            raise VectorStoreError(
                f"swap failed ({exc}) and {previous!r} could not be renamed back to {name!r} ({back}): rename it "
                f"by hand; the re-embedded collection is {staging!r}"
            ) from exc
        _drop(client, staging)
        raise VectorStoreError(f"could not rename {staging!r} to {name!r} ({exc}); {name!r} is unchanged") from exc
    return SwapReport(name, previous, len(docs.ids), embedder, checked, time.perf_counter() - t0, True, meta)


def _verify(new: Any, docs: Snapshot, probes: int) -> int:
    """Count, then probe queries: a document's own text must find that document at the top distance.

    A tie with the top (distance within 1e-4) passes: near-duplicate documents, or a model that maps
    several texts to one point, can rank another document first by a rounding error.
    """
    count = int(new.count())
    if count != len(docs.ids):
        raise VectorStoreError(f"the re-embedded collection holds {count} documents, expected {len(docs.ids)}")
    n = min(probes, len(docs.ids))
    picks = sorted({round(i * (len(docs.ids) - 1) / max(1, n - 1)) for i in range(n)}) if n else []
    for i in picks:
        text = docs.texts[i]
        if not text.strip():
            continue
        got = new.query(query_texts=[text], n_results=min(10, count), include=["distances"])
        ids = list(got["ids"][0])
        dists = list((got.get("distances") or [[]])[0] or [])
        own = ids.index(docs.ids[i]) if docs.ids[i] in ids else -1
        if own < 0 or not dists or dists[own] > dists[0] + 1e-4:
            raise VectorStoreError(
                f"probe query with the text of document {docs.ids[i]!r} did not find it first (got {ids[:3]})"
            )
    return len(picks)


def _drop(client: Any, name: str) -> None:
    """Delete a collection if it exists (cleanup of a failed build)."""
    with contextlib.suppress(Exception):
        client.delete_collection(name)


def collection_metadata(client: Any, name: str) -> Mapping[str, Any]:
    """A collection's metadata (empty when it has none)."""
    return dict(get_existing(client, name).metadata or {})
