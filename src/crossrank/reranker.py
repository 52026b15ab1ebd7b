"""The reranking core shared by the CLI, the Chroma pipeline and both framework adapters."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossrank.cache import CacheInfo, ScoreCache
from crossrank.errors import InvalidArgumentError, InvalidDocumentTypeError
from crossrank.inputs import (
    AGGREGATE_CHOICES,
    FUSION_CHOICES,
    LONG_DOC_CHOICES,
    NORMALIZE_CHOICES,
    check_choice,
    check_positive_int,
    check_query,
    check_threshold,
    check_top_n,
    to_candidates,
)
from crossrank.model_files import DEFAULT_MODEL, ModelInfo, effective_max_length, inspect_model, resolve_model_dir
from crossrank.results import Candidate, Filtered, Ranked, RankedResults, RerankStats, clean_float
from crossrank.scales import aggregate_windows, normalize_scores, ranks_desc, rrf
from crossrank.scoring.engine import Engine, ForwardStats, get_engine, resolve_backend

# Per-call overrides shared by rerank() and arerank(); None means "use the constructor's value".
_CALL_OPTIONS = ("top_n", "threshold", "normalize", "dedupe", "fusion", "long_documents")


def _normal_text(text: str) -> str:
    return " ".join(text.split())


@dataclass
class _Plan:
    """Everything between validation and the forward pass, so sync and async share one code path."""

    query: str
    candidates: list[Candidate]
    slot_of: list[int]  # candidate -> unique-text slot
    first_of_slot: list[int]  # slot -> first candidate index with that text
    raw: np.ndarray  # per slot; NaN until scored
    windows: list[int]
    truncated: list[bool]
    miss_slots: list[int]
    ids: list[list[int]]
    types: list[list[int]]
    owner: np.ndarray
    query_truncated: bool
    cache_keys: list[tuple[str, str, str]] | None
    hits: int
    t0: float
    tokenize_s: float
    opts: dict[str, Any]


class Reranker:
    """Score and rerank candidates for a query with any Hugging Face cross-encoder.

    >>> rr = Reranker("../shared/models/crossrank-minilm-l6-scifact")    # or a Hub id
    >>> rr.rerank("does aspirin prevent heart attacks?", docs, top_n=5)   # doctest: +SKIP

    The model directory is checked when the ``Reranker`` is made (a bad path fails here, not on
    the first query); weights load on first use and are shared with every other ``Reranker`` of
    the same model in the process. All options are keyword-only and can be overridden per call.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        backend: str = "auto",
        device: str | None = None,
        quantize: str = "auto",
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: str = "none",
        long_documents: str = "truncate",
        window_overlap: int = 64,
        max_windows: int = 16,
        aggregate: str = "max",
        dedupe: bool = False,
        fusion: str = "none",
        rrf_k: int = 60,
        cache_size: int = 0,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        cache_folder: str | None = None,
        num_threads: int | None = None,
        max_wait_ms: float = 3.0,
        max_batch_pairs: int = 512,
    ) -> None:
        self.model_name = os.fspath(model)
        path = resolve_model_dir(model, revision=revision, local_files_only=local_files_only, cache_folder=cache_folder)
        self.info: ModelInfo = inspect_model(path, name=self.model_name)
        self.backend = resolve_backend(backend, device)
        check_choice("quantize", quantize, ("auto", "int8", "bf16", "fp32"))
        self.device = device
        self.quantize = quantize
        self.trust_remote_code = trust_remote_code
        self.num_threads = num_threads
        # None: the backend's measured sweet spot (ONNX int8: 8, OpenVINO / torch: 32; see benchmarks/README.md).
        self._batch_size = check_positive_int("batch_size", batch_size, allow_none=True)
        self.max_length = effective_max_length(self.info, max_length)
        self.normalize = check_choice("normalize", normalize, NORMALIZE_CHOICES)
        self.long_documents = check_choice("long_documents", long_documents, LONG_DOC_CHOICES)
        if isinstance(window_overlap, bool) or not isinstance(window_overlap, int) or window_overlap < 0:
            raise InvalidArgumentError(f"window_overlap must be an int >= 0 (tokens), got {window_overlap!r}")
        self.window_overlap = window_overlap
        self.max_windows = check_positive_int("max_windows", max_windows) or 16
        self.aggregate = check_choice("aggregate", aggregate, AGGREGATE_CHOICES)
        self.dedupe = bool(dedupe)
        self.fusion = check_choice("fusion", fusion, FUSION_CHOICES)
        self.rrf_k = check_positive_int("rrf_k", rrf_k) or 60
        self.cache: ScoreCache | None = ScoreCache(cache_size) if cache_size else None
        self.max_wait_ms = float(max_wait_ms)
        self.max_batch_pairs = check_positive_int("max_batch_pairs", max_batch_pairs) or 512
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ loading
    @property
    def engine(self) -> Engine:
        """The loaded model, shared process-wide; loaded on first use."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = get_engine(
                        self.info,
                        backend=self.backend,
                        device=self.device,
                        quantize=self.quantize,
                        trust_remote_code=self.trust_remote_code,
                        num_threads=self.num_threads,
                    )
        return self._engine

    def warmup(self) -> Reranker:
        """Load the model now (and run one pair) instead of on the first query."""
        self.score("warm up", ["warm up"])
        return self

    @property
    def batch_size(self) -> int:
        if self._batch_size is not None:
            return self._batch_size
        return int(getattr(self.engine.backend, "preferred_batch_size", 32))

    @property
    def backend_name(self) -> str:
        return self._engine.backend.name if self._engine is not None else self.backend

    def cache_info(self) -> CacheInfo | None:
        return self.cache.info() if self.cache is not None else None

    def __repr__(self) -> str:
        return (
            f"Reranker({self.model_name!r}, backend={self.backend_name!r}, max_length={self.max_length}, "
            f"normalize={self.normalize!r}, long_documents={self.long_documents!r})"
        )

    # ------------------------------------------------------------------ public API
    def score(self, query: str, documents: Iterable[object], *, normalize: str | None = None) -> list[float]:
        """Scores in input order, as Python floats, on the ``normalize`` scale."""
        plan = self._prepare(query, documents, {"normalize": normalize})
        self._run(plan)
        return self._scores(plan)

    async def ascore(self, query: str, documents: Iterable[object], *, normalize: str | None = None) -> list[float]:
        plan = await self._aprepare(query, documents, {"normalize": normalize})
        await self._arun(plan)
        return self._scores(plan)

    def rerank(
        self,
        query: str,
        candidates: Iterable[object],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
        normalize: str | None = None,
        dedupe: bool | None = None,
        fusion: str | None = None,
        long_documents: str | None = None,
    ) -> RankedResults:
        """Rerank candidates (str, :class:`Candidate` or mappings with ``text``), best first.

        ``threshold`` drops results below it on the chosen scale, then ``top_n`` keeps the best n;
        both are reported in ``RankedResults.filtered`` so nothing disappears unexplained. Ties
        keep input order. The caller's objects are never modified.
        """
        opts = {k: v for k, v in locals().items() if k in _CALL_OPTIONS}
        plan = self._prepare(query, candidates, opts)
        self._run(plan)
        return self._finish(plan)

    async def arerank(
        self,
        query: str,
        candidates: Iterable[object],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
        normalize: str | None = None,
        dedupe: bool | None = None,
        fusion: str | None = None,
        long_documents: str | None = None,
    ) -> RankedResults:
        """Async :meth:`rerank`: never blocks the event loop; concurrent calls share forward passes."""
        opts = {k: v for k, v in locals().items() if k in _CALL_OPTIONS}
        plan = await self._aprepare(query, candidates, opts)
        await self._arun(plan)
        return self._finish(plan)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Scores for (query, document) pairs that may mix queries, in input order (one pass per query)."""
        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidDocumentTypeError(f"pairs[{i}] must be a (query, document) pair, got {pair!r}")
            groups.setdefault(pair[0], []).append(i)
        out = [0.0] * len(pairs)
        for query, idx in groups.items():
            for i, s in zip(idx, self.score(query, [pairs[i][1] for i in idx])):
                out[i] = s
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text (no special tokens): tells which documents will not fit ``max_length``."""
        return self.engine.encoder(self.max_length).count_tokens(texts)

    # ------------------------------------------------------------------ internals
    def _options(self, opts: dict[str, Any]) -> dict[str, Any]:
        def pick(name: str, default: Any) -> Any:
            v = opts.get(name)
            return default if v is None else v

        return {
            "top_n": check_top_n(opts.get("top_n")),
            "threshold": check_threshold(opts.get("threshold")),
            "normalize": check_choice("normalize", pick("normalize", self.normalize), NORMALIZE_CHOICES),
            "dedupe": bool(pick("dedupe", self.dedupe)),
            "fusion": check_choice("fusion", pick("fusion", self.fusion), FUSION_CHOICES),
            "long_documents": check_choice(
                "long_documents", pick("long_documents", self.long_documents), LONG_DOC_CHOICES
            ),
        }

    def _setup_key(self, engine: Engine, long_documents: str) -> str:
        wins = f"w{self.window_overlap}x{self.max_windows}:{self.aggregate}" if long_documents == "windows" else "t"
        return f"{engine.identity}:{self.max_length}:{wins}"

    def _prepare(self, query: object, documents: Iterable[object], raw_opts: dict[str, Any]) -> _Plan:
        t0 = time.perf_counter()
        q = check_query(query)
        opts = self._options(raw_opts)
        cands = to_candidates(documents)
        slot_of: list[int] = []
        first_of_slot: list[int] = []
        texts: list[str] = []
        seen: dict[str, int] = {}
        for i, c in enumerate(cands):
            key = _normal_text(c.text)
            slot = seen.get(key)
            if slot is None:
                slot = seen[key] = len(texts)
                texts.append(c.text)
                first_of_slot.append(i)
            slot_of.append(slot)
        n = len(texts)
        plan = _Plan(
            query=q,
            candidates=cands,
            slot_of=slot_of,
            first_of_slot=first_of_slot,
            raw=np.full(n, np.nan, dtype=np.float64),
            windows=[0] * n,
            truncated=[False] * n,
            miss_slots=[],
            ids=[],
            types=[],
            owner=np.empty(0, dtype=np.int64),
            query_truncated=False,
            cache_keys=None,
            hits=0,
            t0=t0,
            tokenize_s=0.0,
            opts=opts,
        )
        if n == 0:
            return plan  # nothing to score: do not load the model
        engine = self.engine
        windows = opts["long_documents"] == "windows"
        if self.cache is not None:
            setup = self._setup_key(engine, opts["long_documents"])
            plan.cache_keys = [ScoreCache.key(setup, q, t) for t in texts]
            for slot, ckey in enumerate(plan.cache_keys):
                hit = self.cache.get(ckey)
                if hit is None:
                    plan.miss_slots.append(slot)
                else:
                    plan.raw[slot], plan.windows[slot], plan.truncated[slot] = hit
                    plan.hits += 1
        else:
            plan.miss_slots = list(range(n))
        t1 = time.perf_counter()
        if plan.miss_slots:
            enc = engine.encoder(self.max_length).encode(
                q,
                [texts[s] for s in plan.miss_slots],
                windows=windows,
                window_overlap=self.window_overlap,
                max_windows=self.max_windows,
            )
            plan.ids, plan.types, plan.owner = enc.ids, enc.types, np.asarray(enc.owner, dtype=np.int64)
            plan.query_truncated = enc.query_truncated
            for j, slot in enumerate(plan.miss_slots):
                plan.windows[slot] = enc.windows[j]
                plan.truncated[slot] = enc.truncated[j]
        plan.tokenize_s = time.perf_counter() - t1
        return plan

    async def _aprepare(self, query: object, documents: Iterable[object], opts: dict[str, Any]) -> _Plan:
        # Validation is cheap and raises in the caller's task; tokenizing (and a first model load) is not.
        check_query(query)
        self._options(opts)
        docs = list(documents) if not isinstance(documents, (str, bytes)) and documents is not None else documents
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self._prepare, query, docs, opts)

    def _pool(self) -> ThreadPoolExecutor:
        with self._engine_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="crossrank-prep")
            return self._executor

    def _apply(self, plan: _Plan, item_scores: np.ndarray) -> None:
        if not plan.miss_slots:
            return
        per_doc = aggregate_windows(item_scores, plan.owner, len(plan.miss_slots), self.aggregate)
        for j, slot in enumerate(plan.miss_slots):
            plan.raw[slot] = per_doc[j]
            if plan.cache_keys is not None and self.cache is not None:
                self.cache.put(plan.cache_keys[slot], (float(per_doc[j]), plan.windows[slot], plan.truncated[slot]))

    def _run(self, plan: _Plan) -> None:
        stats = ForwardStats()
        if plan.ids:
            scores = self.engine.score_pairs(
                self.engine.encoder(self.max_length), plan.ids, plan.types, batch_size=self.batch_size, stats=stats
            )
            self._apply(plan, scores)
        plan.opts["_forward"] = stats

    async def _arun(self, plan: _Plan) -> None:
        stats = ForwardStats()
        if plan.ids:
            batcher = self.engine.batcher()
            batcher.configure(max_wait_ms=self.max_wait_ms, max_pairs=self.max_batch_pairs)
            t = time.perf_counter()
            fut = batcher.submit(self.engine.encoder(self.max_length), plan.ids, plan.types, batch_size=self.batch_size)
            scores = await asyncio.wrap_future(fut)
            stats.pairs, stats.seconds = len(plan.ids), time.perf_counter() - t
            self._apply(plan, scores)
        plan.opts["_forward"] = stats

    def _candidate_raw(self, plan: _Plan) -> np.ndarray:
        return plan.raw[np.asarray(plan.slot_of, dtype=np.int64)] if plan.slot_of else np.empty(0)

    def _scores(self, plan: _Plan) -> list[float]:
        raw = self._candidate_raw(plan)
        return [float(x) for x in normalize_scores(raw, plan.opts["normalize"])]

    def _finish(self, plan: _Plan) -> RankedResults:
        opts = plan.opts
        cands = plan.candidates
        raw_all = self._candidate_raw(plan)
        filtered: list[Filtered] = []
        keep = list(range(len(cands)))
        dup_of = [plan.first_of_slot[s] for s in plan.slot_of]
        if opts["dedupe"]:
            keep = [i for i in keep if dup_of[i] == i]
            filtered += [
                Filtered(index=i, id=cands[i].id, reason="duplicate", duplicate_of=dup_of[i])
                for i in range(len(cands))
                if dup_of[i] != i
            ]
        raw = raw_all[keep] if keep else np.empty(0)
        scores = normalize_scores(raw, opts["normalize"])
        first_rank = np.asarray(keep, dtype=np.int64) + 1  # input order is the first-stage order
        fused: np.ndarray | None = None
        if opts["fusion"] == "rrf" and len(keep):
            fused = rrf(first_rank, ranks_desc(raw), self.rrf_k)
        sort_key = fused if fused is not None else raw
        order = np.lexsort((np.arange(len(keep)), -sort_key)) if len(keep) else np.empty(0, dtype=np.int64)
        threshold, top_n = opts["threshold"], opts["top_n"]
        results: list[Ranked] = []
        for pos in order.tolist():
            i = keep[pos]
            c = cands[i]
            score = float(scores[pos])
            if threshold is not None and score < threshold:
                filtered.append(Filtered(index=i, id=c.id, reason="threshold", score=score))
                continue
            if top_n is not None and len(results) >= top_n:
                filtered.append(Filtered(index=i, id=c.id, reason="top_n", score=score))
                continue
            slot = plan.slot_of[i]
            results.append(
                Ranked(
                    index=i,
                    rank=len(results) + 1,
                    score=score,
                    raw_score=float(raw[pos]),
                    text=c.text,
                    id=c.id,
                    metadata=c.metadata,
                    first_stage_score=clean_float(c.score),
                    first_stage_rank=i + 1,
                    windows=plan.windows[slot],
                    truncated=plan.truncated[slot],
                    fused_score=None if fused is None else float(fused[pos]),
                    duplicate_of=None if dup_of[i] == i else dup_of[i],
                )
            )
        fwd: ForwardStats = opts.get("_forward") or ForwardStats()
        total = time.perf_counter() - plan.t0
        stats = RerankStats(
            candidates=len(cands),
            pairs_scored=len(plan.ids),
            cache_hits=plan.hits,
            cache_misses=len(plan.miss_slots) if plan.cache_keys is not None else 0,
            duplicates=len(cands) - len(plan.first_of_slot),
            truncated=sum(plan.truncated[s] for s in plan.slot_of),
            windows=len(plan.ids),
            query_truncated=plan.query_truncated,
            batch_retries=fwd.retries,
            tokenize_ms=plan.tokenize_s * 1000,
            model_ms=fwd.seconds * 1000,
            total_ms=total * 1000,
        )
        return RankedResults(
            query=plan.query,
            results=tuple(results),
            filtered=tuple(filtered),
            normalize=opts["normalize"],
            model=self.model_name,
            backend=self.backend_name,
            stats=stats,
        )
