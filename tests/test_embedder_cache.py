"""`crossrank index` exports the collection's embedder once; later queries embed with it, without torch.

The reference for every vector is sentence-transformers itself (the library the collection was
built with), never crossrank's own embedder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossrank.cli import main
from crossrank.retrieval import embedder_cache
from crossrank.retrieval.pipeline import Pipeline

TEXTS = {
    "aspirin.txt": "Low-dose aspirin lowered the incidence of myocardial infarction in a randomized trial.",
    "snakes.txt": "Ball pythons are popular pet snakes that eat once a week.",
    "sleep.md": "# Sleep\n\nAdults who sleep less than six hours a night report more headaches.",
    "tea.txt": "Green tea contains catechins; a short note on brewing temperature and time.",
}
QUERY = "does aspirin prevent heart attacks?"


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.training.testing import make_tiny_bi_encoder

    return make_tiny_bi_encoder(tmp_path_factory.mktemp("bi") / "tiny-bi", layers=1)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own, so an export made elsewhere in the session cannot stand in."""
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(embedder_cache.ENV, raising=False)
    return tmp_path / "cache"


def _index(capsys: pytest.CaptureFixture[str], tmp_path: Path, embedder: Path) -> dict:  # type: ignore[type-arg]
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for name, text in TEXTS.items():
        (docs / name).write_text(text)
    code = main(["index", str(docs), "--db", str(tmp_path / "db"), "--embedder", str(embedder), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return dict(json.loads(out))


def _fresh_process(code: str) -> list[dict]:  # type: ignore[type-arg]
    """Run ``code`` in a new interpreter; the JSON lines it printed, the last one with ``loaded``
    (which of torch / sentence-transformers / transformers it imported) added."""
    probe = (
        "import json, sys\n" + code + "\nimport json as _j, sys as _s\n"
        "_heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in _s.modules)\n"
        "print(_j.dumps({'loaded': _heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines() if line.startswith("{")]
    return [*lines[:-2], {**lines[-2], **lines[-1]}]


def _st_vector(embedder: Path, text: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return np.asarray(SentenceTransformer(str(embedder), device="cpu").encode([text], normalize_embeddings=True)[0])


def test_index_exports_once_and_queries_embed_with_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache: Path, tiny_embedder: Path
) -> None:
    rep = _index(capsys, tmp_path, tiny_embedder)
    assert rep["embedder_export"]["status"] == "exported"
    folder = Path(rep["embedder_export"]["path"])
    assert folder.parent == cache / "embedders" and (folder / "model.onnx").is_file()
    assert _index(capsys, tmp_path, tiny_embedder)["embedder_export"]["status"] == "cached"

    fast = Pipeline(db=tmp_path / "db")  # opened to query: the collection's recorded embedder, from the cache
    assert fast.embedder_runtime == "onnxruntime (cached export)" and fast.embedder_export == folder
    slow = Pipeline(db=tmp_path / "db", create=True)  # opened to index: sentence-transformers, as Chroma recorded
    assert slow.embedder_runtime == "sentence-transformers" and slow.embedder_export is None

    got, want = fast.dense_search(QUERY, 4), slow.dense_search(QUERY, 4)
    assert [c.id for c, _ in got] == [c.id for c, _ in want]
    assert np.allclose([d for _, d in got], [d for _, d in want], atol=1e-5)
    ref = _st_vector(tiny_embedder, QUERY)
    assert np.abs(np.asarray(fast._ef([QUERY])[0]) - ref).max() < 1e-5  # the export embeds as sentence-transformers


def test_a_fresh_query_process_imports_no_torch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache: Path, tiny_embedder: Path
) -> None:
    """What the export is for: a one-off process embeds the query without sentence-transformers or torch."""
    _index(capsys, tmp_path, tiny_embedder)
    *_, got = _fresh_process(
        "from crossrank.retrieval.pipeline import Pipeline\n"
        f"p = Pipeline(db={str(tmp_path / 'db')!r})\n"
        f"print(json.dumps({{'runtime': p.embedder_runtime, 'ids': p.dense_ids({QUERY!r}, 4)}}))\n"
    )
    assert got["runtime"] == "onnxruntime (cached export)" and got["loaded"] == []
    assert got["ids"] == Pipeline(db=tmp_path / "db", create=True).dense_ids(QUERY, 4)


def test_reindexing_unchanged_files_loads_no_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache: Path, tiny_embedder: Path
) -> None:
    """Nothing to embed, nothing loaded: Chroma's embedding function is made lazily; a changed file
    is then embedded exactly as sentence-transformers embeds it, and the collection still records
    Chroma's own sentence-transformers embedding function (what a plain chromadb client rebuilds)."""
    _index(capsys, tmp_path, tiny_embedder)
    *_, report, probe_out = _fresh_process(
        "from crossrank.cli import main\n"
        f"code = main(['index', {str(tmp_path / 'docs')!r}, '--db', {str(tmp_path / 'db')!r}, "
        f"'--embedder', {str(tiny_embedder)!r}, '--json'])\n"
        "print(json.dumps({'code': code}))\n"
    )
    assert probe_out == {"code": 0, "loaded": []}
    assert report["embedded"] == 0 and report["unchanged"] == len(TEXTS)

    changed = "Aspirin did not change the rate of stroke in the trial."
    (tmp_path / "docs" / "aspirin.txt").write_text(changed)
    argv = ["index", str(tmp_path / "docs"), "--db", str(tmp_path / "db"), "--embedder", str(tiny_embedder), "--json"]
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["embedded"] == 1
    import chromadb
    from chromadb.config import Settings

    plain = chromadb.PersistentClient(str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False))
    col = plain.get_collection("crossrank")
    ef = col.configuration_json["embedding_function"]
    assert ef["name"] == "sentence_transformer" and ef["config"]["model_name"] == str(tiny_embedder)
    got = col.get(where={"source": str((tmp_path / "docs" / "aspirin.txt").resolve())}, include=["embeddings"])
    assert np.abs(np.asarray(got["embeddings"][0]) - _st_vector(tiny_embedder, changed)).max() < 1e-5


def test_an_embedder_that_cannot_load_fails_on_first_embed_with_our_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossrank.errors import ModelNotFoundError
    from crossrank.retrieval.indexing import Chunk

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = Pipeline(db=tmp_path / "db", embedder="nobody-here/no-such-embedder", create=True)
    with pytest.raises(ModelNotFoundError, match="(?s)no-such-embedder.*could not be loaded.*--embedder"):
        pipe.add_chunks([Chunk(id="a", text="some text", metadata={"source": "x"})])


def test_switched_off_nothing_is_exported_or_used(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cache: Path,
    tiny_embedder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rep = _index(capsys, tmp_path, tiny_embedder)
    assert rep["embedder_export"]["status"] == "exported"
    monkeypatch.setenv(embedder_cache.ENV, "0")
    assert Pipeline(db=tmp_path / "db").embedder_runtime == "sentence-transformers"
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", str(tmp_path / "other-cache"))
    rep = _index(capsys, tmp_path, tiny_embedder)
    assert rep["embedder_export"] == {"status": "not exported", "reason": f"{embedder_cache.ENV}=0"}
    assert not (tmp_path / "other-cache" / "embedders").exists()


@pytest.mark.parametrize("damage", ["cut short", "bytes changed"])
def test_a_damaged_export_falls_back_to_sentence_transformers(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    cache: Path,
    tiny_embedder: Path,
    damage: str,
) -> None:
    folder = Path(_index(capsys, tmp_path, tiny_embedder)["embedder_export"]["path"])
    graph = folder / "model.onnx"
    data = graph.read_bytes()
    graph.write_bytes(data[:1000] if damage == "cut short" else data[:-64] + bytes(64))
    with caplog.at_level("WARNING", logger="crossrank"):
        pipe = Pipeline(db=tmp_path / "db")
    assert pipe.embedder_runtime == "sentence-transformers"
    if damage == "bytes changed":  # same size: found, then refused by its SHA-256 when loaded, and said so
        assert "ignoring the cached embedder export" in caplog.text
    assert pipe.dense_ids(QUERY, 4) == Pipeline(db=tmp_path / "db", create=True).dense_ids(QUERY, 4)
    if damage == "cut short":  # the next index run sees it unusable and exports again
        assert _index(capsys, tmp_path, tiny_embedder)["embedder_export"]["status"] == "exported"
        assert Pipeline(db=tmp_path / "db").embedder_runtime == "onnxruntime (cached export)"


def test_an_embedder_the_export_cannot_run_is_indexed_and_queried_as_before(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache: Path, tiny_embedder: Path
) -> None:
    """Two pooling modes at once (sentence-transformers concatenates them): the export refuses, indexing goes on."""
    import shutil

    odd = tmp_path / "two-poolings"
    shutil.copytree(tiny_embedder, odd)
    mods = json.loads((odd / "modules.json").read_text())
    pool = odd / next(m["path"] for m in mods if m["type"].endswith("Pooling")) / "config.json"
    cfg = json.loads(pool.read_text())
    pool.write_text(json.dumps({**cfg, "pooling_mode": ["mean", "max"]}))
    rep = _index(capsys, tmp_path, odd)
    assert rep["embedder_export"]["status"] == "not exported" and "pools with" in rep["embedder_export"]["reason"]
    assert rep["total_in_collection"] == len(TEXTS)
    assert Pipeline(db=tmp_path / "db").embedder_runtime == "sentence-transformers"
