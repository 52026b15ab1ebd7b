"""Ranking quality with the real trained reranker on a SciFact slice (direction with a margin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossrank import Candidate, Reranker
from crossrank.evaluation import BeirDataset, evaluate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dense_runs(scifact_slice, slice_vectors, embedder_path: Path) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Dense (all-MiniLM-L6-v2, cosine) top-20 over the whole corpus for the first 60 test claims."""
    from sentence_transformers import SentenceTransformer

    queries, _ = scifact_slice
    ids = list(slice_vectors)
    matrix = np.asarray([slice_vectors[d] for d in ids], dtype=np.float32)
    model = SentenceTransformer(str(embedder_path), device="cpu")
    qv = model.encode([t for _, t in queries], normalize_embeddings=True)
    return {qid: [ids[i] for i in np.argsort(-(matrix @ v))[:20]] for (qid, _), v in zip(queries, qv)}


def _rerank_runs(rr: Reranker, scifact: BeirDataset, runs: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {}
    for qid, docs in runs.items():
        res = rr.rerank(scifact.queries[qid], [Candidate(scifact.doc_text(d), id=d) for d in docs])
        out[qid] = [r.id for r in res if r.id is not None]
    return out


def test_rerank_beats_dense_first_stage(
    shared_rr: Reranker, scifact: BeirDataset, dense_runs: dict[str, list[str]]
) -> None:
    before = evaluate(dense_runs, scifact.qrels)["ndcg@10"]
    after = evaluate(_rerank_runs(shared_rr, scifact, dense_runs), scifact.qrels)["ndcg@10"]
    assert after > before + 0.02, (before, after)


def test_model_declared_length_is_default(shared_rr: Reranker) -> None:
    assert shared_rr.max_length == 256  # tokenizer_config.json model_max_length, not the 512 positions
