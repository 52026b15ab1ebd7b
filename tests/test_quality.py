"""Ranking quality with the real trained reranker on a SciFact slice (direction with a margin)."""

from __future__ import annotations

import pytest

from crossrank import Candidate, Reranker
from crossrank.bm25 import BM25Index
from crossrank.evaluation import BeirDataset, evaluate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bm25_runs(scifact: BeirDataset) -> dict[str, list[str]]:
    ids = list(scifact.corpus)
    index = BM25Index(ids, [scifact.doc_text(i) for i in ids])
    return {qid: [d for d, _ in index.search(text, 20)] for qid, text in scifact.test_queries(60)}


def _rerank_runs(rr: Reranker, scifact: BeirDataset, runs: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {}
    for qid, docs in runs.items():
        res = rr.rerank(scifact.queries[qid], [Candidate(scifact.doc_text(d), id=d) for d in docs])
        out[qid] = [r.id for r in res if r.id is not None]
    return out


def test_rerank_beats_bm25_first_stage(
    shared_rr: Reranker, scifact: BeirDataset, bm25_runs: dict[str, list[str]]
) -> None:
    before = evaluate(bm25_runs, scifact.qrels)["ndcg@10"]
    after = evaluate(_rerank_runs(shared_rr, scifact, bm25_runs), scifact.qrels)["ndcg@10"]
    assert after > before + 0.005, (before, after)


def test_model_declared_length_is_default(shared_rr: Reranker) -> None:
    assert shared_rr.max_length == 256  # tokenizer_config.json model_max_length, not the 512 positions
