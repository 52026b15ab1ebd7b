"""The late-interaction vector store beside a real Chroma collection: add, update, delete, re-index,
a model mismatch, a killed indexer (a real subprocess, SIGKILLed mid-run), and the pipeline's three stages."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from crossrank.late import (
    LateInteractionScorer,
    LateModelMismatchError,
    LateStoreOutOfSyncError,
    LateVectorStore,
    load_multi_vector_model,
    pack,
    text_hash,
)
from crossrank.late.testing import make_tiny_multi_vector, make_tiny_pylate
from crossrank.retrieval.late_stage import default_store_path
from crossrank.retrieval.pipeline import Pipeline
from crossrank.scoring.base import ScoreSettings

TOPICS = ["aspirin and the heart", "coffee and sleep", "python code", "gene and protein", "blood sugar and insulin"]


@pytest.fixture(scope="module")
def late_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_multi_vector(tmp_path_factory.mktemp("late") / "mv")


@pytest.fixture(scope="module")
def other_late_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pylate(tmp_path_factory.mktemp("late") / "pylate", seed=3)


@pytest.fixture(scope="module")
def bi_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.training.testing import make_tiny_bi_encoder

    return make_tiny_bi_encoder(tmp_path_factory.mktemp("bi") / "bi", layers=1)


def doc_text(i: int) -> str:
    return f"note {i} on {TOPICS[i % 5]}: a study of {TOPICS[(i + 2) % 5]}."


def corpus(n: int) -> dict[str, str]:
    return {f"d{i:03d}": doc_text(i) for i in range(n)}


def write_docs(folder: Path, texts: dict[str, str]) -> Path:
    """A JSONL corpus (one chunk per row, id ``_id``): one Chroma upsert per 128 rows, so tests stay fast."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"_id": k, "text": v}) for k, v in texts.items()]
    (folder / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def pipe(tmp_path: Path, bi: Path, late: object, **kw: object) -> Pipeline:
    return Pipeline("col", db=tmp_path / "db", embedder=bi, late=late, create=True, **kw)  # type: ignore[arg-type]


def assert_store_matches_chroma(p: Pipeline) -> None:
    """Every Chroma chunk has vectors, exactly those of its current text; nothing else is stored."""
    assert p.late is not None
    store = p.late.store(create=False)
    assert store is not None
    got = p.collection.get(include=["documents"])
    assert store.ids() == set(got["ids"])
    hashes = store.hashes()
    model = load_multi_vector_model(p.late.model_name)
    want = model.encode_documents(got["documents"])
    stored = store.get_by_ids(got["ids"])
    for i, text, w, s in zip(got["ids"], got["documents"], want, stored):
        assert hashes[i] == text_hash(text)
        assert s is not None
        np.testing.assert_array_equal(s.values, pack(w, "fp16").values)
    store.check_collection(got["ids"], fix="x")


# ---------------------------------------------------------------------------------------------- the store alone
def test_store_roundtrip_int8_garbage_tail_and_compaction(late_model: Path, tmp_path: Path) -> None:
    model = load_multi_vector_model(late_model)
    texts = ["aspirin and the heart", "coffee", "python code and snakes"]
    vecs = model.encode_documents(texts)
    for precision in ("fp16", "int8"):
        store = LateVectorStore(tmp_path / precision)
        store.bind(model.record.to_dict(), precision=precision)
        store.put(["a", "b"], texts[:2], [pack(v, precision) for v in vecs[:2]])
        # a writer killed mid-append leaves a partial row at the end of the shard: never read, skipped
        shard = next(store.path.glob("vectors-00000.*[0-9a-z]"))
        with shard.open("ab") as f:
            f.write(b"\x7f" * 5)
        store.put(["c"], texts[2:], [pack(vecs[2], precision)])
        store.put(["a"], ["coffee"], [pack(vecs[1], precision)])  # update: new vectors, old bytes garbage
        for i, want in (("a", vecs[1]), ("b", vecs[1]), ("c", vecs[2])):
            got = store.get_by_ids([i])[0]
            assert got is not None
            np.testing.assert_allclose(got.floats(), want, atol=2e-3 if precision == "fp16" else 2e-2)
        assert set(store.get_by_hashes([text_hash("coffee"), text_hash("nope")])) == {text_hash("coffee")}
        before = store.size_bytes()
        assert store.compact() > 0 and store.size_bytes() < before
        np.testing.assert_allclose(store.get_by_ids(["c"])[0].floats(), vecs[2], atol=2e-2)  # type: ignore[union-attr]
        assert store.delete(["a", "zz"]) == 1 and store.ids() == {"b", "c"}
        ro = LateVectorStore(store.path, readonly=True)
        assert ro.ids() == {"b", "c"}
        with pytest.raises(Exception, match="read-only"):
            ro.delete(["b"])


def test_compaction_never_writes_into_a_file_a_killed_writer_left(late_model: Path, tmp_path: Path) -> None:
    """A killed run can leave ``vectors-00001`` that the index never references: compaction must write
    past it (it used to write into it and then delete it with the old shards, losing every vector)."""
    model = load_multi_vector_model(late_model)
    texts = ["aspirin and the heart", "coffee"]
    vecs = model.encode_documents(texts)
    store = LateVectorStore(tmp_path / "s")
    store.bind(model.record.to_dict(), precision="fp16")
    store.put(["a", "b"], texts, [pack(v, "fp16") for v in vecs])
    (store.path / "vectors-00001.f16").write_bytes(b"\x00" * 64)  # left behind, never committed
    store.compact()
    for i, want in zip("ab", vecs):
        got = store.get_by_ids([i])[0]
        assert got is not None
        np.testing.assert_allclose(got.floats(), want, atol=2e-3)
    assert LateVectorStore(store.path, readonly=True).ids() == {"a", "b"}


def test_a_run_in_progress_is_not_mistaken_for_a_killed_one(late_model: Path, tmp_path: Path) -> None:
    writer = LateVectorStore(tmp_path / "s")
    writer.bind(load_multi_vector_model(late_model).record.to_dict())
    reader = LateVectorStore(tmp_path / "s", readonly=True)
    writer.begin_run()
    assert reader.writer_active() and not reader.unfinished_run()  # indexing now: readers carry on
    writer.abandon_run()  # what a crash leaves: the marker, and no lock holder
    assert reader.unfinished_run()
    with pytest.raises(LateStoreOutOfSyncError, match="did not finish"):
        reader.check_collection([], fix="crossrank index ...")
    writer.begin_run()
    writer.finish_run()
    assert not reader.unfinished_run()
    reader.check_collection([], fix="crossrank index ...")


# ---------------------------------------------------------------------------------------------- with Chroma
def test_add_update_delete_reindex_keep_the_store_in_step(late_model: Path, bi_encoder: Path, tmp_path: Path) -> None:
    texts = corpus(12)
    docs = write_docs(tmp_path / "docs", texts)
    p = pipe(tmp_path, bi_encoder, late_model)
    rep = p.index_paths([docs], progress=False)
    assert rep.late is not None and (rep.late.chunks, rep.late.encoded) == (12, 12)
    assert p.late is not None and p.late.store_path == tmp_path / "db" / "crossrank-late" / "col"
    assert_store_matches_chroma(p)

    # add two files, update one, delete one: only the changes are encoded
    texts.update({"extra0": "an extra note on sleep.", "extra1": "another on coffee."})
    texts["d003"] = "note 3 rewritten: vitamin dose and blood sugar in patients."
    del texts["d005"]  # gone from the file: index_paths deletes it from Chroma
    write_docs(docs, texts)
    rep = p.index_paths([docs], progress=False)
    assert rep.late is not None
    assert (rep.late.chunks, rep.late.encoded, rep.late.deleted) == (13, 3, 1)
    assert_store_matches_chroma(p)

    # re-index with nothing changed: nothing encoded
    rep = p.index_paths([docs], progress=False)
    assert rep.late is not None and rep.late.encoded == 0 and rep.late.unchanged == 13


def test_opening_detects_a_model_mismatch_and_a_collection_out_of_step(
    late_model: Path, other_late_model: Path, bi_encoder: Path, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path / "docs", corpus(8))
    pipe(tmp_path, bi_encoder, late_model).index_paths([docs], progress=False)

    other = Pipeline("col", db=tmp_path / "db", embedder=bi_encoder, late=other_late_model, reranker="unused")
    with pytest.raises(LateModelMismatchError, match="--rebuild"):
        other.search("aspirin", candidates=0)
    with pytest.raises(LateModelMismatchError, match="--rebuild"):
        other.index_late(progress=False)
    rep = other.index_late(rebuild=True, progress=False)
    assert rep.encoded == 8
    assert_store_matches_chroma(other)

    # Chroma changed behind the store's back: detected, with the command that fixes it
    first = other.collection.get(include=[])["ids"][0]
    other.collection.delete(ids=[first])
    fresh = Pipeline("col", db=tmp_path / "db", embedder=bi_encoder, late=other_late_model, candidates=0)
    with pytest.raises(
        LateStoreOutOfSyncError, match=r"1 stored id\(s\) are no longer.*crossrank index --collection col"
    ):
        fresh.search("aspirin")
    assert fresh.index_late(progress=False).deleted == 1
    assert fresh.search("aspirin heart", top_n=3).hits


_KILLED_INDEXER = textwrap.dedent(
    """
    import sys
    from crossrank.retrieval.pipeline import Pipeline
    db, bi, late = sys.argv[1:4]
    Pipeline("col", db=db, embedder=bi, late=late).index_late(batch_size=2, commit_every=2, progress=False)
    """
)


@pytest.mark.slow
def test_a_killed_indexer_leaves_no_stale_or_missing_vectors(
    late_model: Path, bi_encoder: Path, tmp_path: Path
) -> None:
    n = 80
    texts = corpus(n)
    docs = write_docs(tmp_path / "docs", texts)
    p = pipe(tmp_path, bi_encoder, late_model)
    p.index_paths([docs], progress=False)  # chunks and vectors of the first version
    for i in range(0, n, 2):  # every other text changes in Chroma: its stored vectors are now stale
        texts[f"d{i:03d}"] = f"note {i} changed: red fire and green tea {i}."
    write_docs(docs, texts)
    Pipeline("col", db=tmp_path / "db", embedder=bi_encoder).index_paths([docs], progress=False)  # Chroma only

    index = tmp_path / "db" / "crossrank-late" / "col" / "index.sqlite"
    before = dict(sqlite3.connect(index).execute("SELECT id, text_hash FROM vectors").fetchall())
    script = tmp_path / "indexer.py"
    script.write_text(_KILLED_INDEXER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "db"), str(bi_encoder), str(late_model)])
    deadline = time.monotonic() + 120
    changed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            now = dict(sqlite3.connect(index, timeout=5).execute("SELECT id, text_hash FROM vectors").fetchall())
        except sqlite3.OperationalError:
            continue
        changed = sum(now.get(i) != h for i, h in before.items())
        if changed >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the indexer should have been killed mid-run"
    assert 5 <= changed < n // 2

    # What the killed run left: every id points at complete vectors of exactly the text it records
    store = LateVectorStore(index.parent)
    model = load_multi_vector_model(late_model)
    got = p.collection.get(include=["documents"])
    current = dict(zip(got["ids"], got["documents"]))
    hashes = store.hashes()
    assert set(hashes) == set(current)
    rows = store.get_by_ids(list(hashes))
    fresh_vectors = dict(zip(current, model.encode_documents(list(current.values()))))
    stale = 0
    for (i, h), packed in zip(hashes.items(), rows):
        assert packed is not None
        if h == text_hash(current[i]):
            np.testing.assert_array_equal(packed.values, pack(fresh_vectors[i], "fp16").values)
        else:
            stale += 1
    assert stale > 0, "some changed chunks were not re-encoded yet"
    # ...and a scorer never gives a changed text its old vectors: they are looked up by the new text's hash
    changed_texts = [current[i] for i, h in hashes.items() if h != text_hash(current[i])]
    from_store = LateInteractionScorer(late_model, store=store).score("tea", changed_texts, ScoreSettings())
    encoded = LateInteractionScorer(late_model).score("tea", changed_texts, ScoreSettings())
    assert from_store.details["stored"] == 0
    np.testing.assert_array_equal(from_store.raw, encoded.raw)

    # opening it says the run did not finish and names the fix; rerunning completes it
    fresh = Pipeline("col", db=tmp_path / "db", embedder=bi_encoder, late=late_model, candidates=0)
    with pytest.raises(
        LateStoreOutOfSyncError, match="did not finish.*crossrank index --collection col --late-interaction"
    ):
        fresh.search("tea")
    rep = fresh.index_late(progress=False)
    assert rep.encoded == stale and rep.unchanged == n - stale
    assert_store_matches_chroma(fresh)
    assert fresh.search("tea", top_n=2).hits


# ---------------------------------------------------------------------------------------------- three stages
def test_pipeline_three_stages_and_late_alone(late_model: Path, bi_encoder: Path, tmp_path: Path, tiny: object) -> None:
    docs = write_docs(tmp_path / "docs", corpus(20))
    p = pipe(tmp_path, bi_encoder, late_model, reranker=tiny, late_candidates=15, candidates=5)
    p.index_paths([docs], progress=False)
    query = "aspirin and the heart"
    res = p.search(query, top_n=10)
    assert res.candidates == 15 and len(res.hits) == 10
    found = p.retrieve(query, candidates=15)
    late = LateInteractionScorer(late_model)
    order = np.argsort(-late.score(query, [c.text for c, _ in found], ScoreSettings()).raw, kind="stable")
    late_top = [found[i][0].id for i in order]
    top5 = {h.id for h in res.hits[:5]}
    assert top5 == set(late_top[:5]), "the cross-encoder reorders exactly late interaction's best 5"
    assert [h.id for h in res.hits[5:]] == late_top[5:10], "the rest keep late interaction's order"
    assert p.late is not None
    stats = p.late.reranker().scorer.score(query, [c.text for c, _ in found], ScoreSettings()).details  # type: ignore[attr-defined]
    assert stats["stored"] + stats["cached"] == 15 and stats["encoded"] == 0

    alone = Pipeline("col", db=tmp_path / "db", embedder=bi_encoder, late=late_model, late_candidates=15, candidates=0)
    res = alone.search(query, top_n=10)
    assert [h.id for h in res.hits] == late_top[:10]
    assert default_store_path(tmp_path / "db", None, "col") == tmp_path / "db" / "crossrank-late" / "col"
    assert "late" in str(default_store_path(None, "http://10.0.0.5:9000", "col")) and "10.0.0.5_9000" in str(
        default_store_path(None, "http://10.0.0.5:9000", "col")
    )
