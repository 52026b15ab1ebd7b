"""``LateInteractionScorer``: MaxSim over stored token vectors, behind the ``Scorer`` seam.

``Reranker(LateInteractionScorer(...))`` ranks with it like with any scorer, and
``Cascade([(late, 100), (Reranker(cross_encoder), 30)])`` makes it the middle stage: the query is
encoded once, every candidate is scored by MaxSim against its token vectors, and only the best few
reach the cross-encoder.

Where a candidate's vectors come from, in order: a bounded in-memory LRU keyed by the hash of the
exact text; the :class:`~crossrank.late.store.LateVectorStore` of the collection the candidate came
from, looked up by the same hash (so candidates a crossrank-indexed Chroma returned find their
vectors without passing ids, and a text that changed since indexing can never get the old text's
vectors); else the model encodes it (in batches) and the LRU keeps it. Stored and freshly encoded
vectors go through the same storage precision (fp16 or int8), so a candidate scores the same
whichever way its vectors arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import InvalidArgumentError
from crossrank.late.errors import LateModelMismatchError, LateStoreChangedError
from crossrank.late.maxsim import PRECISIONS, Packed, maxsim, pack
from crossrank.late.model import MultiVectorModel, folder_fingerprint, load_multi_vector_model
from crossrank.late.store import LateVectorStore, text_hash
from crossrank.scoring.base import Scored, ScorerInfo, ScoreSettings, ScoreStats

SIMILARITIES: tuple[str, ...] = ("maxsim", "meanmaxsim")


class VectorCache:
    """A thread-safe LRU of packed token vectors by text hash, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[Packed, bool]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[Packed, bool] | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
            return hit

    def put(self, key: str, value: tuple[Packed, bool]) -> None:
        if value[0].nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[0].nbytes
            self._data[key] = value
            self._bytes += value[0].nbytes
            while self._bytes > self.max_bytes and self._data:
                _, (p, _t) = self._data.popitem(last=False)
                self._bytes -= p.nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes


def _declared_document_length(path: Path) -> int | None:
    """The document length a folder declares (ST/PyLate config or Stanford ``artifact.metadata``), unloaded."""
    for name, key in (
        ("sentence_bert_config.json", "document_length"),
        ("config_sentence_transformers.json", "document_length"),
        ("artifact.metadata", "doc_maxlen"),
    ):
        try:
            value = json.loads((path / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


def _declared_similarity(path: Path) -> str | None:
    """The similarity a folder declares (ST's ``similarity_fn_name``), unloaded; None where it names none we take.

    sentence-transformers loads the same value (and MaxSim where a save names another, e.g. PyLate's "MaxSim").
    """
    try:
        value = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
        value = value.get("similarity_fn_name")
    except (OSError, ValueError, AttributeError):
        return None
    return value if value in SIMILARITIES else None


class LateInteractionScorer:
    """A :class:`~crossrank.scoring.Scorer` that ranks by MaxSim between token vectors (ColBERT-style).

    Args:
        model: a multi-vector model folder (ST ``MultiVectorEncoder``, PyLate or Stanford ColBERT),
            a Hub id, or a loaded :class:`~crossrank.late.model.MultiVectorModel`. Weights load on
            first use and are shared process-wide.
        store: the collection's :class:`~crossrank.late.store.LateVectorStore` (candidates whose text
            it has are not encoded again). It must have been built by this model; its precision and
            token pooling become this scorer's.
        precision: storage form of vectors: ``fp16`` (default), ``int8`` (one scale per token) or
            ``fp32`` (in memory only). Arithmetic is float32 in every case.
        pool_factor: hierarchical token pooling of encoded documents (2 keeps about half their
            tokens); must match the store's.
        similarity: ``maxsim`` or ``meanmaxsim`` (divided by the query's token count: same order
            within a query, scores in [-1, 1]); default: what the model declares.
        cache_mb: megabytes of encoded candidates' vectors kept in memory (LRU by text hash).
        batch_size: documents per encoder pass.
        device, local_files_only, trust_remote_code, revision: how the model loads.
        query_backend: what encodes queries: ``auto`` (ONNX Runtime on the CPU where the backbone
            exports, else torch), ``onnx`` or ``torch`` (see :func:`~crossrank.late.load_multi_vector_model`).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | MultiVectorModel,
        *,
        store: LateVectorStore | None = None,
        precision: str | None = None,
        pool_factor: int | None = None,
        similarity: str | None = None,
        cache_mb: float = 256,
        batch_size: int = 32,
        device: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        query_backend: str = "auto",
    ) -> None:
        if similarity is not None and similarity not in SIMILARITIES:
            raise InvalidArgumentError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if pool_factor is not None and (
            isinstance(pool_factor, bool) or not isinstance(pool_factor, int) or pool_factor < 1
        ):
            raise InvalidArgumentError(f"pool_factor must be an int >= 1 or None, got {pool_factor!r}")
        self._given: dict[str, Any] = {
            "precision": precision,
            "pool_factor": pool_factor,
            "similarity": similarity,
            "batch_size": batch_size,
            "cache_mb": cache_mb,
        }
        self._load_options = {
            "device": device,
            "local_files_only": local_files_only,
            "trust_remote_code": trust_remote_code,
            "revision": revision,
            "query_backend": query_backend,
        }
        self._model: MultiVectorModel | None = None
        self._model_lock = threading.Lock()
        if isinstance(model, MultiVectorModel):
            self._model = model
            self.model_name, self.fingerprint = model.name, model.fingerprint
            self._declared_length: int | None = model.document_length
            self._declared_similarity: str | None = model.similarity
        else:
            self.model_name = os.fspath(model)
            path = Path(self.model_name).expanduser()
            if path.is_dir():
                self.fingerprint = folder_fingerprint(path)
                self._declared_length = _declared_document_length(path)
                self._declared_similarity = _declared_similarity(path)
            elif self.model_name.startswith((".", "/", "~")):
                from crossrank.errors import ModelNotFoundError

                raise ModelNotFoundError(f"multi-vector model folder {self.model_name!r} does not exist")
            else:
                self.fingerprint = f"hub:{self.model_name}@{revision or 'main'}"
                self._declared_length = None
                self._declared_similarity = None
        self.store = store
        rec = store.record if store is not None else None
        if rec is not None:
            if precision is not None and precision != rec["precision"]:
                raise LateModelMismatchError(
                    f"precision={precision!r} but the store at {store.path} keeps {rec['precision']} vectors: "  # type: ignore[union-attr]
                    "leave precision unset to use the store's, or rebuild the store in that precision "
                    f"(crossrank index ... --late-interaction MODEL --late-precision {precision} --rebuild)"
                )
            if pool_factor is not None and (pool_factor if pool_factor > 1 else None) != rec.get("pool_factor"):
                raise LateModelMismatchError(
                    f"pool_factor={pool_factor} but the store at {store.path} was built with "  # type: ignore[union-attr]
                    f"{rec.get('pool_factor') or 1}"
                )
            if rec.get("fingerprint") != self.fingerprint:
                raise LateModelMismatchError(
                    f"the late-interaction store at {store.path} was built by {rec.get('name')!r} "  # type: ignore[union-attr]
                    f"(fingerprint {rec.get('fingerprint')}), not by {self.model_name!r} (fingerprint "
                    f"{self.fingerprint}): query with that model, or rebuild the store with "
                    f"`crossrank index PATHS --collection NAME --late-interaction {self.model_name} --rebuild`"
                )
            precision, pool_factor = rec["precision"], rec.get("pool_factor")
        self.precision = precision or "fp16"
        if self.precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.pool_factor = pool_factor if pool_factor and pool_factor > 1 else None
        self._similarity = similarity
        self.batch_size = batch_size
        self.cache = VectorCache(int(cache_mb * (1 << 20)))
        self._totals = {"cached": 0, "stored": 0, "encoded": 0}
        self._totals_lock = threading.Lock()

    def options(self) -> dict[str, Any]:
        """The options this scorer was built with, as given: ``precision``, ``pool_factor`` and
        ``similarity`` are None where they were left to the store or the model, plus ``batch_size``
        and ``cache_mb``.

        A scorer built from these over another store adopts that store's precision and pooling
        unless they were asked for explicitly (then a store built otherwise is refused), as a model
        given by name does (``Pipeline(late=scorer)`` uses this).
        """
        return dict(self._given)

    @property
    def totals(self) -> dict[str, int]:
        """Candidates' vectors served so far, by source: ``cached`` (LRU), ``stored`` (the store), ``encoded``."""
        with self._totals_lock:
            return dict(self._totals)

    # ------------------------------------------------------------------ the Scorer protocol
    @property
    def model(self) -> MultiVectorModel:
        """The loaded model (loaded on first use)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = load_multi_vector_model(self.model_name, **self._load_options)  # type: ignore[arg-type]
        return self._model

    @property
    def similarity(self) -> str:
        """``maxsim`` or ``meanmaxsim``: as given, else as the model folder declares it (read without loading
        it, so :attr:`identity` is the same before and after the weights load), else the loaded model's."""
        if self._similarity is not None:
            return self._similarity
        if self._declared_similarity is not None:
            return self._declared_similarity
        return self._model.similarity if self._model is not None else "maxsim"

    @property
    def identity(self) -> str:
        return f"late:{self.model_name}:{self.fingerprint}:{self.precision}:p{self.pool_factor or 1}:{self.similarity}"

    def describe(self) -> ScorerInfo:
        length = self._model.document_length if self._model is not None else self._declared_length
        return ScorerInfo(
            kind="late-interaction",
            model=self.model_name,
            backend=f"maxsim-{self.precision}",
            max_length=length,
            scale="similarity",
        )

    def __repr__(self) -> str:
        store = f", store={str(self.store.path)!r}" if self.store is not None else ""
        return f"LateInteractionScorer({self.model_name!r}, precision={self.precision!r}{store})"

    def encode_query(self, query: str) -> np.ndarray:
        """The query's token vectors, float32 (query tokens, dim)."""
        return self.model.encode_queries([query])[0]

    def document_vectors(self, texts: Sequence[str]) -> tuple[list[Packed], list[bool], dict[str, int]]:
        """Each text's packed vectors and truncation flag, from the LRU, the store, or the encoder.

        Returns ``(vectors, truncated, counts)`` with ``counts`` = how many came from each source
        (``cached``, ``stored``, ``encoded``).
        """
        keys = [text_hash(t) for t in texts]
        got: dict[str, tuple[Packed, bool]] = {}
        counts = {"cached": 0, "stored": 0, "encoded": 0}
        for k in dict.fromkeys(keys):
            hit = self.cache.get(k)
            if hit is not None:
                got[k] = hit
                counts["cached"] += 1
        missing = [k for k in dict.fromkeys(keys) if k not in got]
        if missing and self.store is not None:
            stored = self._stored(self.store, missing)
            got.update(stored)
            counts["stored"] = len(stored)
            for k, hit in stored.items():
                self.cache.put(k, hit)
        first: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in got:
                first.setdefault(k, t)
        if first:
            todo = list(first.values())
            model = self.model
            floats = model.encode_documents(todo, batch_size=self.batch_size, pool_factor=self.pool_factor)
            flags = model.truncated(todo)
            for k, vec, tr in zip(first, floats, flags):
                got[k] = (pack(vec, self.precision), tr)
                self.cache.put(k, got[k])
            counts["encoded"] = len(first)
        with self._totals_lock:
            for k, n in counts.items():
                self._totals[k] += n
        return [got[k][0] for k in keys], [got[k][1] for k in keys], counts

    def _stored(self, store: LateVectorStore, hashes: list[str]) -> dict[str, tuple[Packed, bool]]:
        """The store's vectors for these text hashes, only ever of this scorer's model, precision and pooling.

        A store rebuilt since it was opened is read again when it still holds this model's vectors
        in this form (a rebuild with the same model); otherwise :class:`LateStoreChangedError` says
        to restart with the model the store now records.
        """
        expect = {"fingerprint": self.fingerprint, "precision": self.precision, "pool_factor": self.pool_factor}
        try:
            return store.get_by_hashes(hashes, expect=expect)
        except LateStoreChangedError:
            store.refresh(expect=expect)  # raises unless the rebuilt store holds this model's vectors
            return store.get_by_hashes(hashes, expect=expect)

    def score(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        """MaxSim of ``query`` against every text (``settings`` has no effect: a late-interaction model
        reads each document once, up to its document length; longer ones are reported as truncated)."""
        if settings.long_documents == "windows":
            raise InvalidArgumentError(
                "long_documents='windows' does not apply to late interaction: its model reads each document "
                "once, up to its document length (longer ones are reported as truncated); use 'truncate'"
            )
        if not texts:
            return Scored.empty()
        t0 = time.perf_counter()
        q = self.encode_query(query)
        t1 = time.perf_counter()
        vectors, truncated, counts = self.document_vectors(texts)
        t2 = time.perf_counter()
        raw = maxsim(q, vectors, mean=self.similarity == "meanmaxsim")
        t3 = time.perf_counter()
        return Scored(
            raw=raw,
            windows=[1] * len(texts),
            truncated=truncated,
            stats=ScoreStats(pairs=len(texts), tokenize_s=0.0, model_s=t2 - t0),
            details={
                **counts,
                "query_tokens": int(q.shape[0]),
                "query_ms": (t1 - t0) * 1000,
                "vectors_ms": (t2 - t1) * 1000,
                "maxsim_ms": (t3 - t2) * 1000,
            },
        )

    async def ascore(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        """Async :meth:`score`: the encoder and MaxSim run on a worker thread, never on the event loop."""
        return await asyncio.to_thread(self.score, query, texts, settings)
