"""BEIR-format datasets, the standard IR metrics (nDCG@k, MRR@k, Recall@k), and their first stages.

Metrics follow BEIR / pytrec_eval conventions: graded gains ``rel`` (linear, not 2^rel-1, as
pytrec_eval's ndcg_cut), ideal DCG from the qrels, queries with no relevant documents skipped.

:func:`dense_pipeline` caches a corpus in Chroma and :func:`first_stage_runs` gives every query's
dense, BM25 or hybrid candidates through :func:`crossrank.retrieval.first_stage.first_stage`: what
``crossrank eval``, ``crossrank bench`` and ``benchmarks/quality_table.py`` evaluate.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from crossrank.errors import DatasetError, InvalidArgumentError
from crossrank.jsonl import read_jsonl
from crossrank.retrieval.first_stage import SOURCES, first_stage

if TYPE_CHECKING:
    from crossrank.retrieval.bm25 import BM25Index
    from crossrank.retrieval.pipeline import Pipeline

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder in memory: ``corpus`` (id -> title, text), ``queries`` (id -> text), ``qrels``."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels
    path: Path

    def doc_text(self, doc_id: str) -> str:
        """The text every stage sees for a document: "title abstract"."""
        d = self.corpus[doc_id]
        # "title abstract", the layout the shared reranker was trained on (BEIR's own convention).
        return f"{d.get('title') or ''} {d.get('text', '')}".strip()

    def test_queries(self, limit: int | None = None) -> list[tuple[str, str]]:
        """``(qid, text)`` of the judged queries in qrels order, the first ``limit`` if given."""
        ids = [q for q in self.qrels if q in self.queries]
        ids = ids[:limit] if limit else ids
        return [(q, self.queries[q]) for q in ids]

    @cached_property
    def bm25(self) -> BM25Index:
        """BM25 over every document's :meth:`doc_text`, built on first use and kept with the dataset.

        ``crossrank eval``, ``crossrank bench`` and the quality table all take their BM25 (and
        hybrid) candidates from here, so a dataset is indexed once however many runs use it.
        """
        from crossrank.retrieval.bm25 import BM25Index

        ids = list(self.corpus)
        return BM25Index(ids, [self.doc_text(d) for d in ids])


def beir_files(path: str | Path, split: str = "test") -> list[Path]:
    """``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` of a BEIR folder; a missing one is a
    :class:`DatasetError` naming it (checked before any long work starts)."""
    root = Path(path).expanduser()
    need = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{root} is not a BEIR dataset folder: missing {', '.join(missing)} "
            f"(expected corpus.jsonl, queries.jsonl, qrels/{split}.tsv)"
        )
    return need


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from a BEIR folder."""
    root = Path(path).expanduser()
    need = beir_files(root, split)
    corpus = {
        str(r["_id"]): {"title": str(r.get("title") or ""), "text": str(r.get("text") or "")}
        for r in read_jsonl(need[0])
    }
    queries = {str(r["_id"]): str(r["text"]) for r in read_jsonl(need[1])}
    qrels: Qrels = {}
    with need[2].open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            parts = line.strip().split("\t")
            if n == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            if len(parts) < 3:
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, path=root)


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with linear gains (pytrec_eval's ndcg_cut); 0 when nothing is relevant.

    Gains may be integer grades (qrels) or real numbers (a teacher's probabilities) alike.
    """
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, float], k: int = 10) -> float:
    """1 / rank of the first relevant document in the top k (0 if none)."""
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
    """The share of the relevant documents found in the top k."""
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(ranked[:k])) / len(relevant)


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean metrics over the queries of ``runs`` that have relevance judgements."""
    ids = [q for q in runs if any(r > 0 for r in qrels.get(q, {}).values())]
    if not ids:
        return {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "queries": 0}
    n = len(ids)
    return {
        "ndcg@10": sum(ndcg_at_k(runs[q], qrels[q], 10) for q in ids) / n,
        "mrr@10": sum(mrr_at_k(runs[q], qrels[q], 10) for q in ids) / n,
        "recall@10": sum(recall_at_k(runs[q], qrels[q], 10) for q in ids) / n,
        "recall@100": sum(recall_at_k(runs[q], qrels[q], 100) for q in ids) / n,
        "queries": n,
    }


# ------------------------------------------------------------------------------ first stages on BEIR
def collection_name(ds: BeirDataset, embedder: str) -> str:
    """The Chroma collection that caches ``ds``'s corpus embedded by ``embedder`` (a resolved spec).

    Named after the dataset folder and a hash of the embedder, so another embedder never reuses
    vectors it did not make; a relative embedder folder is hashed by its absolute path, so
    ``./model`` and ``/abs/model`` share one collection.
    """
    spec = os.path.abspath(embedder) if not os.path.isabs(embedder) and os.path.isdir(embedder) else embedder
    tag = hashlib.sha1(spec.encode()).hexdigest()[:8]
    return f"beir-{ds.path.name}-{tag}"[:60]


def dense_pipeline(
    ds: BeirDataset,
    *,
    embedder: str | None = None,
    db: str | None = None,
    chroma_url: str | None = None,
    collection: str | None = None,
    progress: bool = True,
) -> Pipeline:
    """A dense-only ``Pipeline`` over ``ds``'s corpus: embedded into Chroma once, reused on later runs.

    Every document is stored as ``ds.doc_text(id)`` under its BEIR id, so the dense, BM25 and
    reranker stages all see the same text. A named ``collection`` without ``embedder`` is queried
    with the embedder it records. The collection is (re)filled when its size differs
    from the corpus.
    """
    from tqdm.auto import tqdm

    from crossrank.retrieval.embeddings import resolve_embedder
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline

    # A named collection is queried with the embedder it records (a distilled student's, say) unless
    # one is named; the dataset's own collection is named after its embedder.
    spec = resolve_embedder(embedder) if embedder is not None or collection is None else None
    name = collection or collection_name(ds, resolve_embedder(embedder))
    pipe = Pipeline(name, db=db, chroma_url=chroma_url, embedder=spec, create=True)
    if pipe.count() != len(ds.corpus):
        ids = list(ds.corpus)
        bar = tqdm(total=len(ids), unit="doc", desc="embedding corpus (cached for next runs)", disable=not progress)
        for s in range(0, len(ids), 256):
            part = ids[s : s + 256]
            pipe.add_chunks([Chunk(d, ds.doc_text(d), {"source": "corpus.jsonl", "chunk": 0}) for d in part])
            bar.update(len(part))
        bar.close()
    return pipe


def first_stage_runs(
    ds: BeirDataset,
    queries: Sequence[tuple[str, str]],
    sources: Sequence[str],
    *,
    candidates: int,
    dense: Pipeline | None = None,
) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[float]]]:
    """Every source's candidate ids for every ``(qid, text)``, and the seconds each query took.

    Returns ``({source: {qid: ids}}, {source: [seconds per query]})``. ``dense`` (from
    :func:`dense_pipeline`) is needed for "dense" and "hybrid"; BM25 is ``ds.bm25``, built once per
    dataset. Hybrid fuses the dense and BM25 lists of the query through :func:`first_stage`,
    exactly as ``Pipeline(hybrid=True).retrieve`` does.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise InvalidArgumentError(f"first stage {unknown[0]!r} is not supported; choose from {', '.join(SOURCES)}")
    dense_ids = dense.dense_ids if dense is not None else None
    bm25 = ds.bm25 if any(s in ("bm25", "hybrid") for s in sources) else None
    runs: dict[str, dict[str, list[str]]] = {s: {} for s in sources}
    seconds: dict[str, list[float]] = {s: [] for s in sources}
    for qid, text in queries:
        for s in sources:
            t = time.perf_counter()
            runs[s][qid] = first_stage(text, s, candidates=candidates, dense=dense_ids, bm25=bm25)
            seconds[s].append(time.perf_counter() - t)
    return runs, seconds
