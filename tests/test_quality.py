"""Ranking quality with the real trained reranker on a SciFact slice (direction with a margin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossrank import Candidate, Reranker
from crossrank.retrieval.beir import BeirDataset, evaluate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dense_runs(scifact_slice, slice_vectors, embedder_path: Path) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Dense (all-MiniLM-L6-v2, cosine) top-20 for the first 60 test claims (the same as over the whole corpus)."""
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


# ---- direction of each quality option on the trained model and real SciFact text ---------------------


def _claims_with_relevant(scifact: BeirDataset, n: int) -> list[tuple[str, str, str]]:
    out = []
    for qid, text in scifact.test_queries(60):
        rel = [d for d, g in scifact.qrels.get(qid, {}).items() if g > 0 and d in scifact.corpus]
        if rel:
            out.append((qid, text, rel[0]))
        if len(out) == n:
            break
    return out


def test_windows_find_relevant_text_past_the_cut(shared_model: Path, scifact: BeirDataset) -> None:
    """A relevant abstract placed after 300+ tokens of unrelated text: truncation at 256 tokens cannot
    see it, windows can. The long document must rank higher with windows, and use several windows."""
    rr = Reranker(shared_model)
    ids = list(scifact.corpus)
    claims = _claims_with_relevant(scifact, 8)
    gains = []
    for i, (qid, claim, rel) in enumerate(claims):
        relevant = {d for d, g in scifact.qrels.get(qid, {}).items() if g > 0}
        others = [d for d in ids[i * 40 : i * 40 + 40] if d not in relevant]
        filler = " ".join(scifact.doc_text(d) for d in others[:2])  # two unrelated abstracts first
        long_doc = f"{filler} {scifact.doc_text(rel)}"
        assert rr.count_tokens([long_doc])[0] > 300
        cands = [Candidate(long_doc, id="long")] + [Candidate(scifact.doc_text(d), id=d) for d in others[2:12]]
        cut = {r.id: r for r in rr.rerank(claim, cands, long_documents="truncate")}["long"]
        win = {r.id: r for r in rr.rerank(claim, cands, long_documents="windows")}["long"]
        assert cut.truncated and cut.windows == 1 and win.windows >= 2 and not win.truncated
        gains.append(cut.rank - win.rank)
    assert sum(g > 0 for g in gains) >= 5, gains  # windows moved the long relevant document up
    assert sum(gains) >= 8, gains  # by several places overall


def test_sigmoid_threshold_trades_recall_for_precision(
    shared_rr: Reranker, scifact: BeirDataset, dense_runs: dict[str, list[str]]
) -> None:
    """On the sigmoid scale a higher threshold keeps fewer, more often relevant candidates, and the
    documented starting threshold keeps far better than the candidates' base rate."""
    pairs = []
    for qid, docs in list(dense_runs.items())[:30]:
        res = shared_rr.rerank(
            scifact.queries[qid], [Candidate(scifact.doc_text(d), id=d) for d in docs], normalize="sigmoid"
        )
        rel = scifact.qrels.get(qid, {})
        pairs += [(r.score, rel.get(r.id or "", 0) > 0) for r in res]
    base = sum(r for _, r in pairs) / len(pairs)

    def prec_rec(t: float) -> tuple[float, float]:
        kept = [r for s, r in pairs if s >= t]
        return sum(kept) / max(1, len(kept)), sum(kept) / sum(r for _, r in pairs)

    (p_lo, r_lo), (p_hi, r_hi) = prec_rec(0.05), prec_rec(0.5)
    assert r_lo > r_hi and p_hi > p_lo
    assert p_hi > 3 * base, (p_hi, base)


def test_rrf_fusion_pulls_toward_the_first_stage(
    shared_rr: Reranker, scifact: BeirDataset, dense_runs: dict[str, list[str]]
) -> None:
    """fusion='rrf' blends first-stage and rerank ranks: its top 10 agrees with the first stage more
    than the pure rerank does, and every candidate is still returned."""
    agree_rerank = agree_fused = 0
    for qid, docs in list(dense_runs.items())[:20]:
        cands = [Candidate(scifact.doc_text(d), id=d) for d in docs]
        plain = [r.id for r in shared_rr.rerank(scifact.queries[qid], cands)]
        fused = shared_rr.rerank(scifact.queries[qid], cands, fusion="rrf")
        assert len(fused) == len(docs) and all(r.fused_score is not None for r in fused)
        agree_rerank += len(set(plain[:5]) & set(docs[:5]))
        agree_fused += len(set([r.id for r in fused][:5]) & set(docs[:5]))
    assert agree_fused > agree_rerank


def test_cache_and_dedupe_on_real_candidates(shared_model: Path, scifact: BeirDataset) -> None:
    """The score cache answers a repeated query without the model; whitespace-variant copies of an
    abstract are scored once and share its score (or are dropped and reported with dedupe=True)."""
    rr = Reranker(shared_model, cache_size=1000)
    _, claim, _ = _claims_with_relevant(scifact, 1)[0]
    texts = [scifact.doc_text(d) for d in list(scifact.corpus)[:15]]
    cands = [*texts, "  " + texts[0].replace(" ", "\n", 3), texts[1] + "  "]
    first = rr.rerank(claim, cands)
    assert first.stats.duplicates == 2 and first.stats.pairs_scored == 15
    by_index = {r.index: r.raw_score for r in first}
    assert by_index[15] == by_index[0] and by_index[16] == by_index[1]
    again = rr.rerank(claim, cands)
    assert again.stats.cache_hits == 15 and again.stats.pairs_scored == 0
    assert [r.raw_score for r in again] == [r.raw_score for r in first]
    dropped = rr.rerank(claim, cands, dedupe=True)
    assert len(dropped) == 15 and {f.index for f in dropped.filtered} == {15, 16}
