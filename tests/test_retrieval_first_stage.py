"""The one first stage: the RRF tie rule, order-free BM25 ties, and Pipeline == eval on real SciFact + Chroma."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_beir_slice

from crossrank.errors import InvalidArgumentError
from crossrank.retrieval.bm25 import BM25Index
from crossrank.retrieval.first_stage import first_stage, rrf_fuse

# ---- the tie rule, on constructed lists ---------------------------------------------------------------


def test_rrf_ties_break_by_best_rank_then_dense_order_then_id() -> None:
    # a and b swap places (1/61 + 1/62 each): equal score, equal best rank, so the dense list decides.
    # c (dense #3 only) and d (bm25 #3 only) tie the same way: the document the dense list has comes first.
    assert rrf_fuse([["a", "b", "c"], ["b", "a", "d"]]) == ["a", "b", "c", "d"]
    # The same lists with BM25 given first: the first list breaks the ties, nothing else changes.
    assert rrf_fuse([["b", "a", "d"], ["a", "b", "c"]]) == ["b", "a", "d", "c"]


def test_rrf_best_rank_beats_an_equal_sum() -> None:
    # k=1: w is dense #1 only (1/2), x is bm25 #1 only (1/2), y is dense #2 and bm25 #5 (1/3 + 1/6 = 1/2).
    # All three tie on score; best rank 1 (w, x) beats best rank 2 (y) although y is in both lists;
    # between w and x the dense list decides.
    fused = rrf_fuse([["w", "y", "a", "b", "c"], ["x", "e", "f", "g", "y"]], k=1)
    assert fused == ["w", "x", "y", "e", "a", "f", "b", "g", "c"]


def test_rrf_last_resort_is_the_id_and_scores_do_not_depend_on_list_order() -> None:
    # Three lists: q and p are each #1 of a list the dense list does not have -> id order.
    assert rrf_fuse([["d1"], ["q"], ["p"]]) == ["d1", "p", "q"]
    lists = [["a", "b", "c", "d"], ["c", "d", "e"], ["e", "a", "f"]]
    # Reordering the lists after the first never changes the result (fsum: exact, order-free sums).
    assert rrf_fuse(lists) == rrf_fuse([lists[0], lists[2], lists[1]])


def test_first_stage_cuts_and_checks() -> None:
    def dense(q: str, k: int) -> list[str]:
        return ["a", "b", "c", "d"][:k]

    bm25 = BM25Index(["a", "b", "c", "e"], ["apple pie", "banana bread", "cherry tart", "apple crumble"])
    assert first_stage("apple", "dense", candidates=2, dense=dense) == ["a", "b"]
    assert first_stage("apple", "bm25", candidates=2, bm25=bm25) == ["a", "e"]
    # dense [a, b], bm25 [a, e]: a is in both; b and e tie at rank 2, the dense one first.
    assert first_stage("apple", "hybrid", candidates=2, dense=dense, bm25=bm25) == ["a", "b"]
    assert first_stage("apple", "hybrid", candidates=3, dense=dense, bm25=bm25) == ["a", "b", "e"]
    with pytest.raises(InvalidArgumentError, match="choose one of"):
        first_stage("apple", "sparse", candidates=2, dense=dense)
    with pytest.raises(InvalidArgumentError, match="BM25"):
        first_stage("apple", "hybrid", candidates=2, dense=dense)


def test_bm25_ties_do_not_depend_on_index_order() -> None:
    """Equal BM25 scores come back in id order, so a BEIR corpus and a Chroma collection agree."""
    docs = {f"d{i:02d}": "aspirin and the heart" if i % 3 else "coffee and sleep" for i in range(30)}
    forward = BM25Index(list(docs), list(docs.values()))
    backward = BM25Index(list(reversed(docs)), list(reversed(docs.values())))
    for k in (3, 7, 30):
        hits = forward.search("aspirin heart", k)
        assert hits == backward.search("aspirin heart", k)
        assert hits == sorted(hits, key=lambda h: (-h[1], h[0]))  # equal scores: id order
    assert [d for d, _ in forward.search("aspirin heart", 2)] == ["d01", "d02"]
    assert forward.search("zzz unknown", 2) == [("d00", 0.0), ("d01", 0.0)]


# ---- Pipeline(hybrid=True) and crossrank eval: one code path, identical candidates ---------------------


@pytest.fixture(scope="module")
def beir_slice(scifact, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """A BEIR folder of 10 SciFact claims over their relevant abstracts plus 250 others."""
    return write_beir_slice(scifact, tmp_path_factory.mktemp("beir-slice"), queries=10, extra_docs=250)


@pytest.mark.integration
def test_pipeline_hybrid_equals_eval_hybrid(
    capsys: pytest.CaptureFixture[str], beir_slice: Path, tmp_path: Path, shared_model: Path, embedder_path: Path
) -> None:
    from crossrank.cli import main
    from crossrank.retrieval.beir import dense_pipeline, evaluate, first_stage_runs, load_beir
    from crossrank.retrieval.pipeline import Pipeline

    db = str(tmp_path / "db")
    ds = load_beir(beir_slice)
    queries = ds.test_queries()
    dense = dense_pipeline(ds, embedder=str(embedder_path), db=db, progress=False)
    runs = first_stage_runs(ds, queries, ["dense", "bm25", "hybrid"], candidates=30, dense=dense)[0]

    # The pipeline over the same collection builds its own BM25 from Chroma's copy of the documents
    # (in Chroma's order) and must still give exactly eval's candidates, in the same order.
    pipe = Pipeline(dense.collection_name, db=db, embedder=embedder_path, hybrid=True)
    plain = Pipeline(dense.collection_name, db=db, embedder=embedder_path)
    for qid, text in queries:
        hybrid = [c.id for c, _ in pipe.retrieve(text, candidates=30)]
        assert hybrid == runs["hybrid"][qid]
        assert [c.id for c, _ in plain.retrieve(text, candidates=30)] == runs["dense"][qid]
        assert set(hybrid) <= set(runs["dense"][qid]) | set(runs["bm25"][qid])
    assert any(runs["hybrid"][q] != runs["dense"][q] for q, _ in queries), "hybrid should differ from dense"

    # And `crossrank eval` reports the metrics of exactly those lists.
    argv = ["eval", str(beir_slice), "--db", db, "--embedder", str(embedder_path), "--model", str(shared_model)]
    code = main([*argv, "--candidates", "30", "--first-stage", "hybrid", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["first_stages"]["hybrid"]["metrics"] == evaluate(runs["hybrid"], ds.qrels)
    assert report["metrics"]["first_stage"] == evaluate(runs["hybrid"], ds.qrels)


def test_hybrid_sees_a_chunk_rewritten_in_place(tmp_path: Path) -> None:
    """BM25 is rebuilt from Chroma when a chunk's text changes even though the count stays the same."""
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline
    from crossrank.training.testing import make_tiny_bi_encoder

    bi = make_tiny_bi_encoder(tmp_path / "bi", layers=1)
    pipe = Pipeline("notes", db=tmp_path / "db", embedder=bi, create=True, hybrid=True)
    texts = ["ball pythons eat mice", "aspirin and the heart", "green tea brewing", "sleep and headaches"]
    assert pipe.add_chunks([Chunk(f"d{i}", t, {"source": "s"}) for i, t in enumerate(texts)]) == 4
    assert pipe.add_chunks([Chunk("d2", "green tea brewing", {"source": "s"})]) == 0  # unchanged: not embedded
    before = pipe._bm25_index()[0].search("zanzibar", 4)  # BM25 built on the old texts
    assert not [i for i, s in before if s > 0]
    assert pipe.add_chunks([Chunk("d2", "zanzibar spice trade", {"source": "s"})]) == 1
    assert pipe.count() == 4
    after = pipe._bm25_index()[0].search("zanzibar", 4)
    assert [i for i, s in after if s > 0] == ["d2"]


def test_hybrid_fuses_only_documents_that_share_a_term_with_the_query(tmp_path: Path) -> None:
    """BM25 pads its top k with zero-score documents (in id order); fused, they would take rank credit
    from real dense hits. The hybrid list is the dense list plus the lexical matches, nothing else."""
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline
    from crossrank.training.testing import make_tiny_bi_encoder

    bi = make_tiny_bi_encoder(tmp_path / "bi", layers=1)
    pipe = Pipeline("notes", db=tmp_path / "db", embedder=bi, create=True, hybrid=True, candidates=5)
    texts = [f"note {i} about gardens and weather" for i in range(20)] + ["the xylophone recital"]
    pipe.add_chunks([Chunk(f"d{i:02d}", t, {"source": "s"}) for i, t in enumerate(texts)])
    dense = pipe.dense_ids("xylophone", 5)
    got = [c.id for c, _ in pipe.retrieve("xylophone")]
    assert set(got) <= set(dense) | {"d20"} and "d20" in got  # no zero-score BM25 padding (d00, d01, ...)
    assert [c.id for c, _ in pipe.retrieve("the of and")] == pipe.dense_ids("the of and", 5)  # BM25 adds nothing


def test_hybrid_over_an_empty_or_stopword_collection_is_dense_only(tmp_path: Path) -> None:
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline
    from crossrank.training.testing import make_tiny_bi_encoder

    bi = make_tiny_bi_encoder(tmp_path / "bi", layers=1)
    pipe = Pipeline("empty", db=tmp_path / "db", embedder=bi, create=True, hybrid=True)
    assert pipe.retrieve("anything") == []
    pipe.add_chunks([Chunk("a", "the of and", {"source": "s"}), Chunk("b", "", {"source": "s"})])
    assert sorted(c.id for c, _ in pipe.retrieve("anything")) == ["a", "b"]


def test_a_bm25_hits_metadata_is_the_callers_own(tmp_path: Path) -> None:
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline
    from crossrank.training.testing import make_tiny_bi_encoder

    bi = make_tiny_bi_encoder(tmp_path / "bi", layers=1)
    pipe = Pipeline("notes", db=tmp_path / "db", embedder=bi, create=True, hybrid=True, candidates=1)
    pipe.add_chunks([Chunk(f"d{i}", f"plain note {i}", {"source": "s"}) for i in range(5)])
    pipe.add_chunks([Chunk("z", "zanzibar spice", {"source": "orig"})])
    hit = next(c for c, d in pipe.retrieve("zanzibar") if c.id == "z")
    hit.metadata["source"] = "edited by the caller"
    assert next(c for c, _ in pipe.retrieve("zanzibar") if c.id == "z").metadata["source"] == "orig"
