"""``crossrank export`` of a bi-encoder and the torch-free embedder that runs it (issue #27's query gap).

The reference is sentence-transformers itself (``SentenceTransformer.encode``, normalised, as
crossrank's Chroma embedding function calls it) on the bundled all-MiniLM-L6-v2; the exported
folder must embed within float32 rounding of it and query a collection the source indexed, through
crossrank's own embedder-record check, to the same neighbours and distances.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossrank.errors import ModelLoadError
from crossrank.retrieval.indexing import Chunk
from crossrank.retrieval.portable_embedder import MANIFEST, PortableEmbedder

TEXTS = [
    "does aspirin prevent heart attacks?",
    "",
    "x",
    "Ünïcode, accents and — dashes; numbers 12.5 mg/kg",
    "A very long abstract sentence about randomized controlled trials. " * 60,  # past max_seq_length 256
    "short",
]


@pytest.fixture(scope="session")
def exported_embedder(embedder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emb") / "minilm-export"
    done = subprocess.run(
        [sys.executable, "-m", "crossrank", "export", str(embedder_path), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["manifest"]["pooling"] == "mean"
    return out


def test_manifest_names_the_source_as_a_collection_records_it(exported_embedder: Path, embedder_path: Path) -> None:
    from crossrank.retrieval.embedder_record import embedder_record
    from crossrank.retrieval.embeddings import resolve_embedder

    m = json.loads((exported_embedder / MANIFEST).read_text())
    record = embedder_record(resolve_embedder(str(embedder_path)))
    assert m["source"]["model"] == record["crossrank:embedder"]
    assert m["source"]["fingerprint"] == record["crossrank:embedder_fingerprint"]
    assert (m["pooling"], m["normalize"], m["max_length"]) == ("mean", True, 256)  # from the ST config


def test_embeddings_equal_sentence_transformers(exported_embedder: Path, embedder_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(str(embedder_path), device="cpu").encode(TEXTS, normalize_embeddings=True, batch_size=4)
    got = PortableEmbedder(exported_embedder, batch_size=4).embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == want.shape
    cos = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert float(np.max(1.0 - cos)) <= 1e-5
    assert float(np.max(np.abs(got - want))) <= 1e-5


def test_pipeline_queries_a_collection_the_source_indexed(
    exported_embedder: Path, embedder_path: Path, tmp_path: Path
) -> None:
    from crossrank.retrieval.pipeline import Pipeline

    db = tmp_path / "db"
    extra = [
        "Statins lower cholesterol and cardiovascular risk.",
        "Low-dose aspirin in primary prevention of cardiovascular events.",
        "Vitamin D supplementation and fracture risk in older adults.",
    ]
    chunks = [Chunk(id=f"c{i}", text=t, metadata={"source": f"s{i}"}) for i, t in enumerate([*TEXTS, *extra])]
    full = Pipeline("docs", db=db, embedder=embedder_path, create=True)  # sentence-transformers indexes
    full.add_chunks(chunks)
    want = full.dense_search("aspirin and heart attack prevention", 5)
    light = Pipeline("docs", db=db, embedder=exported_embedder)  # the record check passes: same source
    got = light.dense_search("aspirin and heart attack prevention", 5)
    assert [c.id for c, _ in got] == [c.id for c, _ in want]
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, want)) <= 1e-5

    # The other way round: the exported folder indexes (the light install's `crossrank index`), the source queries.
    Pipeline("docs2", db=db, embedder=exported_embedder, create=True).add_chunks(chunks)
    again = Pipeline("docs2", db=db, embedder=embedder_path).dense_search("aspirin and heart attack prevention", 5)
    assert [c.id for c, _ in again] == [c.id for c, _ in want]
    assert max(abs(a - b) for (_, a), (_, b) in zip(again, want)) <= 1e-5


def test_a_damaged_graph_is_refused(exported_embedder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in exported_embedder.iterdir():
        (copy / f.name).symlink_to(f)
    (copy / MANIFEST).unlink()
    m = json.loads((exported_embedder / MANIFEST).read_text())
    m["graph"]["sha256"] = "0" * 64
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ModelLoadError, match="missing or damaged"):
        PortableEmbedder(copy)


def test_export_refuses_variants_for_a_bi_encoder(embedder_path: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossrank",
            "export",
            str(embedder_path),
            "--out",
            str(tmp_path / "o"),
            "--variants",
            "int8",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "bi-encoder" in out.stderr, out.stderr
    assert not (tmp_path / "o").exists()
