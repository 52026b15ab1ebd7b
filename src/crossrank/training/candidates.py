"""Candidates and hard negatives, from the same first stage the pipeline serves.

Every list comes from :func:`crossrank.retrieval.first_stage.first_stage`: dense (a Chroma
collection, or :class:`InMemoryDense` over a pool of texts when there is no collection), BM25, or
their hybrid. Training on the candidates the first stage really returns is the point: the student
learns to order what it will be asked to order, and mined negatives are the near misses the
reranker will meet.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from crossrank.errors import InvalidArgumentError
from crossrank.retrieval.bm25 import BM25Index
from crossrank.retrieval.first_stage import SOURCES, DenseSearch, first_stage
from crossrank.training.queries import TrainQuery


class InMemoryDense:
    """Exact cosine search over a pool of texts embedded once with a sentence-transformers model.

    The dense retriever for data that lives in no Chroma collection (a JSONL file of pairs): it
    has the ``(query, k) -> ids`` shape :func:`first_stage` takes.
    """

    def __init__(
        self, embedder: str, ids: Sequence[str], texts: Sequence[str], *, progress: bool = True, device: str = "cpu"
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(embedder, device=device)
        self.ids = list(ids)
        self.vectors = np.asarray(
            self.model.encode(
                list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
            ),
            dtype=np.float32,
        )

    def __call__(self, query: str, k: int) -> list[str]:
        q = np.asarray(self.model.encode([query], normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)
        sims = self.vectors @ q[0]
        k = min(k, len(self.ids))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(self.ids) else np.arange(len(self.ids))
        order = top[np.lexsort((top, -sims[top]))]  # equal similarity: pool order, so runs repeat exactly
        return [self.ids[int(i)] for i in order]


def check_sources(sources: Sequence[str]) -> list[str]:
    """The first-stage names, validated against :data:`~crossrank.retrieval.first_stage.SOURCES`."""
    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        raise InvalidArgumentError(f"first stage {bad or list(sources)!r} is not supported; choose from {SOURCES}")
    return list(dict.fromkeys(sources))


def mine(
    queries: Sequence[TrainQuery],
    source: str,
    *,
    candidates: int,
    dense: DenseSearch | None = None,
    bm25: BM25Index | None = None,
    progress: bool = True,
    desc: str = "first stage",
) -> dict[str, list[str]]:
    """Every query's top ``candidates`` ids from the ``source`` first stage (qid -> ids, best first)."""
    from tqdm.auto import tqdm

    out: dict[str, list[str]] = {}
    for q in tqdm(queries, unit="query", desc=f"{desc} ({source} top-{candidates})", disable=not progress):
        out[q.qid] = first_stage(q.text, source, candidates=candidates, dense=dense, bm25=bm25)
    return out


def with_positives(ids: Sequence[str], positives: Mapping[str, int], known: Callable[[str], bool]) -> list[str]:
    """``ids`` plus the known positives it lacks (those ``known`` to exist), appended in id order.

    The teacher must score a query's known positives even when the first stage missed them: they
    are the examples the student most needs to move up.
    """
    have = set(ids)
    extra = sorted(d for d, r in positives.items() if r > 0 and d not in have and known(d))
    return [*ids, *extra]


def hard_negatives(
    lists: Sequence[Sequence[str]],
    exclude: set[str],
    n: int,
    rng: random.Random,
) -> list[str]:
    """``n`` negatives drawn at random from the union of first-stage ``lists``, never from ``exclude``.

    Drawn, not the top ``n``: the very first non-positive hits are often unjudged positives, and a
    sample of the candidate lists teaches the ranking the reranker sees. Interleaving the lists
    first keeps both sources represented when the union is short.
    """
    pool: list[str] = []
    seen = set(exclude)
    for rank in range(max((len(lst) for lst in lists), default=0)):
        for lst in lists:
            if rank < len(lst) and lst[rank] not in seen:
                seen.add(lst[rank])
                pool.append(lst[rank])
    return pool if len(pool) <= n else rng.sample(pool, n)


def bm25_over(ids: Sequence[str], texts: Sequence[str]) -> BM25Index:
    """A BM25 index over the given documents (the ``bm25`` and ``hybrid`` first stages need one)."""
    return BM25Index(list(ids), list(texts))


def describe_lists(lists: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """Mean and minimum list length, for the run report."""
    sizes = [len(v) for v in lists.values()] or [0]
    return {"queries": len(lists), "mean": float(np.mean(sizes)), "min": float(min(sizes))}
