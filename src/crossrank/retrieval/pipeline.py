"""Two-stage retrieval: Chroma recalls candidates with a bi-encoder, crossrank reranks them.

Stage 1 returns Chroma *distances* (cosine distance: lower is closer); they are reported as
``distance`` and never presented as relevance. Stage 2's ``score`` is the cross-encoder's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import TypedDict, Unpack

from crossrank.errors import CrossrankError, DatasetError, InvalidArgumentError, VectorStoreError
from crossrank.inputs import check_positive_int, check_query, check_top_n
from crossrank.model_files import default_model
from crossrank.reranker import Reranker
from crossrank.results import Candidate, RankedResults
from crossrank.retrieval.bm25 import BM25Index
from crossrank.retrieval.chroma import DEFAULT_COLLECTION, existing_collection, get_collection, open_client
from crossrank.retrieval.embedder_cache import cached_export
from crossrank.retrieval.embedder_record import check_embedder, recorded_embedder
from crossrank.retrieval.embeddings import embedding_function, resolve_embedder
from crossrank.retrieval.first_stage import first_stage
from crossrank.retrieval.indexing import Chunk, discover, iter_chunks
from crossrank.retrieval.portable_embedder import PortableEmbedder

if TYPE_CHECKING:
    from crossrank.cascade import Cascade
    from crossrank.late import LateInteractionScorer, LateVectorStore, SyncReport
    from crossrank.retrieval.late_stage import LateStage

log = logging.getLogger("crossrank")


@dataclass(frozen=True)
class Hit:
    """One search result: where stage 1 put it (rank, distance) and where stage 2 put it (rank, score)."""

    rank: int
    first_stage_rank: int
    distance: float | None
    score: float
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    windows: int = 1
    truncated: bool = False

    @property
    def movement(self) -> int:
        return self.first_stage_rank - self.rank


@dataclass(frozen=True)
class SearchResults:
    query: str
    hits: list[Hit]
    candidates: int
    retrieve_ms: float
    rerank_ms: float
    model: str
    backend: str
    normalize: str
    filtered: int = 0

    @classmethod
    def from_ranked(
        cls, query: str, found: list[tuple[Candidate, float]], ranked: RankedResults, retrieve_s: float, rerank_s: float
    ) -> SearchResults:
        """The hits of ``ranked`` (a rerank of ``found``'s candidates), with stage 1's distances and both timings."""
        hits = [
            Hit(
                rank=r.rank,
                first_stage_rank=r.first_stage_rank,
                distance=None if math.isnan(found[r.index][1]) else found[r.index][1],
                score=r.score,
                id=r.id or "",
                text=r.text,
                metadata=dict(r.metadata),
                windows=r.windows,
                truncated=r.truncated,
            )
            for r in ranked
        ]
        return cls(
            query=query,
            hits=hits,
            candidates=len(found),
            retrieve_ms=retrieve_s * 1000,
            rerank_ms=rerank_s * 1000,
            model=ranked.model,
            backend=ranked.backend,
            normalize=ranked.normalize,
            filtered=len(ranked.filtered),
        )

    @property
    def total_ms(self) -> float:
        return self.retrieve_ms + self.rerank_ms

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_ms"] = self.total_ms
        return d


class SearchOptions(TypedDict, total=False):
    """Options of :meth:`Pipeline.search` / :meth:`Pipeline.asearch`.

    ``top_n``: hits kept (default 10); ``candidates``: stage 1's depth (default: the pipeline's);
    ``where`` / ``where_document``: Chroma filters (stage 1 only); ``threshold``: drop reranked
    scores below it.
    """

    top_n: int
    candidates: int | None
    where: dict[str, Any] | None
    where_document: dict[str, Any] | None
    threshold: float | None


@dataclass
class _SearchCall:
    """One search's options, checked (with the query) before either stage runs."""

    query: str
    top_n: int = 10
    candidates: int | None = None
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    threshold: float | None = None
    t0: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        check_query(self.query)
        check_top_n(self.top_n)
        self.t0 = time.perf_counter()  # stage 1 starts once the call is checked


@dataclass(frozen=True)
class IndexReport:
    files: int
    chunks: int
    removed: int
    seconds: float
    collection: str
    count: int
    late: SyncReport | None = None  # the late-interaction store's sync, when the pipeline has a late stage
    embedded: int = 0  # chunks embedded this run; the other ``chunks - embedded`` were unchanged in Chroma


class Pipeline:
    """A Chroma collection plus a reranker: ``search(query)`` runs both stages.

    ``db`` is the embedded database folder (default ``CROSSRANK_DB`` or the user data dir);
    ``chroma_url`` switches to a Chroma server. ``reranker`` is a ``Reranker`` or a model id/path
    (default: :func:`crossrank.model_files.default_model`). ``hybrid=True`` fuses BM25 with the
    dense candidates (see :mod:`crossrank.retrieval.first_stage`). The score cache is on by default
    here (repeated queries over the same chunks skip the model).

    Opened to query (``create=False``), an existing collection whose embedder ``crossrank index``
    exported into the cache embeds with that ONNX export and imports no torch
    (:mod:`crossrank.retrieval.embedder_cache`); ``embedder_runtime`` says which runs
    (``"sentence-transformers"``, ``"onnxruntime (cached export)"`` or ``"onnxruntime (exported folder)"``).

    ``late`` adds a late-interaction stage (a multi-vector model folder or a
    :class:`~crossrank.late.LateInteractionScorer`): the first stage retrieves ``late_candidates``,
    late interaction reorders them by MaxSim over the token vectors stored beside the collection
    (``late_store``; default: a given scorer's own store, else
    :func:`~crossrank.retrieval.late_stage.default_store_path`), and the cross-encoder reranks the
    best ``candidates`` of that order (``candidates=0``: late interaction alone). ``index_paths``
    then also stores every chunk's token vectors (see :meth:`index_late`).
    """

    def __init__(
        self,
        collection: str = DEFAULT_COLLECTION,
        *,
        db: str | os.PathLike[str] | None = None,
        chroma_url: str | None = None,
        embedder: str | os.PathLike[str] | None = None,
        reranker: Reranker | str | os.PathLike[str] | None = None,
        candidates: int = 100,
        hybrid: bool = False,
        create: bool = False,
        timeout: float = 10.0,
        late: str | os.PathLike[str] | LateInteractionScorer | None = None,
        late_candidates: int = 200,
        late_store: str | os.PathLike[str] | LateVectorStore | None = None,
        **reranker_kwargs: Any,
    ) -> None:
        late_only = late is not None and candidates == 0
        self.candidates = 0 if late_only else check_positive_int("candidates", candidates) or 100
        self.client = open_client(db, chroma_url, timeout=timeout)
        self.collection_name = collection
        existing = existing_collection(self.client, collection)
        recorded = recorded_embedder(existing)[0] if existing is not None else None
        named = os.fspath(embedder) if embedder is not None else os.environ.get("CROSSRANK_EMBEDDER")
        # Query with the embedder that built the collection unless one is named; a named one must match.
        self.embedder = resolve_embedder(named if named is not None else recorded)
        if existing is not None:
            check_embedder(existing, self.embedder)
        # embedder_runtime: what embeds queries and chunks, for reports; embedder_export: the cached export used.
        self._ef, self.embedder_runtime, self.embedder_export = self._embedding_function(
            self.embedder, existing is not None and not create
        )
        # An exported embedder folder (the light install) embeds here and Chroma gets vectors: Chroma
        # would refuse it as a second embedding function beside the one it persisted for the collection.
        self._vectors: PortableEmbedder | None = self._ef if isinstance(self._ef, PortableEmbedder) else None
        ef = None if self._vectors is not None else self._ef
        self.collection = get_collection(self.client, collection, ef, create=create, embedder=self.embedder)
        self.hybrid = hybrid
        self._bm25: tuple[int, BM25Index, dict[str, tuple[str, dict[str, Any]]]] | None = None
        self._lock = threading.Lock()  # the reranker and the BM25 index are built once, whatever the threads
        self._reranker = reranker if isinstance(reranker, Reranker) else None
        self._reranker_spec = None if reranker is None or isinstance(reranker, Reranker) else os.fspath(reranker)
        self._reranker_kwargs = {"cache_size": 10_000, **reranker_kwargs}
        self.late: LateStage | None = None
        if late is not None:
            from crossrank.late import LateInteractionScorer
            from crossrank.retrieval.late_stage import LateStage, default_store_path

            own = late.store if isinstance(late, LateInteractionScorer) else None  # a given scorer's own store
            where = late_store if late_store is not None else own or default_store_path(db, chroma_url, collection)
            self.late = LateStage(
                late, collection=self.collection, collection_name=collection, store=where, candidates=late_candidates
            )

    @staticmethod
    def _embedding_function(spec: str, query_only: bool) -> tuple[Any, str, Path | None]:
        """``(embedding function, runtime, cached export)``: opened to query (not to index), an existing
        collection's embedder runs from its cached ONNX export when there is one (no torch imported),
        else from ``spec`` itself.

        Collections are made and indexed with sentence-transformers (Chroma persists that embedding
        function, and it batches long lists by length); see :mod:`crossrank.retrieval.embedder_cache`.
        """
        cached = cached_export(spec) if query_only else None
        if cached is not None:
            try:
                return PortableEmbedder(cached), "onnxruntime (cached export)", cached
            except CrossrankError as exc:  # damaged in the cache: sentence-transformers still works
                log.warning("ignoring the cached embedder export %s: %s", cached, exc)
        ef = embedding_function(spec)
        if isinstance(ef, PortableEmbedder):
            return ef, "onnxruntime (exported folder)", None
        return ef, "sentence-transformers", None

    @property
    def reranker(self) -> Reranker:
        """Made on first use (once, whatever the threads), so indexing never loads (or needs) the cross-encoder."""
        if self._reranker is None:
            with self._lock:
                if self._reranker is None:
                    self._reranker = Reranker(self._reranker_spec or default_model(), **self._reranker_kwargs)
        return self._reranker

    # ------------------------------------------------------------------ indexing
    def count(self) -> int:
        """Chunks in the collection."""
        return int(self._call(self.collection.count))

    def add_chunks(self, chunks: Sequence[Chunk], *, batch_size: int = 128) -> int:
        """Upsert chunks by id in batches, embedding them with the collection's embedder; returns how
        many were embedded.

        A chunk whose id already holds the same text and metadata is left as it is: re-indexing
        unchanged files costs one lookup per batch, not a forward pass per chunk.
        """
        embedded = 0
        for s in range(0, len(chunks), batch_size):
            part = chunks[s : s + batch_size]
            changed = self._changed(part)
            if changed:
                vectors = {"embeddings": self._vectors.embed([c.text for c in changed])} if self._vectors else {}
                self._call(
                    self.collection.upsert,
                    ids=[c.id for c in changed],
                    documents=[c.text for c in changed],
                    metadatas=[self._metadata(c) for c in changed],
                    **vectors,
                )
                embedded += len(changed)
                self._bm25 = None  # same count, other texts: the BM25 index must be rebuilt
            self._pretokenize([c.text for c in part])
        return embedded

    @staticmethod
    def _metadata(chunk: Chunk) -> dict[str, Any]:
        return dict(chunk.metadata) if chunk.metadata else {"source": ""}

    def _changed(self, part: Sequence[Chunk]) -> list[Chunk]:
        """The chunks of ``part`` that are new or whose stored text or metadata differ."""
        got = self._call(self.collection.get, ids=[c.id for c in part], include=["documents", "metadatas"])
        stored = {i: (d, dict(m or {})) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}
        return [c for c in part if stored.get(c.id) != (c.text, self._metadata(c))]

    def _pretokenize(self, texts: list[str]) -> None:
        """Put new chunks' token ids in the reranker's token cache when this pipeline names a reranker.

        Only the tokenizer is loaded (never the weights), so indexing stays cheap; a pipeline made
        without a reranker (``crossrank index``) skips it. A model that cannot be read here is left
        for the first search to report.
        """
        if self._reranker is None and self._reranker_spec is None:
            return
        try:
            self.reranker.pretokenize(texts)
        except CrossrankError as exc:
            log.warning("could not pre-tokenize the indexed chunks for the reranker (%s)", exc)

    def warmup(self, *, pretokenize: bool = True, limit: int | None = None) -> int:
        """Load the reranker and pre-tokenize the collection's documents, so the first search pays for neither.

        Documents are read from the collection page by page until ``limit`` (default: all) or until
        the token cache is full. Returns how many documents were tokenized (0 for rerankers that
        keep no token cache, e.g. remote ones).
        """
        self.reranker.warmup()
        if not pretokenize:
            return 0
        done, offset, page = 0, 0, 512
        total = self.count() if limit is None else min(limit, self.count())
        while offset < total:
            info = self.reranker.token_cache_info()
            if info is None or info.bytes >= info.max_bytes * 0.95:
                break
            got = self._call(self.collection.get, include=["documents"], limit=min(page, total - offset), offset=offset)
            docs = [d for d in (got.get("documents") or []) if d]
            if not got["ids"]:
                break
            done += self.reranker.pretokenize(docs) if docs else 0
            offset += len(got["ids"])
        return done

    def index_paths(
        self,
        paths: Sequence[str | Path],
        *,
        chunk_size: int = 1000,
        overlap: int = 200,
        batch_size: int = 128,
        progress: bool = True,
    ) -> IndexReport:
        """Index files (upsert by stable id; chunks a file no longer has are deleted, and so are the chunks
        of files that have left a folder being indexed: deleted, renamed or moved away)."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        files = discover(paths)
        total = removed = 0
        bar = tqdm(total=len(files), unit="file", desc="indexing", disable=not progress)
        embedded = 0
        owner: dict[str, Path] = {}  # chunk id -> the file that gave it in this run
        for path, chunks in iter_chunks(files, chunk_size, overlap):
            bar.set_postfix_str(path.name[-30:])
            for c in chunks:
                if owner.setdefault(c.id, path) != path:
                    raise DatasetError(
                        f"{path} and {owner[c.id]} both give a chunk the id {c.id!r} (JSONL '_id' / 'id'): "
                        "ids must be unique across the files indexed together, or one replaces the other"
                    )
            embedded += self.add_chunks(chunks, batch_size=batch_size)
            keep = {c.id for c in chunks}
            src = str(path.resolve())
            existing = self._call(self.collection.get, where={"source": src}, include=[])["ids"]
            stale = [i for i in existing if i not in keep]
            if stale:
                self._call(self.collection.delete, ids=stale)
                self._bm25 = None
            removed += len(stale)
            total += len(chunks)
            bar.update(1)
        bar.close()
        removed += self._remove_vanished(paths, files)
        late = self.index_late(progress=progress) if self.late is not None else None
        return IndexReport(
            len(files), total, removed, time.perf_counter() - t0, self.collection_name, self.count(), late, embedded
        )

    def _remove_vanished(self, paths: Sequence[str | Path], files: Sequence[Path]) -> int:
        """Delete the chunks whose source file lies under one of the indexed folders but was not found
        there now (deleted, renamed, moved away, or now skipped as hidden); returns how many."""
        roots = [Path(p).expanduser().resolve() for p in paths if Path(p).expanduser().is_dir()]
        if not roots:
            return 0
        present = {str(f.resolve()) for f in files}
        gone: list[str] = []
        offset, page = 0, 5000
        while True:
            got = self._call(self.collection.get, include=["metadatas"], limit=page, offset=offset)
            for i, meta in zip(got["ids"], got["metadatas"] or []):
                src = str((meta or {}).get("source") or "")
                if src and src not in present and any(Path(src).is_relative_to(r) for r in roots):
                    gone.append(i)
            if len(got["ids"]) < page:
                break
            offset += page
        for s in range(0, len(gone), page):
            self._call(self.collection.delete, ids=gone[s : s + page])
        if gone:
            self._bm25 = None
        return len(gone)

    def index_late(
        self, *, rebuild: bool = False, batch_size: int = 32, commit_every: int = 256, progress: bool = True
    ) -> SyncReport:
        """Store the late-interaction token vectors of every chunk in the collection, keyed by Chroma id.

        Only chunks without vectors or whose text changed are encoded; ids Chroma no longer has are
        dropped; vectors are committed ``commit_every`` chunks at a time, and a killed run resumes
        from its last commit. ``rebuild`` starts the store over (needed to change the model,
        precision or token pooling). Needs ``late=`` on the pipeline.
        """
        if self.late is None:
            raise InvalidArgumentError("index_late needs a late-interaction model: Pipeline(..., late=MODEL)")
        return self.late.index(rebuild=rebuild, batch_size=batch_size, commit_every=commit_every, progress=progress)

    # ------------------------------------------------------------------ search
    def _bm25_index(self) -> tuple[BM25Index, dict[str, tuple[str, dict[str, Any]]]]:
        """BM25 over the collection's documents, rebuilt when the collection's size changes."""
        n = self.count()
        with self._lock:
            if self._bm25 is None or self._bm25[0] != n:
                got = self._call(self.collection.get, include=["documents", "metadatas"])
                docs = {i: (d or "", dict(m or {})) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}
                self._bm25 = (n, BM25Index(list(docs), [t for t, _ in docs.values()]), docs)
            return self._bm25[1], self._bm25[2]

    def dense_search(
        self,
        query: str,
        k: int,
        *,
        where: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
    ) -> list[tuple[Candidate, float]]:
        """The collection's ``k`` nearest chunks to ``query``: (candidate, cosine distance), nearest first."""
        res = self._call(
            self.collection.query,
            **({"query_embeddings": self._vectors.embed([query])} if self._vectors else {"query_texts": [query]}),
            n_results=k,
            where=where,
            where_document=where_document,
            include=["documents", "metadatas", "distances"],
        )
        ids = res["ids"][0]
        docs = (res.get("documents") or [[]])[0] or []
        metas = (res.get("metadatas") or [[]])[0] or [{}] * len(ids)
        dists = (res.get("distances") or [[]])[0] or [None] * len(ids)
        return [
            (Candidate(text=d or "", id=i, metadata=dict(m or {}), score=dist), float(dist))
            for i, d, m, dist in zip(ids, docs, metas, dists)
        ]

    def dense_ids(self, query: str, k: int) -> list[str]:
        """Ids of :meth:`dense_search`'s result: the dense retriever :func:`first_stage` takes."""
        return [c.id or "" for c, _ in self.dense_search(query, k)]

    def retrieve(
        self,
        query: str,
        *,
        candidates: int | None = None,
        where: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
    ) -> list[tuple[Candidate, float]]:
        """Stage 1 only: (candidate, cosine distance) pairs, best first.

        With ``hybrid=True`` (and no filters) the dense list is fused with BM25 by
        :func:`~crossrank.retrieval.first_stage.first_stage`, the same code ``crossrank eval`` runs;
        documents found only by BM25 have no distance (NaN here, ``None`` in search results).
        """
        default = self.candidates or (self.late.candidates if self.late is not None else 0)  # late only: its depth
        k = check_positive_int("candidates", candidates or default) or default
        found: dict[str, tuple[Candidate, float]] = {}

        def dense(q: str, n: int) -> list[str]:
            """The filtered dense search; keeps each hit's candidate and distance for the result."""
            hits = self.dense_search(q, n, where=where, where_document=where_document)
            found.update((c.id or "", (c, dist)) for c, dist in hits)
            return [c.id or "" for c, _ in hits]

        # Filters apply to the dense stage only, so a filtered query is dense-only.
        hybrid = self.hybrid and where is None and where_document is None
        bm25, store = self._bm25_index() if hybrid else (None, {})
        ids = first_stage(query, "hybrid" if hybrid else "dense", candidates=k, dense=dense, bm25=bm25)
        # A BM25-only hit's metadata is copied out of the cached index: a caller's edit must not reach later searches.
        return [
            found.get(i) or (Candidate(text=store[i][0], id=i, metadata=dict(store[i][1])), float("nan")) for i in ids
        ]

    def search(self, query: str, **options: Unpack[SearchOptions]) -> SearchResults:
        """Both stages: :meth:`retrieve` ``candidates``, rerank them, keep ``top_n`` (and ``threshold``)."""
        call = _SearchCall(query, **options)
        depth = self.late.candidates if self.late is not None else call.candidates
        found = self.retrieve(query, candidates=depth, where=call.where, where_document=call.where_document)
        t1 = time.perf_counter()
        cands = [c for c, _ in found]
        if self.late is not None:
            ranked = self._late_cascade(call).rerank(query, cands, top_n=call.top_n, threshold=call.threshold)
        else:
            ranked = self.reranker.rerank(query, cands, top_n=call.top_n, threshold=call.threshold)
        return SearchResults.from_ranked(query, found, ranked, t1 - call.t0, time.perf_counter() - t1)

    def _late_cascade(self, call: _SearchCall) -> Cascade:
        """Late interaction over the first stage's candidates, then the cross-encoder over its best ``candidates``."""
        assert self.late is not None
        keep = self.candidates if call.candidates is None else call.candidates
        return self.late.cascade(self.reranker if keep else None, keep)

    async def asearch(self, query: str, **options: Unpack[SearchOptions]) -> SearchResults:
        """Async :meth:`search`: retrieval in a thread, reranking on the reranker's async path."""
        call = _SearchCall(query, **options)
        depth = self.late.candidates if self.late is not None else call.candidates
        found = await asyncio.to_thread(
            self.retrieve, query, candidates=depth, where=call.where, where_document=call.where_document
        )
        t1 = time.perf_counter()
        cands = [c for c, _ in found]
        if self.late is not None:
            cascade = await asyncio.to_thread(self._late_cascade, call)  # first use opens and checks the store
            ranked = await cascade.arerank(query, cands, top_n=call.top_n, threshold=call.threshold)
        else:
            ranked = await self.reranker.arerank(query, cands, top_n=call.top_n, threshold=call.threshold)
        return SearchResults.from_ranked(query, found, ranked, t1 - call.t0, time.perf_counter() - t1)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Chroma calls with our error type: a dead server becomes a VectorStoreError, not a stack trace."""
        try:
            return fn(*args, **kwargs)
        except CrossrankError:  # ours already (a bad filter, or the embedder failing to load on first use)
            raise
        except Exception as exc:
            if "where" in str(exc).lower() and ("invalid" in str(exc).lower() or "expected" in str(exc).lower()):
                raise InvalidArgumentError(f"invalid Chroma filter: {exc}") from exc
            raise VectorStoreError(f"Chroma request failed ({type(exc).__name__}: {exc})") from exc
