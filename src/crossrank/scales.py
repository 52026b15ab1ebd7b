"""Score scales, window aggregation and rank fusion: the small numeric rules of reranking.

Scales (``normalize``):
- ``none``: the model's raw output (a logit; roughly -10..10 for ms-marco models). Comparable across
  queries for one model, so a fixed threshold is meaningful, but not a probability.
- ``sigmoid``: ``1 / (1 + exp(-raw))`` in (0, 1). For 1-logit models trained with BCE (ms-marco) and
  for 2-logit heads this is the model's probability of relevance. Comparable across queries.
- ``softmax``: over the candidate list of one query; sums to 1. Says how the candidates share the
  relevance mass, not whether any is relevant.
- ``minmax``: ``(raw - min) / (max - min)`` over the candidate list; best is 1, worst 0 (all 1.0
  when every score is equal). Only meaningful within one query.
"""

from __future__ import annotations

import numpy as np


def normalize_scores(raw: np.ndarray, how: str) -> np.ndarray:
    x = np.asarray(raw, dtype=np.float64)
    if x.size == 0 or how == "none":
        return x
    if how == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -500, 500))))
    if how == "softmax":
        e = np.exp(x - x.max())
        return np.asarray(e / e.sum())
    if how == "minmax":
        lo, hi = float(x.min()), float(x.max())
        if hi - lo <= 0:
            return np.ones_like(x)
        return (x - lo) / (hi - lo)
    raise ValueError(f"unknown normalize {how!r}")


def aggregate_windows(scores: np.ndarray, owner: np.ndarray, n_docs: int, how: str) -> np.ndarray:
    """One score per document from its windows: max (default), mean of the best two, or the first."""
    out = np.full(n_docs, -np.inf, dtype=np.float64)
    if how == "max":
        np.maximum.at(out, owner, scores)
        return out
    if how == "first":
        seen = np.zeros(n_docs, dtype=bool)
        for s, o in zip(scores, owner):
            if not seen[o]:
                out[o], seen[o] = s, True
        return out
    best: list[list[float]] = [[] for _ in range(n_docs)]
    for s, o in zip(scores.tolist(), owner.tolist()):
        best[o].append(s)
    for d, vals in enumerate(best):
        top = sorted(vals, reverse=True)[:2]
        out[d] = sum(top) / len(top)
    return out


def ranks_desc(values: np.ndarray) -> np.ndarray:
    """1-based ranks, best (largest) first; ties broken by input order."""
    order = np.lexsort((np.arange(len(values)), -np.asarray(values, dtype=np.float64)))
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks


def rrf(first_stage_rank: np.ndarray, rerank_rank: np.ndarray, k: int = 60) -> np.ndarray:
    """Reciprocal rank fusion (Cormack et al. 2009), with k=60 as in Chroma's own RRF."""
    return 1.0 / (k + first_stage_rank) + 1.0 / (k + rerank_rank)
