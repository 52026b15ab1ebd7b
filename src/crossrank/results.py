"""Plain result records shared by the core and both adapters.

They are frozen dataclasses holding Python builtins only (floats, ints, strings), so results
serialise to JSON as they are and can be shared across threads without copying.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, overload

FilterReason = Literal["top_n", "threshold", "duplicate"]


@dataclass(frozen=True)
class Candidate:
    """A document to rerank: its text plus whatever the first stage knew about it.

    ``score`` is the first-stage score (similarity or distance, as the caller's store defines it);
    crossrank never interprets it except for ``fusion="rrf"``, which uses the input *order*.
    """

    text: str
    id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    score: float | None = None


@dataclass(frozen=True)
class StageScore:
    """What one stage of a :class:`~crossrank.cascade.Cascade` gave a candidate.

    ``score`` is on that stage's own scale (a cross-encoder logit, an LLM rating, a listwise rank
    score), so compare it only with the same stage's scores; ``rank`` is 1-based within the stage.
    """

    name: str
    score: float
    rank: int


@dataclass(frozen=True)
class Ranked:
    """One reranked candidate.

    ``score`` is on the scale chosen with ``normalize``; ``raw_score`` is the model output
    (the logit, or the positive-minus-negative logit for two-label heads). After a
    :class:`~crossrank.cascade.Cascade`, ``score`` / ``raw_score`` come from the last stage that
    ranked the candidate and ``stages`` holds every stage's score and rank (empty otherwise).
    """

    index: int
    rank: int
    score: float
    raw_score: float
    text: str
    id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    first_stage_score: float | None = None
    first_stage_rank: int = 0
    windows: int = 1
    truncated: bool = False
    fused_score: float | None = None
    duplicate_of: int | None = None
    stages: tuple[StageScore, ...] = ()

    @property
    def movement(self) -> int:
        """Places gained versus the first stage (positive = moved up)."""
        return self.first_stage_rank - self.rank

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metadata"] = dict(self.metadata)
        return d


@dataclass(frozen=True)
class Filtered:
    """A candidate that is not in the results, and why: nothing is dropped silently."""

    index: int
    id: str | None
    reason: FilterReason
    score: float | None = None
    duplicate_of: int | None = None


@dataclass(frozen=True)
class RerankStats:
    """What one rerank call did: counts and timings (milliseconds).

    ``scorer`` holds scorer-specific counters as JSON-serialisable builtins (an LLM scorer's
    calls, tokens, failures and parse reports; a cascade's per-stage reports); empty otherwise.
    ``tokens``: the tokens of every model input a local model ran (query, document, special and
    prompt tokens after truncation, every window; padding, cache hits and duplicates not counted).
    ``token_cache_hits`` / ``token_cache_misses``: documents a local cross-encoder took from its
    token cache / tokenized (see :mod:`crossrank.scoring.token_cache`); both 0 where none is used.
    """

    candidates: int = 0
    pairs_scored: int = 0
    tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    duplicates: int = 0
    truncated: int = 0
    windows: int = 0
    query_truncated: bool = False
    batch_retries: int = 0
    tokenize_ms: float = 0.0
    model_ms: float = 0.0
    total_ms: float = 0.0
    scorer: Mapping[str, Any] = field(default_factory=dict)
    token_cache_hits: int = 0
    token_cache_misses: int = 0


@dataclass(frozen=True)
class RankedResults(Sequence[Ranked]):
    """The reranked list, best first, plus what was filtered out and how the call went.

    Behaves like a read-only list of :class:`Ranked`, so ``for r in results`` and
    ``results[0]`` work as with a plain list.
    """

    query: str
    results: tuple[Ranked, ...]
    filtered: tuple[Filtered, ...] = ()
    normalize: str = "none"
    model: str = ""
    backend: str = ""
    stats: RerankStats = field(default_factory=RerankStats)

    @overload
    def __getitem__(self, i: int) -> Ranked: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Ranked]: ...
    def __getitem__(self, i: int | slice) -> Ranked | Sequence[Ranked]:
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Ranked]:
        return iter(self.results)

    def top(self, n: int) -> list[Ranked]:
        return list(self.results[:n])

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.results]

    @property
    def indices(self) -> list[int]:
        return [r.index for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "model": self.model,
            "backend": self.backend,
            "normalize": self.normalize,
            "results": [r.to_dict() for r in self.results],
            "filtered": [asdict(f) for f in self.filtered],
            "stats": asdict(self.stats),
        }


def clean_float(x: float | None) -> float | None:
    """Python float or None; NaN first-stage scores count as missing."""
    if x is None:
        return None
    f = float(x)
    return None if math.isnan(f) else f
