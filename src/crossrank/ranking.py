"""The ranking step: raw scores in, ordered results and filter reports out. Pure: no model, no I/O.

Every scorer (local model, remote API, LLM) ranks through this one function, so ties, scales,
thresholds, ``top_n``, duplicates and fusion behave the same whatever produced the scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossrank.results import Candidate, Filtered, Ranked, clean_float
from crossrank.scales import normalize_scores, ranks_desc, rrf


@dataclass(frozen=True)
class RankOptions:
    """How to turn scores into a ranked list (validated by the caller).

    ``threshold`` applies on the ``normalize`` scale before ``top_n``; ``dedupe`` drops later
    candidates whose text repeats an earlier one; ``fusion="rrf"`` orders by reciprocal rank fusion
    of the input order (the first stage) and the rerank order.
    """

    top_n: int | None = None
    threshold: float | None = None
    normalize: str = "none"
    dedupe: bool = False
    fusion: str = "none"
    rrf_k: int = 60


def rank(
    candidates: Sequence[Candidate],
    raw: np.ndarray,
    *,
    duplicate_of: Sequence[int],
    windows: Sequence[int],
    truncated: Sequence[bool],
    options: RankOptions,
) -> tuple[tuple[Ranked, ...], tuple[Filtered, ...]]:
    """Order ``candidates`` by ``raw`` (one score each, input order), best first.

    ``duplicate_of[i]`` is the index of the first candidate with the same text (``i`` itself when
    the text is new); ``windows`` / ``truncated`` say how each candidate was fitted to the model.
    Ties keep input order. Every candidate ends up either in the results or in the filtered
    reports, with the reason.
    """
    filtered: list[Filtered] = []
    keep = list(range(len(candidates)))
    if options.dedupe:
        keep = [i for i in keep if duplicate_of[i] == i]
        filtered += [
            Filtered(index=i, id=candidates[i].id, reason="duplicate", duplicate_of=duplicate_of[i])
            for i in range(len(candidates))
            if duplicate_of[i] != i
        ]
    kept_raw = np.asarray(raw, dtype=np.float64)[keep] if keep else np.empty(0)
    scores = normalize_scores(kept_raw, options.normalize)
    fused: np.ndarray | None = None
    if options.fusion == "rrf" and keep:
        first_rank = np.asarray(keep, dtype=np.int64) + 1  # input order is the first-stage order
        fused = rrf(first_rank, ranks_desc(kept_raw), options.rrf_k)
    sort_key = fused if fused is not None else kept_raw
    order = np.lexsort((np.arange(len(keep)), -sort_key)) if keep else np.empty(0, dtype=np.int64)
    results: list[Ranked] = []
    for pos in order.tolist():
        i = keep[pos]
        c = candidates[i]
        score = float(scores[pos])
        if options.threshold is not None and score < options.threshold:
            filtered.append(Filtered(index=i, id=c.id, reason="threshold", score=score))
            continue
        if options.top_n is not None and len(results) >= options.top_n:
            filtered.append(Filtered(index=i, id=c.id, reason="top_n", score=score))
            continue
        results.append(
            Ranked(
                index=i,
                rank=len(results) + 1,
                score=score,
                raw_score=float(kept_raw[pos]),
                text=c.text,
                id=c.id,
                metadata=c.metadata,
                first_stage_score=clean_float(c.score),
                first_stage_rank=i + 1,
                windows=windows[i],
                truncated=truncated[i],
                fused_score=None if fused is None else float(fused[pos]),
                duplicate_of=None if duplicate_of[i] == i else duplicate_of[i],
            )
        )
    return tuple(results), tuple(filtered)
