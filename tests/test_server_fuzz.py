"""Property-based fuzzing of every route from the server's own OpenAPI schema (schemathesis, bounded).

Valid and invalid bodies alike: no 5xx, every status is one the schema documents, and every
response body conforms to the schema the route declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from crossrank import Reranker  # noqa: E402
from crossrank.server import ServerSettings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_schema(tiny_model: Path) -> Any:
    # A small document limit keeps generated lists cheap to score and makes the 413 path reachable.
    rr = Reranker(tiny_model, backend="torch", max_length=32)
    app = create_app(rr, ServerSettings(served_model_names=("tiny",), max_documents=8), load_on_startup=False)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


OPERATIONS = [
    ("POST", "/v1/rerank"),
    ("POST", "/v2/rerank"),
    ("POST", "/rerank"),
    ("GET", "/health"),
    ("GET", "/info"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_route_from_the_schema(fuzz_schema: Any, method: str, path: str, mode: str) -> None:
    from hypothesis import given
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS

    operation = fuzz_schema[path][method]
    if mode == "negative" and method == "GET":
        pytest.skip("GET routes take no input to make invalid")
    # "Schema-valid data is accepted" does not hold by design: a blank query, an empty list or a
    # model name the server does not serve are valid for the schema and refused (400/404).
    excluded = [c for c in CHECKS.get_all() if c.__name__ == "positive_data_acceptance"]
    strategy = operation.as_strategy(GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE)

    @given(case=strategy)
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(excluded_checks=excluded)

    check()
