"""``crossrank serve`` with a late-interaction model, through the unmodified Cohere SDK."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
cohere = pytest.importorskip("cohere")

from crossrank.cli import build_parser  # noqa: E402
from crossrank.cli.serve import late_model, late_reranker, settings_from  # noqa: E402
from crossrank.late import load_multi_vector_model  # noqa: E402
from crossrank.late.testing import make_tiny_multi_vector  # noqa: E402
from crossrank.server import create_app  # noqa: E402
from crossrank.server.testing import serve_in_thread  # noqa: E402

QUERY = "does aspirin lower the risk of heart disease?"
DOCS = [
    "coffee and tea are drunk with sugar.",
    "aspirin lowers the risk of heart disease in patients, a trial found.",
    "the python program reads code.",
    "vitamin dose and blood sugar: insulin study.",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = make_tiny_multi_vector(tmp_path_factory.mktemp("late-serve") / "colbert-tiny")
    args = build_parser().parse_args(["serve", "--model", str(folder), "--api-key", "k"])
    model = late_model(args, str(folder))  # detected from the folder: no --late-interaction needed
    assert model == str(folder)
    reranker = late_reranker(args, model)
    with serve_in_thread(create_app(reranker, settings_from(args, model))) as url:
        yield url, folder


def test_cohere_v2_route_ranks_by_mean_maxsim(served: Any) -> None:
    url, folder = served
    co = cohere.ClientV2(api_key="k", base_url=url)
    res = co.rerank(model="colbert-tiny", query=QUERY, documents=DOCS, top_n=3, request_options={"max_retries": 0})

    # the reference: MaxSim written out, over the model's own token vectors, divided by the query's tokens
    enc = load_multi_vector_model(folder).encoder
    q = enc.encode_query(QUERY, convert_to_numpy=True).astype(np.float64)
    docs = [d.astype(np.float64) for d in enc.encode_document(DOCS, convert_to_numpy=True)]
    mean_maxsim = [sum(float(np.max(d @ qv)) for qv in q) / len(q) for d in docs]
    order = sorted(range(len(DOCS)), key=lambda i: -mean_maxsim[i])
    assert [r.index for r in res.results] == order[:3]
    for r in res.results:
        assert r.relevance_score == pytest.approx(1 / (1 + math.exp(-mean_maxsim[r.index])), abs=1e-3)
        assert 0.0 < r.relevance_score < 1.0

    import httpx

    info = httpx.get(f"{url}/info", headers={"Authorization": "Bearer k"}).json()
    assert info["kind"] == "late-interaction" and "similarity" in info["score_scale"]


def test_cross_encoder_options_are_refused_not_dropped(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from crossrank.cli import main
    from crossrank.errors import InvalidArgumentError

    _, folder = served
    for extra in (["--quantize", "int8"], ["--max-length", "64"], ["--backend", "onnx"], ["--model", "other"]):
        args = build_parser().parse_args(["serve", "--late-interaction", str(folder), *extra])
        with pytest.raises(InvalidArgumentError, match=f"{extra[0]} apply to a cross-encoder"):
            late_reranker(args, late_model(args, str(folder)) or "")
    assert main(["serve", "--model", "x", "--late-store", str(folder)]) == 2  # a store without its model
    assert "--late-store holds a late-interaction model's vectors" in capsys.readouterr().err
