"""``crossrank query`` in the light install (issue #27): a Chroma collection the full install indexed.

Runs only in the torch-free venv ``.ci/run`` builds (``CROSSRANK_LIGHT_QUERY`` set). The full
install indexed SciFact abstracts with sentence-transformers and answered the claims itself
(``tests/light/query_reference.py``); here the exported embedder (``crossrank export`` of the
bi-encoder: ONNX Runtime, no torch) must find the same candidates at the same distances and the
exported cross-encoder rerank them to the same ids and scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("CROSSRANK_LIGHT_QUERY"):
    pytest.skip("the light-install checks run in the torch-free venv of .ci/run", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_reference import query_args

pytestmark = pytest.mark.integration

REF: dict[str, Any] = json.loads(Path(os.environ["CROSSRANK_LIGHT_QUERY"]).read_text())
EMBEDDER = os.environ["CROSSRANK_LIGHT_EMBEDDER"]


def _query(text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossrank", *query_args(REF["export"], REF["db"], text), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("i", range(len(REF["answers"])))
def test_query_answers_as_the_full_install(i: int) -> None:
    want = REF["answers"][i]
    done = _query(want["text"], "--embedder", EMBEDDER)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in want["result"]["hits"]]
    assert [h["first_stage_rank"] for h in got["hits"]] == [h["first_stage_rank"] for h in want["result"]["hits"]]
    for g, w in zip(got["hits"], want["result"]["hits"]):
        assert abs(g["score"] - w["score"]) <= 1e-5, (g["id"], g["score"], w["score"])
        assert abs(g["distance"] - w["distance"]) <= 1e-5, (g["id"], g["distance"], w["distance"])


def test_without_the_exported_embedder_the_missing_extra_is_named() -> None:
    """The collection records the source bi-encoder; running it needs sentence-transformers."""
    done = _query(REF["answers"][0]["text"])
    assert done.returncode != 0 and "crossrank[torch]" in done.stderr, done.stderr
