"""``crossrank eval --late-interaction MODEL``: late interaction alone and the three stages, as table rows.

For every first stage and every late depth L (``--late-candidates 100,200``): late interaction
reorders the first stage's top L (one row), and for every cross-encoder depth C below L
(``--candidates 20,30``) the cross-encoder reranks late interaction's best C (the three stages:
first stage L → late interaction → cross-encoder C; one row each), for each ``--fusion``: with
``rrf`` late interaction alone is fused with the first stage's rank, and the cross-encoder with late
interaction's (the stage before it, as the other rows fuse). The documents' token vectors
come from the collection's late-interaction store, synced first (only new or changed documents
are encoded; the report gives the store's size and the time indexing took), so a row's ms/query is
what a query costs in production: encoding the query, reading its candidates' stored vectors,
MaxSim, and for the three stages the cross-encoder on C candidates. Every row is timed cold: a new
late-interaction scorer (empty vector cache) per row and the cross-encoder's score cache emptied
before it, on the first first stage, as the cross-encoder rows are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossrank.reranker import Reranker
    from crossrank.retrieval.beir import BeirDataset
    from crossrank.retrieval.pipeline import Pipeline


def late_rows(
    ds: BeirDataset,
    queries: Sequence[tuple[str, str]],
    runs_at: dict[int, dict[str, dict[str, list[str]]]],
    sources: Sequence[str],
    *,
    pipe: Pipeline,
    late: str,
    late_depths: Sequence[int],
    ce_depths: Sequence[int],
    reranker: Reranker,
    long_documents: str,
    late_store: str | None,
    fusions: Sequence[str] = ("none",),
    db: str | None,
    chroma_url: str | None,
    progress: bool,
    latency: Callable[[Sequence[float]], dict[str, float]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The late-interaction rows (see the module docs) and what syncing the store reported."""
    from tqdm.auto import tqdm

    from crossrank.late import LateInteractionScorer
    from crossrank.reranker import Reranker
    from crossrank.results import Candidate
    from crossrank.retrieval.beir import evaluate
    from crossrank.retrieval.late_stage import LateStage, default_store_path

    where = late_store or default_store_path(db, chroma_url, pipe.collection_name)
    stage = LateStage(
        late, collection=pipe.collection, collection_name=pipe.collection_name, store=where, candidates=max(late_depths)
    )
    sync = stage.index(progress=progress)
    checked = stage.scorer  # opens the store and checks it against the collection
    store, model = checked.store, checked.model
    model.encode_queries(["warm up"])  # load the model before anything is timed
    reranker.warmup()
    rows: list[dict[str, Any]] = []
    for depth in sorted(late_depths):
        plans: list[int | None] = [None, *(c for c in sorted(ce_depths) if c < depth)]
        for keep in plans:
            cold: list[float] = []
            for i, source in enumerate(sources):
                # Empty vector and score caches: cold. The score cache lets later fusions reuse the first's scores.
                late_rr = Reranker(LateInteractionScorer(model, store=store), cache_size=len(queries) * depth)
                if reranker.cache is not None:
                    reranker.cache.clear()
                out: dict[str, dict[str, list[str]]] = {f: {} for f in fusions}
                took: list[float] = []
                encoded = 0
                label = f"late interaction, top {depth}" + (f" → cross-encoder top {keep}" if keep else "")
                for qid, text in tqdm(queries, unit="query", desc=f"{source} → {label}", disable=not progress):
                    cands = [Candidate(ds.doc_text(d), id=d) for d in runs_at[depth][source][qid]]
                    for j, fusion in enumerate(fusions):
                        # Timed on the first fusion; the others reuse its cached scores (as the
                        # cross-encoder rows do). rrf fuses late interaction alone with the first
                        # stage's rank, and the cross-encoder with late interaction's rank: each
                        # last stage with the stage before it.
                        t = time.perf_counter()
                        res = late_rr.rerank(text, cands, fusion="none" if keep else fusion)
                        order = [r.id or "" for r in res]
                        if keep:
                            top = [Candidate(ds.doc_text(d), id=d) for d in order[:keep]]
                            ce = reranker.rerank(text, top, long_documents=long_documents, fusion=fusion)
                            order = [r.id or "" for r in ce] + order[keep:]
                        if j == 0:
                            took.append(time.perf_counter() - t)
                            encoded += int(res.stats.scorer.get("encoded", 0))
                        out[fusion][qid] = order
                if i == 0:
                    cold = took
                for fusion in fusions:
                    rows.append(
                        {
                            "first_stage": source,
                            "candidates": keep or depth,
                            "late_candidates": depth,
                            "stage": "late+rerank" if keep else "late",
                            "label": label,
                            "max_length": reranker.max_length if keep else model.document_length,
                            "long_documents": long_documents if keep else "truncate",
                            "fusion": fusion,
                            "metrics": evaluate(out[fusion], ds.qrels),
                            "rerank_ms": latency(cold),
                            "pass_ms": latency(took),
                            "encoded_on_the_fly": encoded,
                            "pairs_scored": 0,
                            "cache_hits": 0,
                            "truncated_fraction": 0.0,
                            "long_fraction": 0.0,
                            "windows_per_doc": 1.0,
                        }
                    )
    info = {
        "model": late,
        "store": str(stage.store_path),
        "precision": checked.precision,
        "pool_factor": checked.pool_factor,
        "dim": model.dim,
        "document_length": model.document_length,
        **sync.to_dict(),
    }
    return rows, info
