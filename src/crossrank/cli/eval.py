"""``crossrank eval``: first stage vs reranked on a BEIR dataset, with latency per stage.

The dense first stage runs in a Chroma collection named after the dataset and the embedder, so
the corpus is embedded once and reused on later runs.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.reranker import Reranker
from crossrank.results import Candidate
from crossrank.retrieval.beir import BeirDataset, evaluate, load_beir
from crossrank.retrieval.indexing import Chunk
from crossrank.scales import rrf_merge

FirstStage = list[tuple[str, float]]  # (doc id, first-stage score or distance), best first


def _collection_name(ds: BeirDataset, embedder: str) -> str:
    tag = hashlib.sha1(embedder.encode()).hexdigest()[:8]
    return f"beir-{ds.path.name}-{tag}"[:60]


def dense_stage(
    ds: BeirDataset,
    *,
    embedder: str | None,
    db: str | None,
    chroma_url: str | None,
    collection: str | None,
    progress: bool,
) -> Any:
    from tqdm.auto import tqdm

    from crossrank.retrieval.embeddings import resolve_embedder
    from crossrank.retrieval.pipeline import Pipeline

    spec = resolve_embedder(embedder)
    pipe = Pipeline(collection or _collection_name(ds, spec), db=db, chroma_url=chroma_url, embedder=spec, create=True)
    if pipe.count() != len(ds.corpus):
        ids = list(ds.corpus)
        bar = tqdm(total=len(ids), unit="doc", desc="embedding corpus (cached for next runs)", disable=not progress)
        for s in range(0, len(ids), 256):
            part = ids[s : s + 256]
            pipe.add_chunks([Chunk(d, ds.doc_text(d), {"source": "corpus.jsonl", "chunk": 0}) for d in part])
            bar.update(len(part))
        bar.close()
    return pipe


def run_eval(
    dataset: str | Path,
    *,
    limit: int | None = None,
    candidates: int = 100,
    first_stage: str = "dense",
    model: str,
    embedder: str | None = None,
    db: str | None = None,
    chroma_url: str | None = None,
    collection: str | None = None,
    split: str = "test",
    fusion: str = "none",
    progress: bool = True,
    reranker: Reranker | None = None,
    **reranker_kwargs: Any,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    ds = load_beir(dataset, split)
    queries = ds.test_queries(limit)
    rr = reranker or Reranker(model, **reranker_kwargs)
    pipe = bm25 = None
    if first_stage in ("dense", "hybrid"):
        pipe = dense_stage(
            ds, embedder=embedder, db=db, chroma_url=chroma_url, collection=collection, progress=progress
        )
    if first_stage in ("bm25", "hybrid"):
        from crossrank.retrieval.bm25 import BM25Index

        ids = list(ds.corpus)
        bm25 = BM25Index(ids, [ds.doc_text(d) for d in ids])
    first_runs: dict[str, list[str]] = {}
    reranked: dict[str, list[str]] = {}
    t_first: list[float] = []
    t_rerank: list[float] = []
    truncated = total = 0
    for qid, text in tqdm(queries, unit="query", desc="evaluating", disable=not progress):
        t0 = time.perf_counter()
        lists = []
        if pipe is not None:
            lists.append([c.id or "" for c, _ in pipe.retrieve(text, candidates=candidates)])
        if bm25 is not None:
            lists.append([d for d, _ in bm25.search(text, candidates)])
        ranked_ids = lists[0] if len(lists) == 1 else rrf_merge(lists)[:candidates]
        t1 = time.perf_counter()
        res = rr.rerank(text, [Candidate(ds.doc_text(d), id=d) for d in ranked_ids], fusion=fusion)
        t2 = time.perf_counter()
        first_runs[qid] = ranked_ids
        reranked[qid] = [r.id or "" for r in res]
        t_first.append(t1 - t0)
        t_rerank.append(t2 - t1)
        truncated += res.stats.truncated
        total += res.stats.candidates

    def lat(xs: list[float]) -> dict[str, float]:
        a = np.asarray(xs) * 1000 if xs else np.zeros(1)
        return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95))}

    return {
        "dataset": str(ds.path),
        "split": split,
        "queries": len(queries),
        "candidates": candidates,
        "first_stage": first_stage,
        "model": rr.model_name,
        "backend": rr.backend_name,
        "max_length": rr.max_length,
        "long_documents": rr.long_documents,
        "fusion": fusion,
        "embedder": pipe.embedder if pipe is not None else None,
        "metrics": {"first_stage": evaluate(first_runs, ds.qrels), "reranked": evaluate(reranked, ds.qrels)},
        "latency_ms": {"first_stage": lat(t_first), "rerank": lat(t_rerank)},
        "truncated_fraction": truncated / total if total else 0.0,
    }


def format_report(r: dict[str, Any]) -> str:
    m = r["metrics"]
    lines = [
        f"{Path(r['dataset']).name} ({r['split']}): {r['queries']} queries · {r['first_stage']} top-{r['candidates']} "
        f"→ {Path(r['model']).name} ({r['backend']}, max_length {r['max_length']}, {r['long_documents']}, "
        f"fusion {r['fusion']})",
        "",
        f"{'':<14}{'nDCG@10':>9}{'MRR@10':>9}{'R@10':>8}{'R@100':>8}",
    ]
    for name, key in (("first stage", "first_stage"), ("reranked", "reranked")):
        x = m[key]
        lines.append(f"{name:<14}{x['ndcg@10']:>9.4f}{x['mrr@10']:>9.4f}{x['recall@10']:>8.3f}{x['recall@100']:>8.3f}")
    gain = m["reranked"]["ndcg@10"] - m["first_stage"]["ndcg@10"]
    lat = r["latency_ms"]
    lines += [
        f"{'Δ rerank':<14}{gain:>+9.4f}",
        "",
        f"latency per query: first stage p50 {lat['first_stage']['p50']:.0f} ms"
        f" / p95 {lat['first_stage']['p95']:.0f} ms"
        f" · rerank p50 {lat['rerank']['p50']:.0f} ms / p95 {lat['rerank']['p95']:.0f} ms",
        f"candidates longer than max_length: {100 * r['truncated_fraction']:.0f}%"
        + (" (scored in windows)" if r["long_documents"] == "windows" else " (truncated)"),
    ]
    return "\n".join(lines)
