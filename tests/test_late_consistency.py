"""Late-interaction store and stage under change (issue #24 review): a reader whose store is rebuilt
by another handle never reads the rebuilt vectors as its own model's; a scorer given to the pipeline
adopts the store's precision as a model given by name does; Chroma is read page by page and its
failures arrive as ``VectorStoreError``. Real SQLite stores, real Chroma, tiny random models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.errors import VectorStoreError
from crossrank.late import (
    LateInteractionScorer,
    LateModelMismatchError,
    LateStoreChangedError,
    LateVectorStore,
    MultiVectorModel,
    load_multi_vector_model,
    pack,
    text_hash,
)
from crossrank.late.testing import make_tiny_multi_vector
from crossrank.retrieval.late_stage import collection_ids
from crossrank.retrieval.pipeline import Pipeline
from crossrank.scoring.base import ScoreSettings

TOPICS = ["aspirin and the heart", "coffee and sleep", "python code", "gene and protein", "blood sugar and insulin"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny models of the same shape (16-dim vectors, fp16 stores): only their weights differ."""
    root = tmp_path_factory.mktemp("late-models")
    return {"a": make_tiny_multi_vector(root / "a", seed=0), "b": make_tiny_multi_vector(root / "b", seed=5)}


@pytest.fixture(scope="module")
def bi_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.training.testing import make_tiny_bi_encoder

    return make_tiny_bi_encoder(tmp_path_factory.mktemp("bi") / "bi", layers=1)


def texts(n: int, tag: str = "note") -> list[str]:
    return [f"{tag} {i} on {TOPICS[i % 5]}: a study of {TOPICS[(i + 2) % 5]}." for i in range(n)]


def fill(store: LateVectorStore, model: MultiVectorModel, docs: list[str], *, rebuild: bool = False) -> None:
    """What an indexing run does to the store (``--rebuild`` empties it first), without Chroma."""
    if rebuild:
        store.clear()
    store.bind(model.record.to_dict())
    ids = [f"d{i:03d}" for i in range(len(docs))]
    store.put(ids, docs, [pack(v, "fp16") for v in model.encode_documents(docs)])


# ------------------------------------------------------------------------------ readers and rebuilds
def test_a_reader_never_reads_a_store_rebuilt_with_another_model(models: dict[str, Path], tmp_path: Path) -> None:
    a, b = load_multi_vector_model(models["a"]), load_multi_vector_model(models["b"])
    assert a.record.fingerprint != b.record.fingerprint and a.dim == b.dim
    docs = texts(6)
    writer = LateVectorStore(tmp_path / "s")
    fill(writer, a, docs)
    reader = LateVectorStore(tmp_path / "s", readonly=True)  # a server's handle, opened with model a
    scorer = LateInteractionScorer(a, store=reader)
    raw = LateVectorStore(tmp_path / "s", readonly=True)
    assert raw.get_by_hashes([text_hash(docs[0])])

    fill(LateVectorStore(tmp_path / "s"), b, docs, rebuild=True)  # another handle rebuilds it with model b

    with pytest.raises(LateStoreChangedError, match="rebuilt since this process opened it") as err:
        raw.get_by_hashes([text_hash(d) for d in docs])
    assert isinstance(err.value, LateModelMismatchError) and str(models["b"]) in str(err.value)
    with pytest.raises(LateStoreChangedError):
        raw.get_by_ids(["d000"])
    with pytest.raises(LateStoreChangedError, match=r"Restart the server.*with the model the store now records"):
        scorer.score("aspirin", docs, ScoreSettings())
    with pytest.raises(LateStoreChangedError, match="rebuilt"):  # the handle was not moved onto model b
        scorer.score("aspirin", docs, ScoreSettings())
    assert scorer.totals["stored"] == 0
    with pytest.raises(LateStoreChangedError):  # the indexer's stale handle writes nothing either
        writer.put(["x"], ["x"], [pack(a.encode_documents(["x"])[0], "fp16")])

    # reopened, the store says whose vectors it holds: model a is refused, model b reads them
    with pytest.raises(LateModelMismatchError, match="--rebuild"):
        LateInteractionScorer(a, store=LateVectorStore(tmp_path / "s", readonly=True))
    fresh = LateInteractionScorer(b, store=LateVectorStore(tmp_path / "s", readonly=True))
    got = fresh.score("aspirin", docs, ScoreSettings())
    assert got.details["stored"] == len(docs)
    np.testing.assert_array_equal(got.raw, LateInteractionScorer(b).score("aspirin", docs, ScoreSettings()).raw)


def test_a_rebuild_with_the_same_model_is_read_afresh(models: dict[str, Path], tmp_path: Path) -> None:
    """A same-model rebuild rewrites the shards under the same names: the old reader must not serve
    the rows it finds through the map of the old shard file, and keeps serving from the store."""
    a = load_multi_vector_model(models["a"])
    writer = LateVectorStore(tmp_path / "s")
    fill(writer, a, texts(24))
    reader = LateVectorStore(tmp_path / "s", readonly=True)
    scorer = LateInteractionScorer(models["a"], store=reader)
    assert scorer.score("coffee", texts(24), ScoreSettings()).details["stored"] == 24  # maps the old shard

    rebuilder = LateVectorStore(tmp_path / "s")
    rebuilder.clear()  # a rebuild under way: the reader encodes what it needs meanwhile
    during = texts(3, "interim")
    got = scorer.score("coffee", during, ScoreSettings())
    assert got.details["encoded"] == 3
    fill(rebuilder, a, texts(4, "fresh"))  # the same model again: fewer, other rows in a new shard 00000

    def direct(docs: list[str]) -> np.ndarray:
        return LateInteractionScorer(models["a"]).score("coffee", docs, ScoreSettings()).raw

    new = texts(4, "fresh")
    got = scorer.score("coffee", new, ScoreSettings())
    assert got.details["stored"] == 4
    np.testing.assert_array_equal(got.raw, direct(new))

    # a raw handle is told; refresh() moves it on when the caller's model is still the store's
    other = LateVectorStore(tmp_path / "s", readonly=True)
    assert other.record is not None
    fill(LateVectorStore(tmp_path / "s"), a, texts(2, "again"), rebuild=True)
    with pytest.raises(LateStoreChangedError):
        other.get_by_hashes([text_hash(texts(2, "again")[0])])
    expect = {**a.record.to_dict(), "precision": "fp16", "pool_factor": None}
    assert other.refresh(expect=expect) is not None
    hit = other.get_by_hashes([text_hash(texts(2, "again")[0])], expect=expect)
    np.testing.assert_array_equal(
        next(iter(hit.values()))[0].values, pack(a.encode_documents(texts(2, "again")[:1])[0], "fp16").values
    )
    with pytest.raises(LateModelMismatchError, match="int8"):
        other.get_by_hashes([text_hash("x")], expect={**expect, "precision": "int8"})


# ------------------------------------------------------------------------------ a scorer given to the pipeline
def write_docs(folder: Path, docs: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"_id": f"d{i:03d}", "text": t}) for i, t in enumerate(docs)]
    (folder / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def pipe(tmp_path: Path, bi: Path, late: Any, **kw: Any) -> Pipeline:
    return Pipeline("col", db=tmp_path / "db", embedder=bi, late=late, candidates=0, **kw)


def test_a_given_scorer_adopts_the_stores_precision_like_a_model_name(
    models: dict[str, Path], bi_encoder: Path, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path / "docs", texts(8))
    built = LateInteractionScorer(models["a"], precision="int8", pool_factor=2)
    rep = pipe(tmp_path, bi_encoder, built, create=True).index_paths([docs], progress=False)
    assert rep.late is not None and rep.late.encoded == 8

    bare = LateInteractionScorer(models["a"])  # no precision asked for
    assert bare.options()["precision"] is None and bare.options()["pool_factor"] is None
    by_name, given = pipe(tmp_path, bi_encoder, str(models["a"])), pipe(tmp_path, bi_encoder, bare)
    for p in (by_name, given):
        assert p.late is not None
        assert (p.late.scorer.precision, p.late.scorer.pool_factor) == ("int8", 2)
        assert len(p.search("aspirin", top_n=3).hits) == 3
        assert p.late.scorer.totals["stored"] == 8 and p.late.scorer.totals["encoded"] == 0
        sync = p.index_late(progress=False)  # re-indexing keeps the store's precision and pooling
        assert (sync.encoded, sync.unchanged) == (0, 8)

    asked = pipe(tmp_path, bi_encoder, LateInteractionScorer(models["a"], precision="fp16"))
    with pytest.raises(LateModelMismatchError, match=r"precision='fp16'.*keeps int8.*--rebuild"):
        asked.search("aspirin")
    with pytest.raises(LateModelMismatchError, match=r"precision 'int8' \(asked: 'fp16'\).*--rebuild"):
        asked.index_late(progress=False)
    assert asked.index_late(rebuild=True, progress=False).encoded == 8  # asked for explicitly: rebuilt in fp16
    assert LateVectorStore(asked.late.store_path).record["precision"] == "fp16"  # type: ignore[union-attr, index]


# ------------------------------------------------------------------------------ Chroma, paged and wrapped
class RecordingCollection:
    """A real Chroma collection that notes the ``limit`` / ``offset`` of every ``get``."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.pages = inner, []  # type: list[tuple[Any, Any]]

    def get(self, **kw: Any) -> Any:
        self.pages.append((kw.get("limit"), kw.get("offset")))
        return self.inner.get(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_store_check_pages_through_chroma_and_wraps_its_failures(
    models: dict[str, Path], bi_encoder: Path, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path / "docs", texts(8))
    pipe(tmp_path, bi_encoder, str(models["a"]), create=True).index_paths([docs], progress=False)

    p = pipe(tmp_path, bi_encoder, str(models["a"]))
    assert p.late is not None
    every = set(p.collection.get(include=[])["ids"])
    recorded = RecordingCollection(p.collection)
    assert set(collection_ids(recorded, "col", page=3)) == every and len(every) == 8
    assert recorded.pages == [(3, 0), (3, 3), (3, 6)]

    # the stage reads every page: with a page of 3 the store still matches all 8 ids
    p.late.collection, p.late.id_page = recorded, 3
    recorded.pages.clear()
    assert len(p.search("aspirin", top_n=3).hits) == 3
    assert recorded.pages == [(3, 0), (3, 3), (3, 6)]

    # the collection deleted under the stage: a VectorStoreError naming it, not Chroma's exception
    q = pipe(tmp_path, bi_encoder, str(models["a"]))
    assert q.late is not None
    q.client.delete_collection("col")
    with pytest.raises(VectorStoreError, match=r"collection 'col'.*NotFoundError") as err:
        q.late.scorer  # noqa: B018 - opening the stage is what reads Chroma
    assert err.value.__cause__ is not None and type(err.value.__cause__).__module__.startswith("chromadb")


def test_a_server_whose_store_was_rebuilt_answers_500_without_its_paths(
    models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a 400 (the request is fine) and no filesystem path in the body: the server's log says what happened."""
    pytest.importorskip("fastapi")
    cohere = pytest.importorskip("cohere")
    from crossrank.cli import build_parser
    from crossrank.cli.serve import late_model, late_reranker, settings_from
    from crossrank.server import create_app
    from crossrank.server.testing import serve_in_thread

    a, b = load_multi_vector_model(models["a"]), load_multi_vector_model(models["b"])
    store = tmp_path / "store"
    fill(LateVectorStore(store), a, texts(6))
    args = build_parser().parse_args(
        ["serve", "--late-interaction", str(models["a"]), "--late-store", str(store), "--api-key", "k"]
    )
    model = late_model(args, str(models["a"]))
    assert model is not None
    with serve_in_thread(create_app(late_reranker(args, model), settings_from(args, model))) as url:
        co = cohere.ClientV2(api_key="k", base_url=url)
        opts = {"max_retries": 0}
        assert len(co.rerank(model="a", query="aspirin", documents=texts(6)[:3], request_options=opts).results) == 3
        fill(LateVectorStore(store), b, texts(6), rebuild=True)
        with pytest.raises(Exception) as err:
            co.rerank(model="a", query="aspirin", documents=texts(6)[3:], request_options=opts)
    assert getattr(err.value, "status_code", None) == 500
    assert str(tmp_path) not in str(getattr(err.value, "body", "")) and "vector store" in str(err.value.body)  # type: ignore[attr-defined]
    assert any("rebuilt since this process opened it" in r.getMessage() for r in caplog.records)
