"""Multi-stage reranking: a cheap ranker orders many candidates, a costly one reorders the top few.

>>> from crossrank.llm import llm_reranker
>>> cascade = Cascade([(Reranker("cross-encoder/ms-marco-MiniLM-L6-v2"), None), (llm_reranker(chat_model), 10)])
>>> cascade.rerank(query, hundred_docs, top_n=5)      # doctest: +SKIP

Each stage is a :class:`~crossrank.Reranker` (any scorer: cross-encoder, causal LM, remote API,
LLM, late interaction; a bare :class:`~crossrank.scoring.Scorer` is wrapped in a default
``Reranker``) and ``keep``, how many candidates it takes from the top of the current order (None: all).
The first stage takes the first ``keep`` input candidates (the rest are reported as filtered,
reason ``top_n``); every later stage reorders the top ``keep`` of the order so far, and the
candidates it did not take follow in their earlier order. The result is a plain
:class:`~crossrank.RankedResults`: ``score`` / ``raw_score`` of each result come from the last
stage that ranked it, and ``stages`` holds every stage's :class:`~crossrank.results.StageScore`
(name, score, rank). Scores of different stages are on different scales: order results by
position, and compare scores only within a stage.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from typing_extensions import TypedDict, Unpack

from crossrank.errors import InvalidArgumentError
from crossrank.inputs import check_options, check_query, check_top_n, to_candidates
from crossrank.reranker import CallOptions, Reranker
from crossrank.results import Candidate, Filtered, Ranked, RankedResults, RerankStats, StageScore
from crossrank.scoring.base import Scorer

__all__ = ["Cascade", "CascadeOptions", "Stage", "StageScore"]

#: ``Cascade.fast`` defaults: prune on this many tokens, then the full model on the best ``FAST_KEEP``.
FAST_FIRST_LENGTH = 64
FAST_KEEP = 20


class CascadeOptions(TypedDict, total=False):
    """Per-call options of :meth:`Cascade.rerank`: ``top_n`` cuts the final order; ``threshold`` and
    ``normalize`` go to the first stage (see :class:`~crossrank.reranker.CallOptions`)."""

    top_n: int | None
    threshold: float | None
    normalize: str | None


@dataclass(frozen=True)
class Stage:
    """One cascade stage: a Reranker, how many candidates it takes (None: all), and its name in results.

    The default name is the scorer's kind (``cross-encoder``, ``llm-listwise``, ...), numbered when
    two stages share it.
    """

    reranker: Reranker
    keep: int | None = None
    name: str | None = None


def _stage(spec: Stage | Reranker | Scorer | tuple[Any, ...]) -> Stage:
    # A bare Scorer (e.g. a LateInteractionScorer) ranks through a Reranker with default options.
    if isinstance(spec, Scorer) and not isinstance(spec, Reranker):
        spec = Reranker(spec)
    if isinstance(spec, tuple) and spec and isinstance(spec[0], Scorer) and not isinstance(spec[0], Reranker):
        spec = (Reranker(spec[0]), *spec[1:])
    if isinstance(spec, Stage):
        stage = spec
    elif isinstance(spec, Reranker):
        stage = Stage(spec)
    elif isinstance(spec, tuple) and 1 <= len(spec) <= 3 and isinstance(spec[0], Reranker):
        stage = Stage(*spec)
    else:
        raise InvalidArgumentError(
            f"a cascade stage is a Reranker or Scorer, a (Reranker or Scorer, keep[, name]) tuple or a Stage; "
            f"got {spec!r}"
        )
    if stage.keep is not None and (isinstance(stage.keep, bool) or not isinstance(stage.keep, int) or stage.keep < 1):
        raise InvalidArgumentError(f"a stage's keep must be an int >= 1 or None, got {stage.keep!r}")
    return stage


@dataclass
class _Flow:
    """One cascade call in progress: the current order (candidate indices) and what each stage gave."""

    query: str
    candidates: list[Candidate]
    options: CascadeOptions
    order: list[int]
    t0: float
    stage_scores: list[list[StageScore]]
    last: dict[int, Ranked]  # candidate -> the record of the last stage that ranked it
    windows: dict[int, int]  # candidate -> windows the first stage scored it in
    truncated: set[int]  # candidates some stage had to cut
    filtered: list[Filtered]
    results: list[RankedResults]


@dataclass(frozen=True)
class _StageCall:
    """One stage's request: rank ``candidates`` with ``reranker`` and ``options``; hand the result to ``done``."""

    reranker: Reranker
    candidates: list[Candidate]
    options: CallOptions
    done: Callable[[RankedResults], None]


class Cascade:
    """Rerank in stages (see the module docs); ``rerank`` / ``arerank`` mirror :class:`~crossrank.Reranker`'s.

    ``threshold`` and ``normalize`` apply to the first stage (the one that sees every candidate and
    whose scale a threshold is usually calibrated on); later stages rank on their Reranker's own
    ``normalize``. ``top_n`` cuts the final order. Duplicate texts are handled by the first stage
    (its ``dedupe``); later stages never drop candidates.
    """

    def __init__(self, stages: Sequence[Stage | Reranker | Scorer | tuple[Any, ...]]) -> None:
        if not stages:
            raise InvalidArgumentError("a cascade needs at least one stage")
        parsed = [_stage(s) for s in stages]
        names: list[str] = []
        for s in parsed:
            base = s.name or s.reranker.scorer.describe().kind
            name, k = base, 2
            while name in names:
                name, k = f"{base}#{k}", k + 1
            names.append(name)
        self.stages = tuple(dataclasses.replace(s, name=n) for s, n in zip(parsed, names))

    @classmethod
    def fast(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        keep: int = FAST_KEEP,
        first_length: int | None = None,
        first_model: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> Cascade:
        """The speed preset: a cheap pass over every candidate, then ``model`` in full on the best ``keep``.

        Stage ``prune`` scores every candidate cheaply; stage ``full`` reorders the best ``keep``
        with ``model`` at its normal length and ``options`` (any :class:`~crossrank.Reranker`
        option: backend, long_documents, ...). The cheap pass is either

        * ``model`` itself on each candidate's first ``first_length`` tokens (default
          :data:`FAST_FIRST_LENGTH`; both stages share one loaded model), or
        * ``first_model``: a smaller reranker (e.g. ``crossrank finetune --teacher MODEL --layers 2``),
          at ``first_length`` tokens if given, else its own length.

        Measured on SciFact (README, "Less work per query"), reading only a prefix costs quality on
        long documents whose evidence comes late: at 64 tokens and ``keep=20`` nDCG@10 fell by
        0.048 for a 2.1× speed-up. Check the curve on your data (``benchmarks/cascade_curve.py``)
        before using the prefix pass where quality matters.
        """
        if first_length is not None and (
            isinstance(first_length, bool) or not isinstance(first_length, int) or first_length < 16
        ):
            raise InvalidArgumentError(f"first_length must be an int >= 16, got {first_length!r}")
        full = Reranker(model, **options)
        if first_model is None:
            first_length = first_length or FAST_FIRST_LENGTH
            max_length = full.max_length
            if max_length is not None and first_length >= max_length:
                raise InvalidArgumentError(
                    f"first_length={first_length} is not shorter than the model's max_length={max_length}: "
                    "the prune stage would cost as much as the full one"
                )
        prune_options = {**options, "long_documents": "truncate"}
        if first_length is not None:
            prune_options["max_length"] = first_length
        prune = Reranker(first_model if first_model is not None else model, **prune_options)
        return cls([Stage(prune, None, "prune"), Stage(full, keep, "full")])

    @property
    def model_name(self) -> str:
        """The stages' models, first to last."""
        return " > ".join(s.reranker.model_name for s in self.stages)

    @property
    def backend_name(self) -> str:
        """The stages' backends, first to last."""
        return " > ".join(s.reranker.backend_name for s in self.stages)

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.name}(keep={s.keep})" for s in self.stages)
        return f"Cascade([{inner}])"

    def rerank(self, query: str, candidates: Iterable[object], **options: Unpack[CascadeOptions]) -> RankedResults:
        """Rerank ``candidates`` through every stage; best first, at most ``top_n``."""
        flow = self._begin(query, candidates, options)
        for call in self._stage_calls(flow):
            call.done(call.reranker.rerank(flow.query, call.candidates, **call.options))
        return self._finish(flow)

    async def arerank(
        self, query: str, candidates: Iterable[object], **options: Unpack[CascadeOptions]
    ) -> RankedResults:
        """Async :meth:`rerank`: each stage runs through its Reranker's ``arerank``."""
        flow = self._begin(query, candidates, options)
        for call in self._stage_calls(flow):
            call.done(await call.reranker.arerank(flow.query, call.candidates, **call.options))
        return self._finish(flow)

    # ------------------------------------------------------------------ internals
    def _begin(self, query: object, candidates: Iterable[object], options: CascadeOptions) -> _Flow:
        t0 = time.perf_counter()
        check_options(options, CascadeOptions.__optional_keys__, "Cascade.rerank")
        q = check_query(query)
        check_top_n(options.get("top_n"))
        cands = to_candidates(candidates)
        n = len(cands)
        return _Flow(q, cands, options, list(range(n)), t0, [[] for _ in range(n)], {}, {}, set(), [], [])

    def _stage_calls(self, flow: _Flow) -> Iterator[_StageCall]:
        """Each stage's request in turn; lazy: a stage takes its candidates once the previous one is ``done``."""
        for k, stage in enumerate(self.stages):
            take = self._take(flow, k, stage)
            if take:
                yield _StageCall(
                    stage.reranker,
                    [flow.candidates[i] for i in take],
                    self._options(k, flow.options),
                    functools.partial(self._merge, flow, k, take),
                )

    def _take(self, flow: _Flow, k: int, stage: Stage) -> list[int]:
        take = flow.order if stage.keep is None else flow.order[: stage.keep]
        if k == 0 and len(take) < len(flow.order):  # the first stage caps the candidates looked at
            flow.filtered += [
                Filtered(index=i, id=flow.candidates[i].id, reason="top_n") for i in flow.order[len(take) :]
            ]
            flow.order = list(take)
        return list(take)

    @staticmethod
    def _options(k: int, options: CascadeOptions) -> CallOptions:
        if k == 0:
            return {"threshold": options.get("threshold"), "normalize": options.get("normalize")}
        return {"dedupe": False}

    def _merge(self, flow: _Flow, k: int, take: list[int], res: RankedResults) -> None:
        """Put stage ``k``'s order in front of the candidates it did not take; record its scores."""
        name = self.stages[k].name or ""
        ranked = []
        for r in res:
            i = take[r.index]
            ranked.append(i)
            flow.stage_scores[i].append(StageScore(name=name, score=r.score, rank=r.rank))
            dup = None if r.duplicate_of is None else take[r.duplicate_of]
            flow.last[i] = dataclasses.replace(r, index=i, duplicate_of=dup)
            flow.windows.setdefault(i, r.windows)
            if r.truncated:
                flow.truncated.add(i)
        dropped = set()
        for f in res.filtered:  # only the first stage filters (threshold, duplicates)
            i = take[f.index]
            dropped.add(i)
            dup = None if f.duplicate_of is None else take[f.duplicate_of]
            flow.filtered.append(dataclasses.replace(f, index=i, duplicate_of=dup))
        taken = set(take)
        flow.order = ranked + [i for i in flow.order if i not in taken and i not in dropped]
        flow.results.append(res)

    def _finish(self, flow: _Flow) -> RankedResults:
        top_n = flow.options.get("top_n")
        results: list[Ranked] = []
        for i in flow.order:
            rec = flow.last[i]
            if top_n is not None and len(results) >= top_n:
                flow.filtered.append(Filtered(index=i, id=rec.id, reason="top_n", score=rec.score))
                continue
            results.append(
                dataclasses.replace(
                    rec,
                    rank=len(results) + 1,
                    first_stage_rank=i + 1,
                    windows=flow.windows[i],
                    truncated=i in flow.truncated,
                    stages=tuple(flow.stage_scores[i]),
                )
            )
        return RankedResults(
            query=flow.query,
            results=tuple(results),
            filtered=tuple(flow.filtered),
            normalize=flow.results[0].normalize if flow.results else (flow.options.get("normalize") or "none"),
            model=self.model_name,
            backend=self.backend_name,
            stats=self._stats(flow),
        )

    def _stats(self, flow: _Flow) -> RerankStats:
        per_stage = []
        for stage, res in zip(self.stages, flow.results):
            s = res.stats
            per_stage.append(
                {
                    "name": stage.name,
                    "model": res.model,
                    "backend": res.backend,
                    "candidates": s.candidates,
                    "total_ms": s.total_ms,
                    "scorer": dict(s.scorer),
                }
            )
        stats = [r.stats for r in flow.results]
        first = stats[0] if stats else RerankStats()
        return RerankStats(
            candidates=len(flow.candidates),
            pairs_scored=sum(s.pairs_scored for s in stats),
            cache_hits=sum(s.cache_hits for s in stats),
            cache_misses=sum(s.cache_misses for s in stats),
            duplicates=first.duplicates,
            truncated=len(flow.truncated),
            windows=sum(s.windows for s in stats),
            query_truncated=any(s.query_truncated for s in stats),
            batch_retries=sum(s.batch_retries for s in stats),
            tokenize_ms=sum(s.tokenize_ms for s in stats),
            model_ms=sum(s.model_ms for s in stats),
            total_ms=(time.perf_counter() - flow.t0) * 1000,
            scorer={"stages": per_stage},
            token_cache_hits=sum(s.token_cache_hits for s in stats),
            token_cache_misses=sum(s.token_cache_misses for s in stats),
        )
