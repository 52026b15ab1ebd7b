"""``crossrank index / query / eval --late-interaction``: the commands end to end on tiny models and a real Chroma."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossrank.cli import main
from crossrank.late import LateInteractionScorer
from crossrank.late.testing import make_tiny_multi_vector, make_tiny_pylate
from crossrank.scoring.base import ScoreSettings

TOPICS = ["aspirin and the heart", "coffee and sleep", "python code", "gene and protein", "blood sugar and insulin"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from crossrank.training.testing import make_tiny_bi_encoder

    root = tmp_path_factory.mktemp("late-cli")
    return {
        "late": make_tiny_multi_vector(root / "mv"),
        "other": make_tiny_pylate(root / "pylate", seed=5),
        "bi": make_tiny_bi_encoder(root / "bi", layers=1),
    }


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-document, 5-query BEIR folder: each query is about one topic; its documents are the relevant ones."""
    root = tmp_path_factory.mktemp("tiny-beir")
    with (root / "corpus.jsonl").open("w") as f:
        for i in range(40):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"note {i}: {TOPICS[i % 5]} in a study."}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for q, topic in enumerate(TOPICS):
            f.write(json.dumps({"_id": f"q{q}", "text": f"what about {topic}?"}) + "\n")
    (root / "qrels").mkdir()
    with (root / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in range(5):
            for i in range(q, 40, 5):
                f.write(f"q{q}\td{i}\t1\n")
    return root


def test_index_query_and_rebuild(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], beir: Path, tmp_path: Path, tiny_model: Path
) -> None:
    store = ["--db", str(tmp_path / "db"), "--embedder", str(models["bi"]), "--collection", "notes"]
    late = ["--late-interaction", str(models["late"])]
    code, out, err = run(capsys, "index", str(beir / "corpus.jsonl"), *store, *late, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["chunks"] == 40 and rep["late"]["chunks"] == 40 and rep["late"]["encoded"] == 40
    assert rep["late"]["store"] == str(tmp_path / "db" / "crossrank-late" / "notes")

    query = "aspirin and the heart"
    argv = ["query", query, *store, *late, "--model", str(tiny_model), "--backend", "torch", "--json"]
    code, out, err = run(capsys, *argv, "--late-candidates", "12", "--candidates", "4", "--top-n", "8")
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert len(hits) == 8 and json.loads(out)["candidates"] == 12
    code, out, err = run(capsys, *argv, "--late-candidates", "12", "--candidates", "0", "--top-n", "8")
    assert code == 0, err
    alone = json.loads(out)["hits"]
    scorer = LateInteractionScorer(models["late"])
    want = scorer.score(query, [h["text"] for h in alone], ScoreSettings()).raw
    np.testing.assert_allclose([h["score"] for h in alone], want, rtol=1e-6)  # late alone: MaxSim scores
    assert {h["id"] for h in hits[:4]} == {h["id"] for h in alone[:4]}  # the cross-encoder reordered the top 4
    assert [h["id"] for h in hits[4:]] == [h["id"] for h in alone[4:]]
    code, out, _ = run(capsys, *argv[:-1], "--late-candidates", "12", "--candidates", "4")
    assert code == 0 and "late interaction" in out and "reranked its best 4" in out

    # another model: refused with the fix; --rebuild (no paths) starts the vectors over
    other = ["--late-interaction", str(models["other"])]
    code, _, err = run(capsys, "index", *store, *other)
    assert code == 2 and "--rebuild" in err and "do not mix" in err
    code, out, err = run(capsys, "index", *store, *other, "--rebuild", "--json")
    assert code == 0, err
    assert json.loads(out)["late"]["encoded"] == 40
    code, _, err = run(capsys, "index", *store)
    assert code == 2 and "name the files" in err


def test_eval_rows_for_late_interaction_and_three_stages(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], beir: Path, tmp_path: Path, tiny_model: Path
) -> None:
    argv = ["eval", str(beir), "--db", str(tmp_path / "db"), "--embedder", str(models["bi"])]
    argv += ["--model", str(tiny_model), "--backend", "torch", "--late-interaction", str(models["late"])]
    argv += ["--late-candidates", "10,20", "--candidates", "5,15", "--first-stage", "dense,bm25"]
    code, out, err = run(capsys, *argv, "--json", "--fusion", "none,rrf")
    assert code == 0, err
    rep = json.loads(out)
    # every fusion for late rows too, timed once per setting (rrf reuses the first fusion's scores)
    fused = [r for r in rep["rows"] if r.get("stage") and r["fusion"] == "rrf"]
    assert len(fused) == 10
    for r in fused:
        twin = next(
            x
            for x in rep["rows"]
            if x.get("stage") == r["stage"]
            and x["fusion"] == "none"
            and (x["first_stage"], x["late_candidates"], x["candidates"])
            == (r["first_stage"], r["late_candidates"], r["candidates"])
        )
        assert twin["rerank_ms"] == r["rerank_ms"]
    rep["rows"] = [r for r in rep["rows"] if r["fusion"] == "none"]
    assert rep["late"]["chunks"] == 40 and rep["late"]["encoded"] == 40 and rep["late"]["store_bytes"] > 0
    for source in ("dense", "bm25"):
        rows = [r for r in rep["rows"] if r["first_stage"] == source]
        got = [(r.get("stage"), r.get("late_candidates"), r["candidates"]) for r in rows]
        assert got == [
            (None, None, 5),
            (None, None, 15),
            ("late", 10, 10),
            ("late+rerank", 10, 5),
            ("late", 20, 20),
            ("late+rerank", 20, 5),
            ("late+rerank", 20, 15),
        ]
        assert all(r["encoded_on_the_fly"] == 0 for r in rows if r.get("stage")), "vectors came from the store"
        assert all(r["rerank_ms"]["p50"] > 0 for r in rows)
    # the table; this second run reuses the stored vectors
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "| dense | late interaction, top 20 → cross-encoder top 15 |" in out
    assert "late interaction: mv, 16-dim fp16 vectors, 40 documents" in out and "this run encoded 0 " in out


def test_query_refuses_late_interaction_with_llm_before_opening_chroma(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "db"
    argv = ["query", "aspirin", "--db", str(db), "--late-interaction", "mv", "--llm", "http://127.0.0.1:9"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "cannot be combined" in err
    assert not db.exists()  # nothing was opened or created first
