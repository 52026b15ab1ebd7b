"""The late-interaction query encoder on ONNX Runtime against sentence-transformers' own ``encode_query``.

The reference is ``MultiVectorEncoder.encode_query`` in torch (the authors' recipe for all three folder
formats: ST, PyLate markers and Stanford ColBERT), so a difference in markers, ``[MASK]`` expansion,
attention to the expansion, projection or normalisation shows up as a vector difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossrank.errors import InvalidArgumentError
from crossrank.late import LateInteractionScorer, load_multi_vector_model
from crossrank.late.query_graph import GRAPH, graph_dir
from crossrank.scoring.base import ScoreSettings

QUERIES = [
    "does aspirin lower the risk of heart disease?",
    "heart",
    "a long query " * 30,  # longer than the query length: truncated the same way
    "",
]


@pytest.mark.parametrize("kind", ["st", "pylate", "stanford"])
def test_onnx_query_vectors_equal_sentence_transformers(late_folders: dict[str, Path], kind: str) -> None:
    model = load_multi_vector_model(late_folders[kind], query_backend="onnx")
    assert model.query_backend == "onnx"
    got = model.encode_queries(QUERIES)
    alone = [model.encode_queries([q])[0] for q in QUERIES]
    want = model.encoder.encode_query(QUERIES, convert_to_numpy=True)
    for g, a, w in zip(got, alone, want):
        assert g.shape == w.shape  # same tokens kept (expansion, markers, truncation)
        np.testing.assert_allclose(g, w, atol=1e-5)
        np.testing.assert_allclose(a, w, atol=1e-5)  # batched or alone: the same


def test_scores_agree_across_query_backends(late_folders: dict[str, Path]) -> None:
    docs = ["aspirin lowers the risk of heart disease.", "coffee with sugar.", "the brain in sleep."]
    fast = LateInteractionScorer(late_folders["st"], precision="fp32", query_backend="onnx")
    ref = LateInteractionScorer(late_folders["st"], precision="fp32", query_backend="torch")
    assert ref.model.query_backend == "torch"
    np.testing.assert_allclose(
        fast.score(QUERIES[0], docs, ScoreSettings()).raw, ref.score(QUERIES[0], docs, ScoreSettings()).raw, atol=1e-4
    )


def test_graph_is_exported_once_into_the_cache(late_folders: dict[str, Path], tmp_path: Path) -> None:
    torch_only = load_multi_vector_model(late_folders["pylate"], query_backend="torch")
    torch_only.encode_queries(["x"])
    model = load_multi_vector_model(late_folders["pylate"])  # auto
    model.encode_queries(["x"])
    graph = graph_dir(model.fingerprint) / GRAPH
    assert graph.is_file() and model.query_backend == "onnx"
    stamp = graph.stat().st_mtime_ns
    from crossrank.late.query_graph import QueryGraph

    again = QueryGraph.build(model.encoder, model.fingerprint)
    assert again is not None and graph.stat().st_mtime_ns == stamp  # read from the cache, not exported again


def test_bad_query_backend_is_a_typed_error(late_folders: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgumentError, match="query_backend"):
        load_multi_vector_model(late_folders["st"], query_backend="tensorrt")
