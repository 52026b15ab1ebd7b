"""BEIR-format datasets and the standard IR metrics (nDCG@k, MRR@k, Recall@k), dependency-free.

Metrics follow BEIR / pytrec_eval conventions: graded gains ``rel`` (linear, not 2^rel-1, as
pytrec_eval's ndcg_cut), ideal DCG from the qrels, queries with no relevant documents skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from crossrank.errors import DatasetError

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class BeirDataset:
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels
    path: Path

    def doc_text(self, doc_id: str) -> str:
        d = self.corpus[doc_id]
        # "title abstract", the layout the shared reranker was trained on (BEIR's own convention).
        return f"{d.get('title') or ''} {d.get('text', '')}".strip()

    def test_queries(self, limit: int | None = None) -> list[tuple[str, str]]:
        ids = [q for q in self.qrels if q in self.queries]
        ids = ids[:limit] if limit else ids
        return [(q, self.queries[q]) for q in ids]


def read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{n} is not valid JSON ({exc})") from exc
    return rows


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from a BEIR folder."""
    root = Path(path).expanduser()
    need = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{root} is not a BEIR dataset folder: missing {', '.join(missing)} "
            "(expected corpus.jsonl, queries.jsonl, qrels/test.tsv)"
        )
    corpus = {str(r["_id"]): {"title": r.get("title", ""), "text": r.get("text", "")} for r in read_jsonl(need[0])}
    queries = {str(r["_id"]): r["text"] for r in read_jsonl(need[1])}
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


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
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
