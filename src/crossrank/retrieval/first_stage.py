"""The first stage, written once: ``dense`` (a Chroma collection), ``bm25`` or ``hybrid`` (RRF of the two).

``Pipeline.retrieve`` calls :func:`first_stage`, and so do ``crossrank eval`` and
``benchmarks/quality_table.py`` (through :func:`crossrank.retrieval.beir.first_stage_runs`), so a
query gets the same candidate list wherever it is asked. Before, the hybrid list was fused in three
places with the lists in different orders, and reciprocal-rank fusion has many exact ties (a
document at rank 3 in one list only scores the same as a document at rank 3 in the other list
only), so the three places broke ties differently and disagreed.

Hybrid fusion (:func:`rrf_fuse`): each source gives its top ``candidates``; a document scores
``sum(1 / (k + rank))`` over the lists it is in (k=60, as in Chroma's own RRF), and the fused list
is cut to ``candidates``. Ties are broken, in order, by

1. the fused score, higher first (summed with ``math.fsum``, so it does not depend on list order);
2. the best rank the document has in any list, lower first (a document some retriever put at the
   top beats one that every retriever put in the middle);
3. the rank in the first list, the dense one, lower first; documents it lacks come after those it
   has (the dense list is the one the pipeline has distances for);
4. the document id, so the result never depends on set or dict iteration order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from crossrank.errors import InvalidArgumentError
from crossrank.inputs import check_positive_int

if TYPE_CHECKING:
    from crossrank.retrieval.bm25 import BM25Index

SOURCES: tuple[str, ...] = ("dense", "bm25", "hybrid")
RRF_K = 60

DenseSearch = Callable[[str, int], Sequence[str]]
"""``(query, k) -> ids``: the dense retriever's top ``k``, nearest first."""


def rrf_fuse(lists: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[str]:
    """Fuse ranked id lists by reciprocal rank with the tie rule in the module docstring.

    ``lists[0]`` is the list whose order breaks the remaining ties (the dense list in
    :func:`first_stage`). Every id of every list is returned, best first; cut it to the size you need.
    """
    check_positive_int("k", k)
    terms: dict[str, list[float]] = {}
    best: dict[str, int] = {}
    for lst in lists:
        for rank, doc in enumerate(lst, 1):
            terms.setdefault(doc, []).append(1.0 / (k + rank))
            best[doc] = min(best.get(doc, rank), rank)
    score = {doc: math.fsum(t) for doc, t in terms.items()}
    lead = {doc: rank for rank, doc in enumerate(lists[0], 1)} if lists else {}
    absent = len(lead) + 1
    return sorted(score, key=lambda d: (-score[d], best[d], lead.get(d, absent), d))


def first_stage(
    query: str,
    source: str,
    *,
    candidates: int,
    dense: DenseSearch | None = None,
    bm25: BM25Index | None = None,
) -> list[str]:
    """Candidate ids for ``query`` from ``source`` ("dense", "bm25" or "hybrid"), best first.

    ``dense`` searches the Chroma collection (``Pipeline.dense_ids`` or a wrapper of
    ``Pipeline.dense_search``); ``bm25`` is a :class:`~crossrank.retrieval.bm25.BM25Index` over the
    same documents. Hybrid takes ``candidates`` from each (BM25's without documents that match no
    query term) and keeps the best ``candidates`` of :func:`rrf_fuse` with the dense list first.
    """
    k = check_positive_int("candidates", candidates) or 1
    if source not in SOURCES:
        raise InvalidArgumentError(f"first stage {source!r} is not supported; choose one of {', '.join(SOURCES)}")
    lists: list[list[str]] = []  # dense first: in hybrid, its order breaks the ties rrf_fuse leaves
    if source in ("dense", "hybrid"):
        if dense is None:
            raise InvalidArgumentError(f"the {source} first stage needs a dense retriever (a Chroma collection)")
        lists.append(list(dense(query, k))[:k])
    if source in ("bm25", "hybrid"):
        if bm25 is None:
            raise InvalidArgumentError(f"the {source} first stage needs a BM25 index")
        found = bm25.search(query, k)
        # Fused, a document matching no query term would earn rank credit like a real match: BM25's
        # list in hybrid holds only documents that share a term with the query.
        lists.append([doc for doc, score in found if score > 0 or source == "bm25"])
    return lists[0] if len(lists) == 1 else rrf_fuse(lists)[:k]
