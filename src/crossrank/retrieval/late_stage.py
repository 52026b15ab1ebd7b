"""The late-interaction stage of a pipeline: where a collection's token vectors live, and the three stages.

``Pipeline(collection, late=MODEL, late_candidates=200, candidates=30)`` retrieves the first
stage's top ``late_candidates``, reorders them by MaxSim over the collection's stored token vectors
(:class:`~crossrank.late.LateInteractionScorer`), and lets the cross-encoder rerank the best
``candidates`` of that order (``candidates=0``: late interaction alone). This module holds what
the pipeline needs for it: the store's location, opening and checking it, indexing into it, and the
cascade.

Where the vectors live (:func:`default_store_path`): beside an embedded Chroma, in
``<persist dir>/crossrank-late/<collection>/``; for a Chroma server, on the machine that runs
crossrank, in ``<user data dir>/crossrank/late/<host>_<port>/<collection>/`` (Chroma's server has
no place for them). ``late_store=DIR`` names any other directory, e.g. shared storage that every
query process opens read-only (``LateVectorStore(DIR, readonly=True)``) while one indexer writes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from crossrank.cascade import Cascade, Stage
from crossrank.errors import InvalidArgumentError, VectorStoreError
from crossrank.late import (
    LateInteractionScorer,
    LateVectorStore,
    SyncReport,
    load_multi_vector_model,
    store_path,
    sync_store,
)
from crossrank.reranker import Reranker
from crossrank.retrieval.chroma import default_db_path

log = logging.getLogger("crossrank")

LateSpec = str | os.PathLike[str] | LateInteractionScorer

#: Ids read from Chroma per request when checking a store against its collection.
ID_PAGE = 10_000


def collection_ids(collection: Any, name: str, *, page: int = ID_PAGE) -> list[str]:
    """Every id of a Chroma collection, read ``page`` at a time (``limit`` / ``offset``).

    A collection of millions of chunks is never fetched in one request, and a failing Chroma
    (a dead server, a collection deleted under us) raises :class:`~crossrank.errors.VectorStoreError`
    naming the collection rather than Chroma's own exception.
    """
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidArgumentError(f"page must be a positive int, got {page!r}")
    ids: list[str] = []
    while True:
        try:
            got = collection.get(include=[], limit=page, offset=len(ids))
        except Exception as exc:
            raise VectorStoreError(
                f"Chroma failed listing the ids of collection {name!r} ({type(exc).__name__}: {exc})"
            ) from exc
        part = list(got.get("ids") or [])
        ids += part
        if len(part) < page:
            return ids


def default_store_path(db: str | os.PathLike[str] | None, chroma_url: str | None, collection: str) -> Path:
    """Where a collection's late-interaction vectors live by default (see the module docs)."""
    if chroma_url:
        from platformdirs import user_data_dir

        parsed = urlparse(chroma_url if "://" in chroma_url else f"http://{chroma_url}")
        server = f"{parsed.hostname or 'localhost'}_{parsed.port or 8000}"
        return Path(user_data_dir("crossrank")) / "late" / server / collection
    return store_path(Path(db).expanduser() if db is not None else default_db_path(), collection)


class LateStage:
    """A pipeline's late-interaction stage over one Chroma collection (made by ``Pipeline(late=...)``).

    ``late`` is a multi-vector model folder or Hub id, or a :class:`LateInteractionScorer` whose
    options (precision, token pooling, ...) the stage keeps; ``store`` a directory or an open
    :class:`LateVectorStore`.
    """

    def __init__(
        self,
        late: LateSpec,
        *,
        collection: Any,
        collection_name: str,
        store: str | os.PathLike[str] | LateVectorStore,
        candidates: int,
    ) -> None:
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise InvalidArgumentError(f"late_candidates must be a positive int, got {candidates!r}")
        self.candidates = candidates
        self.collection = collection
        self.collection_name = collection_name
        self._spec = late
        self._store = store if isinstance(store, LateVectorStore) else None
        self.store_path = store.path if isinstance(store, LateVectorStore) else Path(store).expanduser()
        self._scorer: LateInteractionScorer | None = None
        self._reranker: Reranker | None = None
        self.id_page = ID_PAGE  # Chroma ids per request when checking the store against the collection

    @property
    def model_name(self) -> str:
        return self._spec.model_name if isinstance(self._spec, LateInteractionScorer) else os.fspath(self._spec)

    @property
    def fix(self) -> str:
        """The command that (re)builds this stage's store."""
        return f"crossrank index --collection {self.collection_name} --late-interaction {self.model_name}"

    def store(self, *, create: bool) -> LateVectorStore | None:
        """The store (opened on first use); None when it does not exist and ``create`` is false."""
        if self._store is None:
            if not create and not LateVectorStore.exists(self.store_path):
                return None
            self._store = LateVectorStore(self.store_path)
        return self._store

    def _options(self) -> dict[str, Any]:
        """A given scorer's options as its user gave them (precision and pooling None where left to the
        store, so a scorer adopts the store's as a model given by name does); none for a name."""
        s = self._spec
        return s.options() if isinstance(s, LateInteractionScorer) else {}

    def _model_arg(self) -> Any:
        """A given scorer's model, loaded as that scorer loads it (its device and load options); else the name."""
        s = self._spec
        return s.model if isinstance(s, LateInteractionScorer) else self.model_name

    @property
    def scorer(self) -> LateInteractionScorer:
        """The scorer over the collection's store, checked against the collection on first use.

        Raises :class:`~crossrank.late.LateModelMismatchError` (store of another model) or
        :class:`~crossrank.late.LateStoreOutOfSyncError` (ids that disagree with Chroma, or a killed
        indexing run), each naming the command that fixes it. Without a store, candidates are
        encoded at query time (and cached), which is correct but slower.
        """
        if self._scorer is None:
            store = self.store(create=False)
            if store is not None and store.record is None:
                store = None
            if store is not None:
                ids = collection_ids(self.collection, self.collection_name, page=self.id_page)
                store.check_collection(ids, fix=self.fix)
            else:
                log.warning(
                    "no late-interaction vectors stored for collection %r (looked in %s): candidates are encoded "
                    "per query; store them with `%s`",
                    self.collection_name,
                    self.store_path,
                    self.fix,
                )
            self._scorer = LateInteractionScorer(self._model_arg(), store=store, **self._options())
        return self._scorer

    def reranker(self) -> Reranker:
        """A Reranker over :attr:`scorer`, with a score cache (as the pipeline's cross-encoder has)."""
        if self._reranker is None:
            self._reranker = Reranker(self.scorer, cache_size=10_000)
        return self._reranker

    def cascade(self, reranker: Reranker | None, keep: int) -> Cascade:
        """Late interaction over every candidate, then ``reranker`` over its best ``keep`` (alone when None)."""
        stages = [Stage(self.reranker(), None, "late-interaction")]
        if reranker is not None and keep > 0:
            stages.append(Stage(reranker, keep))
        return Cascade(stages)

    def index(
        self, *, rebuild: bool = False, batch_size: int = 32, commit_every: int = 256, progress: bool = True
    ) -> SyncReport:
        """Store the token vectors of every chunk of the collection (encoding only new or changed ones)."""
        store = self.store(create=True)
        assert store is not None
        opts = self._options()
        scorer = self._spec if isinstance(self._spec, LateInteractionScorer) else None
        model = scorer.model if scorer is not None else load_multi_vector_model(self.model_name)
        # Precision and pooling: as explicitly asked (a scorer's options), else the store's (fp16 and none for
        # a new or rebuilt store); a model given by name and a scorer behave the same.
        kept = (store.record or {}) if not rebuild else {}
        pool = opts.get("pool_factor")
        report = sync_store(
            self.collection,
            store,
            model,
            precision=str(opts.get("precision") or kept.get("precision") or "fp16"),
            pool_factor=(pool if pool > 1 else None) if pool is not None else kept.get("pool_factor"),
            rebuild=rebuild,
            batch_size=batch_size,
            commit_every=commit_every,
            progress=progress,
            fix=f"{self.fix} --rebuild",
        )
        self._scorer = self._reranker = None  # the next search re-checks against the new state
        return report
