"""The command line over a real embedded Chroma: index, query, demo, eval, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_beir_slice

from crossrank.cli import main

DOC_MD = """# Snakes

Ball pythons are constrictors that eat rodents. Feed a pet ball python one mouse every one to two weeks.

# Programming

Python is a programming language. List comprehensions build lists in one expression.
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "guide.md").write_text(DOC_MD)
    (d / "notes.txt").write_text("Aspirin lowers heart attack risk. " * 80)  # long: several chunks
    return d


def test_index_is_idempotent_and_removes_stale_chunks(
    capsys: pytest.CaptureFixture[str], corpus: Path, tmp_path: Path, embedder_path: Path
) -> None:
    db = str(tmp_path / "db")
    args = ["index", str(corpus), "--db", db, "--embedder", str(embedder_path), "--chunk-size", "400", "--json"]
    code, out, _ = run(capsys, *args)
    first = json.loads(out)
    assert code == 0 and first["files"] == 2 and first["chunks"] > 3
    assert first["total_in_collection"] == first["chunks"]
    assert first["embedded"] == first["chunks"] and first["unchanged"] == 0
    code, out, _ = run(capsys, *args)
    same = json.loads(out)
    assert same["total_in_collection"] == first["chunks"], "re-indexing must not duplicate"
    assert same["embedded"] == 0 and same["unchanged"] == first["chunks"], "unchanged chunks are not embedded again"
    (corpus / "notes.txt").write_text("Aspirin lowers heart attack risk.")
    code, out, _ = run(capsys, *args)
    again = json.loads(out)
    assert again["removed_stale"] > 0 and again["total_in_collection"] == again["chunks"]
    assert again["embedded"] == 1 and again["unchanged"] == again["chunks"] - 1, "only the edited file's chunk"
    # What the skipping left in Chroma equals a fresh index of the files as they are now.
    fresh = str(tmp_path / "fresh")
    assert run(capsys, "index", str(corpus), "--db", fresh, *args[4:])[0] == 0
    import chromadb
    import numpy as np

    def stored(path: str) -> dict[str, tuple[str, dict[str, object], list[float]]]:
        col = chromadb.PersistentClient(path=path).get_collection("crossrank")
        got = col.get(include=["documents", "metadatas", "embeddings"])
        rows = zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])
        return {i: (d, m, list(e)) for i, d, m, e in rows}

    kept, new = stored(db), stored(fresh)
    assert sorted(kept) == sorted(new)
    for i, (doc, meta, vec) in new.items():
        assert kept[i][:2] == (doc, meta) and np.allclose(kept[i][2], vec, atol=1e-5)


def test_files_gone_from_an_indexed_folder_leave_the_collection(
    capsys: pytest.CaptureFixture[str], corpus: Path, tmp_path: Path, embedder_path: Path
) -> None:
    """Deleted, renamed or moved away: a file's chunks go with it (a rename is not indexed twice); hidden
    folders (.git, .venv) are not walked; a folder indexed into the same collection is left alone."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("Statins lower cholesterol in adults.")
    (corpus / ".venv").mkdir()
    (corpus / ".venv" / "LICENSE.txt").write_text("Permission is hereby granted, free of charge.")
    db = str(tmp_path / "db")
    common = ["--db", db, "--embedder", str(embedder_path), "--chunk-size", "400", "--json"]
    assert run(capsys, "index", str(other), *common)[0] == 0
    code, out, _ = run(capsys, "index", str(corpus), *common)
    first = json.loads(out)
    assert code == 0 and first["files"] == 2  # guide.md and notes.txt: .venv is hidden
    (corpus / "notes.txt").rename(corpus / "renamed.txt")
    (corpus / "guide.md").unlink()
    (corpus / "new.md").write_text("# New\n\nBall pythons eat once a week.")
    code, out, _ = run(capsys, "index", str(corpus), *common)
    again = json.loads(out)
    assert code == 0 and again["removed_stale"] == first["chunks"]
    import chromadb

    col = chromadb.PersistentClient(path=db).get_collection("crossrank")
    sources = {Path(str(m["source"])).name for m in col.get(include=["metadatas"])["metadatas"]}
    assert sources == {"keep.txt", "renamed.txt", "new.md"}
    assert col.count() == again["chunks"] + 1


def test_jsonl_mistakes_are_named_with_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, embedder_path: Path
) -> None:
    d = tmp_path / "rows"
    d.mkdir()
    common = ["--db", str(tmp_path / "db"), "--embedder", str(embedder_path)]
    cases = {
        "dup.jsonl": (
            '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n',
            "dup.jsonl:2 repeats the id 'a' of line 1",
        ),
        "meta.jsonl": ('{"text": "x", "metadata": ["not", "a", "dict"]}\n', "meta.jsonl:1: 'metadata' must be"),
    }
    for name, (body, message) in cases.items():
        (d / name).write_text(body)
        code, _, err = run(capsys, "index", str(d / name), *common)
        assert code == 2 and message in err, err
    (d / "latin1.jsonl").write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    code, _, err = run(capsys, "index", str(d / "latin1.jsonl"), *common)
    assert code == 2 and "latin1.jsonl:1 is not UTF-8 text" in err
    (d / "one.jsonl").write_text('{"_id": "same", "text": "first file"}\n')
    (d / "two.jsonl").write_text('{"_id": "same", "text": "second file"}\n')
    code, _, err = run(capsys, "index", str(d / "one.jsonl"), str(d / "two.jsonl"), *common)
    assert code == 2 and "both give a chunk the id 'same'" in err


def test_zero_is_refused_where_it_would_quietly_mean_the_default(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "query", "x", "--candidates", "0", "--db", str(tmp_path / "db"))
    assert code == 2 and "--candidates 0: must be >= 1" in err
    for argv in (["query", "x", "--top-n", "0"], ["eval", str(tmp_path), "--limit", "0"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "is not a positive integer" in capsys.readouterr().err


def test_bench_checks_its_dataset_and_model_first(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """One line and exit 2 before any long work, not a peer library's traceback after retries."""
    code, _, err = run(capsys, "bench", "--dataset", str(tmp_path / "nope"), "--quick")
    assert code == 2 and err.startswith("crossrank: error: ") and "is not a BEIR dataset folder" in err
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (data / name).write_text("")
    code, _, err = run(capsys, "bench", "--dataset", str(data), "--model", str(tmp_path / "no-model"), "--quick")
    assert code == 2 and "model directory" in err and "does not exist" in err and len(err.splitlines()) == 1


def test_query_table_json_and_filters(
    capsys: pytest.CaptureFixture[str], corpus: Path, tmp_path: Path, embedder_path: Path, tiny_model: Path
) -> None:
    db = str(tmp_path / "db")
    store = ["--db", db, "--embedder", str(embedder_path)]
    assert run(capsys, "index", str(corpus), *store, "--chunk-size", "400", "--quiet")[0] == 0
    model = ["--model", str(tiny_model), "--backend", "torch"]
    code, out, _ = run(capsys, "query", "how often to feed a ball python", *store, *model, "--top-n", "3")
    assert code == 0
    assert out.splitlines()[0].split()[:5] == ["new", "old", "move", "score", "dist"]
    assert "stage 1 (Chroma" in out and "not relevance" in out
    code, out, _ = run(capsys, "query", "python", *store, *model, "--json", "--top-n", "2")
    res = json.loads(out)
    assert len(res["hits"]) == 2 and res["candidates"] >= 2
    for h in res["hits"]:
        assert isinstance(h["score"], float) and h["distance"] is not None and h["first_stage_rank"] >= 1
    where = json.dumps({"source": str((corpus / "guide.md").resolve())})
    code, out, _ = run(capsys, "query", "python", *store, *model, "--json", "--where", where)
    assert {h["metadata"]["source"] for h in json.loads(out)["hits"]} == {str((corpus / "guide.md").resolve())}
    # What the table would otherwise hide: hits cut to the model's length, and why a table is empty.
    code, out, _ = run(capsys, "query", "python", *store, *model, "--max-length", "16", "--top-n", "2")
    assert code == 0 and "note: 2 of these 2 hits were cut to the model's max length" in out
    code, out, _ = run(capsys, "query", "python", *store, *model, "--where", '{"source": "guide.md"}')
    assert code == 0 and "note: no hits (0 candidates from stage 1; check --where" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "/no/such/path"], "no such file or directory"),
        (["query", "q", "--collection", "missing"], "does not exist"),
        (["query", "q", "--chroma-url", "http://127.0.0.1:9"], "unreachable"),
        (["query", "q", "--where", "{not json"], "not valid JSON"),
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, embedder_path: Path, argv: list[str], message: str
) -> None:
    extra = [] if "--chroma-url" in argv else ["--db", str(tmp_path / "db")]
    code, out, err = run(capsys, *argv, *extra, "--embedder", str(embedder_path))
    assert code == 2 and out == ""
    assert err.startswith("crossrank: error: ") and message in err and err.count("\n") == 1


def test_missing_model_directory(
    capsys: pytest.CaptureFixture[str], corpus: Path, tmp_path: Path, embedder_path: Path
) -> None:
    store = ["--db", str(tmp_path / "db"), "--embedder", str(embedder_path)]
    run(capsys, "index", str(corpus), *store, "--quiet")
    code, _, err = run(capsys, "query", "q", *store, "--model", str(tmp_path / "no-model"))
    assert code == 2 and "model directory" in err and err.count("\n") == 1


def test_python_dash_m() -> None:
    out = subprocess.run([sys.executable, "-m", "crossrank", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("crossrank ")


@pytest.mark.integration
def test_demo_reorders(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shared_model: Path, embedder_path: Path
) -> None:
    code, out, _ = run(
        capsys,
        "demo",
        "--db",
        str(tmp_path / "db"),
        "--model",
        str(shared_model),
        "--embedder",
        str(embedder_path),
        "--json",
    )
    assert code == 0
    demo = json.loads(out)
    assert demo["model"] == str(shared_model) and len(demo["queries"]) >= 6
    moved = [q for q in demo["queries"] if any(h["first_stage_rank"] != h["rank"] for h in q["hits"])]
    assert moved, "reranking should reorder at least one example query"
    aspirin = next(q for q in demo["queries"] if "aspirin" in q["query"].lower())
    assert "aspirin" in aspirin["hits"][0]["text"].lower()
    code, text, _ = run(
        capsys, "demo", "--db", str(tmp_path / "db"), "--model", str(shared_model), "--embedder", str(embedder_path)
    )
    assert code == 0 and "before (vector search)" in text and str(shared_model) in text


@pytest.fixture(scope="module")
def mini_beir(scifact, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """A 12-query, ~150-document BEIR folder cut from SciFact, so eval runs end to end in seconds."""
    return write_beir_slice(scifact, tmp_path_factory.mktemp("mini-beir"), queries=12, extra_docs=150)


@pytest.mark.integration
@pytest.mark.parametrize("first_stage", ["dense", "bm25"])
def test_eval_end_to_end(
    capsys: pytest.CaptureFixture[str],
    mini_beir: Path,
    tmp_path: Path,
    shared_model: Path,
    embedder_path: Path,
    first_stage: str,
) -> None:
    argv = [
        "eval",
        str(mini_beir),
        "--db",
        str(tmp_path / "db"),
        "--model",
        str(shared_model),
        "--embedder",
        str(embedder_path),
        "--candidates",
        "20",
        "--first-stage",
        first_stage,
    ]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["queries"] == 12 and rep["first_stage"] == first_stage
    for key in ("first_stage", "reranked"):
        m = rep["metrics"][key]
        assert 0 < m["ndcg@10"] <= 1 and 0 < m["recall@100"] <= 1 and m["queries"] == 12
    assert rep["latency_ms"]["rerank"]["p95"] >= rep["latency_ms"]["rerank"]["p50"] > 0
    code, out, _ = run(capsys, *argv, "--limit", "3")
    assert code == 0 and "| first stage | rerank | fusion | nDCG@10 | R@10 | ms/query |" in out
    assert f"| {first_stage} | — | — |" in out and "latency per query" in out


@pytest.mark.integration
def test_eval_several_settings_share_one_score_cache(
    capsys: pytest.CaptureFixture[str], mini_beir: Path, tmp_path: Path, shared_model: Path, embedder_path: Path
) -> None:
    """One run, every first stage × long_documents × fusion; hybrid's candidates all come from the dense
    and BM25 lists, so once those are reranked the hybrid rows need no model call at all."""
    argv = ["eval", str(mini_beir), "--db", str(tmp_path / "db"), "--model", str(shared_model)]
    argv += ["--embedder", str(embedder_path), "--candidates", "20", "--limit", "3", "--max-length", "128"]
    argv += ["--first-stage", "dense,bm25,hybrid", "--fusion", "none,rrf", "--long-documents", "truncate,windows"]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    rep = json.loads(out)
    assert list(rep["first_stages"]) == ["dense", "bm25", "hybrid"] and "metrics" not in rep
    rows = rep["rows"]
    assert len(rows) == 3 * 2 * 2
    assert [(r["first_stage"], r["long_documents"], r["fusion"]) for r in rows[:4]] == [
        ("dense", "truncate", "none"),
        ("dense", "truncate", "rrf"),
        ("dense", "windows", "none"),
        ("dense", "windows", "rrf"),
    ]
    for r in rows:
        assert r["max_length"] == 128 and 0 < r["metrics"]["ndcg@10"] <= 1
        if r["first_stage"] == "hybrid":
            assert r["pairs_scored"] == 0 and r["cache_hits"] == 3 * 20
    assert next(r for r in rows if r["long_documents"] == "windows")["windows_per_doc"] > 1
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.count("| hybrid |") == 1 + 4 and "| bm25 | windows 128 | rrf |" in out


@pytest.mark.integration
def test_eval_rerank_depths_each_timed_cold(
    capsys: pytest.CaptureFixture[str], mini_beir: Path, tmp_path: Path, shared_model: Path, embedder_path: Path
) -> None:
    """``--candidates 5,20``: each depth retrieved as a pipeline with that many candidates would, and
    reranked with an empty score cache."""
    argv = ["eval", str(mini_beir), "--db", str(tmp_path / "db"), "--model", str(shared_model)]
    argv += ["--embedder", str(embedder_path), "--candidates", "20,5", "--limit", "3", "--first-stage", "dense,bm25"]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["candidates"] == [5, 20]
    rows = rep["rows"]
    assert [(r["first_stage"], r["candidates"]) for r in rows] == [
        ("dense", 5),
        ("dense", 20),
        ("bm25", 5),
        ("bm25", 20),
    ]
    dense5, dense20 = rows[0], rows[1]
    assert dense5["pairs_scored"] + dense5["cache_hits"] == 3 * 5
    assert dense20["pairs_scored"] == 3 * 20 and dense20["cache_hits"] == 0, "depth 20 must not reuse depth 5's scores"
    assert rep["first_stages"]["dense"]["metrics"]["recall@100"] >= dense5["metrics"]["recall@100"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "| dense | truncate 256, top 5 | none |" in out and "top-5/20 candidates" in out
    with pytest.raises(SystemExit) as exc:
        main([*argv[:-2], "--candidates", "5,0"])
    assert exc.value.code == 2 and "'0' is not a positive integer" in capsys.readouterr().err


def test_eval_rejects_unknown_choices(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for flag, value in (("--first-stage", "dense,sparse"), ("--fusion", "none,max"), ("--max-length", "0")):
        with pytest.raises(SystemExit) as exc:
            main(["eval", str(tmp_path), flag, value])
        assert exc.value.code == 2 and f"error: argument {flag}: " in capsys.readouterr().err


def test_eval_missing_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "eval", str(tmp_path), "--model", "x")
    assert code == 2 and "not a BEIR dataset folder" in err


@pytest.mark.slow
def test_sigkill_mid_index_then_rerun_is_complete(tmp_path: Path, embedder_path: Path) -> None:
    import os
    import re
    import signal

    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(40):
        (docs / f"f{i:02d}.txt").write_text(
            " ".join(f"file {i} sentence {j} about aspirin and sleep." for j in range(60))
        )
    db = tmp_path / "db"
    argv = [
        sys.executable,
        "-m",
        "crossrank",
        "index",
        str(docs),
        "--db",
        str(db),
        "--embedder",
        str(embedder_path),
        "--chunk-size",
        "300",
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    seen = b""
    while True:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        done = [int(m) for m in re.findall(rb"\| *(\d+)/40 ", seen)]
        if done and max(done) >= 5:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the index run should have been killed halfway"
    out = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-1500:]
    rep = json.loads(out.stdout)
    assert rep["total_in_collection"] == rep["chunks"], "no duplicates and nothing missing after the rerun"

    import chromadb

    col = chromadb.PersistentClient(path=str(db)).get_collection("crossrank")
    ids = col.get(include=[])["ids"]
    assert len(ids) == len(set(ids)) == rep["chunks"]


def test_hybrid_first_stage_adds_lexical_matches(tmp_path: Path, embedder_path: Path, tiny: object) -> None:
    from crossrank.retrieval.pipeline import Pipeline

    docs = tmp_path / "h"
    docs.mkdir()
    topics = ["coffee and sleep", "aspirin and the heart", "vitamin d and bones", "python snakes", "gene editing"]
    for i in range(30):
        (docs / f"d{i}.txt").write_text(f"Note {i} on {topics[i % 5]}, with general remarks about health studies.")
    (docs / "rare.txt").write_text("Inventory code QZX-4471 refers to the blue folder in the archive room.")
    dense = Pipeline("hyb", db=tmp_path / "db", embedder=embedder_path, reranker=tiny, create=True)  # type: ignore[arg-type]
    dense.index_paths([docs], progress=False)
    hybrid = Pipeline("hyb", db=tmp_path / "db", embedder=embedder_path, reranker=tiny, hybrid=True)  # type: ignore[arg-type]
    query = "QZX-4471 coffee and sleep health"
    rare_id = next(c.id for c, _ in dense.retrieve(query, candidates=40) if "QZX" in c.text)
    dense_ids = [c.id for c, _ in dense.retrieve(query, candidates=3)]
    hybrid_ids = [c.id for c, _ in hybrid.retrieve(query, candidates=3)]
    assert rare_id in hybrid_ids, (dense_ids, hybrid_ids)
    res = hybrid.search(query, top_n=3, candidates=3)
    assert len(res.hits) == 3 and res.candidates == 3


@pytest.mark.integration
def test_eval_compares_collections_each_with_its_recorded_embedder(
    capsys: pytest.CaptureFixture[str], mini_beir: Path, tmp_path: Path, shared_model: Path, embedder_path: Path
) -> None:
    """Before/after ``crossrank distill`` in one table: two collections of one corpus, two embedders."""
    from crossrank.retrieval.beir import dense_pipeline, load_beir
    from crossrank.training.testing import make_tiny_bi_encoder

    db = str(tmp_path / "db")
    ds = load_beir(mini_beir)
    dense_pipeline(ds, embedder=str(embedder_path), db=db, collection="base", progress=False)
    tiny = make_tiny_bi_encoder(tmp_path / "tiny-bi")
    dense_pipeline(ds, embedder=str(tiny), db=db, collection="student", progress=False)
    argv = ["eval", str(mini_beir), "--db", db, "--model", str(shared_model), "--collection", "base,student"]
    argv += ["--candidates", "20", "--first-stage", "dense,bm25"]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    rep = json.loads(out)
    assert list(rep["first_stages"]) == ["dense · base", "dense · student", "bm25"]
    assert rep["embedders"] == {"dense · base": str(embedder_path), "dense · student": str(tiny)}
    base, student = (rep["first_stages"][k]["metrics"]["ndcg@10"] for k in ("dense · base", "dense · student"))
    assert base > student, "a random tiny embedder retrieves worse than MiniLM: each collection used its own"
    assert [r["first_stage"] for r in rep["rows"]] == ["dense · base", "dense · student", "bm25"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "| dense · student | truncate" in out and "dense · student: embedder" in out
