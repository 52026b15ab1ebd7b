"""The reranking core shared by the CLI, the Chroma pipeline and both framework adapters.

A ``Reranker`` is options + validation + one ranking step over a :class:`~crossrank.scoring.Scorer`.
One call goes: validate -> candidates -> unique texts -> score cache -> scorer (the only step that
differs between sync and async) -> :func:`crossrank.ranking.rank` -> :class:`RankedResults`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from typing_extensions import TypedDict, Unpack

from crossrank.cache import CacheInfo, ScoreCache
from crossrank.errors import InvalidArgumentError, InvalidDocumentTypeError, UnknownOptionError
from crossrank.inputs import (
    AGGREGATE_CHOICES,
    FUSION_CHOICES,
    LONG_DOC_CHOICES,
    NORMALIZE_CHOICES,
    TRUNCATION_SIDES,
    check_choice,
    check_options,
    check_positive_int,
    check_query,
    check_threshold,
    check_top_n,
    to_candidates,
)
from crossrank.model_files import ModelInfo, default_model
from crossrank.ranking import RankOptions, rank
from crossrank.results import Candidate, RankedResults, RerankStats
from crossrank.scales import normalize_scores
from crossrank.scoring.base import Scored, Scorer, ScoreSettings
from crossrank.scoring.engine import Engine
from crossrank.scoring.local import LocalScorer, ModelOptions
from crossrank.scoring.token_cache import TokenCacheInfo


class CallOptions(TypedDict, total=False):
    """Per-call overrides of a :class:`Reranker`'s ranking options (``None`` keeps the constructor's).

    ``top_n``: keep the best n; ``threshold``: drop scores below it on the ``normalize`` scale;
    ``normalize``: none, sigmoid, softmax or minmax; ``dedupe``: drop repeated texts; ``fusion``:
    none or rrf; ``long_documents``: truncate or windows; ``max_windows``: windows per document.
    Applied by the scorer (a local model applies them; other scorers raise rather than drop them):
    ``max_document_tokens``: cut each document to that many of its tokens first;
    ``truncation_side``: ``right`` (keep the start) or ``left`` (keep the end) wherever a document
    is cut; ``instruction``: the task instruction for rerankers whose prompt has a slot for one.
    """

    top_n: int | None
    threshold: float | None
    normalize: str | None
    dedupe: bool | None
    fusion: str | None
    long_documents: str | None
    max_windows: int | None
    max_document_tokens: int | None
    truncation_side: str | None
    instruction: str | None


def _normal_text(text: str) -> str:
    return " ".join(text.split())


@dataclass
class _Call:
    """One validated call: its candidates, their unique texts, and what the cache already knew."""

    query: str
    candidates: list[Candidate]
    options: RankOptions
    settings: ScoreSettings
    slot_of: list[int]  # candidate -> unique-text slot
    first_of_slot: list[int]  # slot -> first candidate with that text
    texts: list[str]  # per slot
    raw: np.ndarray  # per slot; NaN until scored
    windows: list[int]
    truncated: list[bool]
    miss_slots: list[int] = field(default_factory=list)
    cache_keys: list[tuple[str, str, str]] | None = None
    hits: int = 0
    t0: float = 0.0

    @property
    def miss_texts(self) -> list[str]:
        return [self.texts[s] for s in self.miss_slots]


class Reranker:
    """Score and rerank candidates for a query with any Hugging Face reranker (or any scorer).

    >>> rr = Reranker("../shared/models/crossrank-minilm-l6-scifact")    # or a Hub id
    >>> rr.rerank("does aspirin prevent heart attacks?", docs, top_n=5)   # doctest: +SKIP

    ``model`` is a Hub id or a local directory (default: ``$CROSSRANK_MODEL``, else
    ``cross-encoder/ms-marco-MiniLM-L6-v2``), or a ready :class:`~crossrank.scoring.Scorer`. The
    model directory is checked when the ``Reranker`` is made (a bad path fails here, not on the
    first query); weights load on first use and are shared with every other ``Reranker`` of the
    same model in the process. All options are keyword-only. Local model options (``backend``,
    ``device``, ``quantize``, ``batch_size``, ``max_length``, ``local_files_only``,
    ``trust_remote_code``, ``revision``, ``cache_folder``, ``num_threads``, ``max_wait_ms``,
    ``max_batch_pairs``, ``template``, ``instruction``, ``prompt``: see
    :class:`~crossrank.scoring.local.ModelOptions`)
    go to the :class:`~crossrank.scoring.LocalScorer`; the ranking options can also be overridden
    per call. Causal-LM rerankers (Qwen3-Reranker, mxbai-rerank-v2,
    bge-reranker-v2-gemma) are detected from their config; ``template=`` names the prompt family
    explicitly (see :mod:`crossrank.prompts`), ``instruction=`` sets the task instruction of those
    with an instruction slot and ``prompt=`` bge-reranker-v2-gemma's trailing prompt (an option
    the family has no slot for raises).
    An ``http://`` or ``https://`` URL scores through a rerank server instead
    (:class:`crossrank.remote.RemoteScorer`): ``api=`` names its API (``cohere``, ``cohere-v2``,
    ``jina``, ``tei``, ``infinity``) and ``remote_options=`` passes the rest (``model``,
    ``api_key``, ``timeout``, ``max_retries``, ``max_documents``, ...).

    Raises:
        ModelNotFoundError, ModelLoadError, UnsupportedModelError: the model cannot be used.
        InvalidArgumentError: an option is out of range or unknown.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Scorer | None = None,
        *,
        normalize: str = "none",
        long_documents: str = "truncate",
        window_overlap: int = 64,
        max_windows: int = 16,
        aggregate: str = "max",
        dedupe: bool = False,
        fusion: str = "none",
        rrf_k: int = 60,
        cache_size: int = 0,
        api: str | None = None,
        remote_options: Mapping[str, Any] | None = None,
        **model_options: Unpack[ModelOptions],
    ) -> None:
        remote = isinstance(model, str) and model.startswith(("http://", "https://"))
        signature = inspect.signature(Reranker.__init__).parameters
        own = [p for p in signature if p not in ("self", "model", "model_options")]  # for the hint's list
        per_call = sorted({"top_n", "top_k", "threshold"} & set(model_options))
        if per_call:
            raise UnknownOptionError(
                f"Reranker() got {per_call[0]!r}: how many results to keep is given per call, "
                "rr.rerank(query, documents, top_n=..., threshold=...)"
            )
        check_options(model_options, (*own, *ModelOptions.__annotations__), "Reranker")
        if model_options and (remote or isinstance(model, Scorer)):
            raise InvalidArgumentError(
                f"{', '.join(sorted(model_options))} configure a local model; this Reranker scores through "
                f"{'a rerank server (use remote_options=)' if remote else type(model).__name__}"
            )
        if isinstance(model, Scorer):
            self.scorer: Scorer = model
        elif remote:
            from crossrank.remote import RemoteScorer  # lazy: only remote use needs httpx

            self.scorer = RemoteScorer(str(model), api=api, **dict(remote_options or {}))
        else:
            self.scorer = LocalScorer(default_model() if model is None else model, **model_options)
        self.model_name = self.scorer.describe().model
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
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidArgumentError(f"cache_size must be an int >= 0 (0 turns the cache off), got {cache_size!r}")
        self.cache: ScoreCache | None = ScoreCache(cache_size) if cache_size else None

    # ------------------------------------------------------------------ the local model, when there is one
    @property
    def local(self) -> LocalScorer:
        """The local model scorer; an error when this Reranker scores through something else."""
        if not isinstance(self.scorer, LocalScorer):
            raise InvalidArgumentError(f"this Reranker scores with {type(self.scorer).__name__}, not a local model")
        return self.scorer

    @property
    def info(self) -> ModelInfo:
        """What was read from the local model directory."""
        return self.local.info

    @property
    def engine(self) -> Engine:
        """The loaded local model, shared process-wide; loaded on first use."""
        return self.local.engine

    @property
    def max_length(self) -> int | None:
        """Tokens per (query, document) input; None where the scorer has no such limit."""
        return self.scorer.describe().max_length

    @property
    def batch_size(self) -> int:
        """Pairs per forward pass of the local model."""
        return self.local.batch_size

    @property
    def backend(self) -> str:
        """The backend asked for, resolved from ``auto`` (see :attr:`backend_name` for what runs)."""
        return self.local.backend if isinstance(self.scorer, LocalScorer) else self.scorer.describe().backend

    @property
    def backend_name(self) -> str:
        """What scores: e.g. ``openvino-int8`` once loaded."""
        return self.scorer.describe().backend

    def warmup(self) -> Reranker:
        """Load the model now (and score one pair) instead of on the first query."""
        self.score("warm up", ["warm up"])
        return self

    def cache_info(self) -> CacheInfo | None:
        """Hits, misses and size of the score cache (None when ``cache_size=0``)."""
        return self.cache.info() if self.cache is not None else None

    def token_cache_info(self) -> TokenCacheInfo | None:
        """Hits, misses and size of the documents' token cache (shared per tokenizer; None where none is used)."""
        info = getattr(self.scorer, "token_cache_info", None)
        return info() if info is not None else None

    def pretokenize(self, documents: Iterable[object]) -> int:
        """Tokenize documents into the token cache now (at index time), so queries over them tokenize only the query.

        Takes what :meth:`rerank` takes as candidates; loads the tokenizer, never the weights.
        Returns how many were tokenized (0 for scorers that keep no token cache).
        """
        texts = [c.text for c in to_candidates(documents)]
        fill = getattr(self.scorer, "pretokenize", None)
        return int(fill(texts)) if fill is not None and texts else 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text (no special tokens): tells which documents will not fit ``max_length``."""
        return self.local.count_tokens(texts)

    def __repr__(self) -> str:
        return (
            f"Reranker({self.model_name!r}, backend={self.backend_name!r}, max_length={self.max_length}, "
            f"normalize={self.normalize!r}, long_documents={self.long_documents!r})"
        )

    # ------------------------------------------------------------------ public API
    def score(self, query: str, documents: Iterable[object], *, normalize: str | None = None) -> list[float]:
        """Scores in input order, as Python floats, on the ``normalize`` scale."""
        call = self._begin(query, documents, normalize=normalize)
        self._fill(call, self.scorer.score(call.query, call.miss_texts, call.settings) if call.miss_slots else None)
        return self._scores(call)

    async def ascore(self, query: str, documents: Iterable[object], *, normalize: str | None = None) -> list[float]:
        """Async :meth:`score`: never blocks the event loop; concurrent calls share forward passes."""
        call = await asyncio.to_thread(self._begin, query, documents, normalize=normalize)
        scored = await self.scorer.ascore(call.query, call.miss_texts, call.settings) if call.miss_slots else None
        self._fill(call, scored)
        return self._scores(call)

    def rerank(self, query: str, candidates: Iterable[object], **options: Unpack[CallOptions]) -> RankedResults:
        """Rerank candidates (str, :class:`Candidate` or mappings with ``text``), best first.

        Keyword options (each overrides the constructor's for this call): ``top_n``, ``threshold``,
        ``normalize``, ``dedupe``, ``fusion``, ``long_documents``, ``max_windows``, and the ones the
        scorer applies, ``max_document_tokens``, ``truncation_side``, ``instruction`` (see :class:`CallOptions`).
        ``threshold`` drops results below it on the chosen scale, then ``top_n`` keeps the best n;
        both are reported in ``RankedResults.filtered`` so nothing disappears unexplained. Ties
        keep input order. The caller's objects are never modified.

        Raises:
            InvalidQueryError / InvalidDocumentError (and their ``TypeError`` variants): bad input.
            InvalidArgumentError: a bad option value; UnknownOptionError (also a ``TypeError``): an
            unknown option name, with the closest known one.
        """
        check_options(options, CallOptions.__optional_keys__, "rerank")
        call = self._begin(query, candidates, **options)
        scored = self.scorer.score(call.query, call.miss_texts, call.settings) if call.miss_slots else None
        return self._finish(call, scored)

    async def arerank(self, query: str, candidates: Iterable[object], **options: Unpack[CallOptions]) -> RankedResults:
        """Async :meth:`rerank`: never blocks the event loop; concurrent calls share forward passes."""
        # Validation, text grouping and cache hashing of a long list run off the loop too.
        check_options(options, CallOptions.__optional_keys__, "arerank")
        call = await asyncio.to_thread(self._begin, query, candidates, **options)
        scored = await self.scorer.ascore(call.query, call.miss_texts, call.settings) if call.miss_slots else None
        return self._finish(call, scored)

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

    # ------------------------------------------------------------------ internals
    def _begin(
        self,
        query: object,
        documents: Iterable[object],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
        normalize: str | None = None,
        dedupe: bool | None = None,
        fusion: str | None = None,
        long_documents: str | None = None,
        max_windows: int | None = None,
        max_document_tokens: int | None = None,
        truncation_side: str | None = None,
        instruction: str | None = None,
    ) -> _Call:
        """Validate everything (before any model is touched), group equal texts, consult the cache."""
        t0 = time.perf_counter()
        q = check_query(query)
        options = RankOptions(
            top_n=check_top_n(top_n),
            threshold=check_threshold(threshold),
            normalize=check_choice("normalize", self.normalize if normalize is None else normalize, NORMALIZE_CHOICES),
            dedupe=self.dedupe if dedupe is None else bool(dedupe),
            fusion=check_choice("fusion", self.fusion if fusion is None else fusion, FUSION_CHOICES),
            rrf_k=self.rrf_k,
        )
        mode = self.long_documents if long_documents is None else long_documents
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidArgumentError(f"instruction must be a str or None, got {type(instruction).__name__}")
        settings = ScoreSettings(
            long_documents=check_choice("long_documents", mode, LONG_DOC_CHOICES),
            window_overlap=self.window_overlap,
            max_windows=check_positive_int("max_windows", max_windows, allow_none=True) or self.max_windows,
            aggregate=self.aggregate,
            max_document_tokens=check_positive_int("max_document_tokens", max_document_tokens, allow_none=True),
            truncation_side=check_choice("truncation_side", truncation_side or "right", TRUNCATION_SIDES),
            instruction=instruction,
        )
        self._check_settings(settings)
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
        call = _Call(
            query=q,
            candidates=cands,
            options=options,
            settings=settings,
            slot_of=slot_of,
            first_of_slot=first_of_slot,
            texts=texts,
            raw=np.full(n, np.nan, dtype=np.float64),
            windows=[0] * n,
            truncated=[False] * n,
            t0=t0,
        )
        # Listwise (rank-scale) scores depend on the whole list, so they are never cached per text.
        if self.cache is None or self.scorer.describe().scale == "rank":
            call.miss_slots = list(range(n))
            return call
        setup = f"{self.scorer.identity}:{settings.key()}"
        call.cache_keys = [ScoreCache.key(setup, q, t) for t in texts]
        for slot, ckey in enumerate(call.cache_keys):
            hit = self.cache.get(ckey)
            if hit is None:
                call.miss_slots.append(slot)
            else:
                call.raw[slot], call.windows[slot], call.truncated[slot] = hit
                call.hits += 1
        return call

    def _check_settings(self, settings: ScoreSettings) -> None:
        """Per-call options the scorer cannot apply are an error here, never dropped on the way."""
        asked = settings.per_call_options()
        if not asked:
            return
        check = getattr(self.scorer, "check_settings", None)
        if check is None:
            raise InvalidArgumentError(
                f"{', '.join(asked)} cannot be applied per call by {type(self.scorer).__name__} "
                "(a local model applies them)"
            )
        check(settings)

    def _fill(self, call: _Call, scored: Scored | None) -> Scored:
        """Put the scorer's results into their slots (and the cache)."""
        if scored is None:
            return Scored.empty()
        for j, slot in enumerate(call.miss_slots):
            call.raw[slot] = scored.raw[j]
            call.windows[slot] = scored.windows[j]
            call.truncated[slot] = scored.truncated[j]
            if call.cache_keys is not None and self.cache is not None:
                self.cache.put(call.cache_keys[slot], (float(scored.raw[j]), scored.windows[j], scored.truncated[j]))
        return scored

    def _per_candidate(self, call: _Call) -> np.ndarray:
        return call.raw[np.asarray(call.slot_of, dtype=np.int64)] if call.slot_of else np.empty(0)

    def _scores(self, call: _Call) -> list[float]:
        return [float(x) for x in normalize_scores(self._per_candidate(call), call.options.normalize)]

    def _finish(self, call: _Call, scored: Scored | None) -> RankedResults:
        s = self._fill(call, scored)
        dup_of = [call.first_of_slot[slot] for slot in call.slot_of]
        results, filtered = rank(
            call.candidates,
            self._per_candidate(call),
            duplicate_of=dup_of,
            windows=[call.windows[slot] for slot in call.slot_of],
            truncated=[call.truncated[slot] for slot in call.slot_of],
            options=call.options,
        )
        stats = RerankStats(
            candidates=len(call.candidates),
            pairs_scored=s.stats.pairs,
            tokens=s.stats.tokens,
            cache_hits=call.hits,
            cache_misses=len(call.miss_slots) if call.cache_keys is not None else 0,
            duplicates=len(call.candidates) - len(call.first_of_slot),
            truncated=sum(call.truncated[slot] for slot in call.slot_of),
            windows=s.stats.pairs,
            query_truncated=s.query_truncated,
            batch_retries=s.stats.batch_retries,
            tokenize_ms=s.stats.tokenize_s * 1000,
            model_ms=s.stats.model_s * 1000,
            total_ms=(time.perf_counter() - call.t0) * 1000,
            scorer=dict(s.details),
            token_cache_hits=s.stats.token_cache_hits,
            token_cache_misses=s.stats.token_cache_misses,
        )
        return RankedResults(
            query=call.query,
            results=results,
            filtered=filtered,
            normalize=call.options.normalize,
            model=self.model_name,
            backend=self.backend_name,
            stats=stats,
        )
