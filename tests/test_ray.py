"""Scale-out on a local Ray (2 CPUs, tiny model): the server on Ray Serve replicas, and score-pairs on Ray Data.

Skipped only where the ``ray`` extra is not installed.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from crossrank import Reranker  # noqa: E402
from crossrank.server import ServerSettings  # noqa: E402
from crossrank.server.ray import build_app  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray cluster takes a while to start

QUERY = "does aspirin prevent heart attacks?"
DOCS = ["aspirin and the heart", "paris is in france", "statins and cholesterol", "aspirin thins the blood"]
KEY = "ray-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_local() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_url(ray_local: None, tiny_model: Path) -> Any:
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(
        str(tiny_model),
        replicas=2,
        settings=ServerSettings(served_model_names=("tiny",), api_key=KEY),
        reranker_options={"backend": "torch"},
        ray_actor_options={"num_cpus": 0.25},
        max_batch_size=8,
    )
    serve.run(app, name="crossrank", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_ray_serve_replicas_serve_the_same_routes(ray_url: str, tiny: Reranker) -> None:
    import asyncio

    headers = {"Authorization": f"Bearer {KEY}"}
    local = tiny.rerank(QUERY, DOCS)
    r = httpx.post(ray_url + "/v1/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS}, headers=headers)
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["results"]] == local.indices
    tei = httpx.post(ray_url + "/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, headers=headers)
    assert [x["score"] for x in tei.json()] == pytest.approx([x.raw_score for x in local], abs=1e-5)
    assert httpx.post(ray_url + "/v2/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 401
    bad = httpx.post(ray_url + "/v1/rerank", json={"query": "", "documents": DOCS}, headers=headers)
    assert bad.status_code == 400 and "message" in bad.json()

    async def burst() -> list[Any]:  # @serve.batch gathers these; every answer is still its own
        async with httpx.AsyncClient(base_url=ray_url, headers=headers, timeout=60) as c:
            return list(
                await asyncio.gather(
                    *(c.post("/v1/rerank", json={"query": f"{QUERY} {i}", "documents": DOCS}) for i in range(12))
                )
            )

    for i, resp in enumerate(asyncio.run(burst())):
        assert resp.status_code == 200
        assert [x["index"] for x in resp.json()["results"]] == tiny.rerank(f"{QUERY} {i}", DOCS).indices


def test_score_pairs_ray_matches_single_process(ray_local: None, tiny_model: Path, tmp_path: Path) -> None:
    from crossrank.cli import main

    src = tmp_path / "pairs.jsonl"
    rows = [{"query": f"q{i % 3} aspirin", "document": DOCS[i % 4] + f" {i}", "id": i} for i in range(40)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", str(tiny_model), "--backend", "torch", "--batch-rows", "16", "--no-progress"]
    assert main(["score-pairs", str(src), str(tmp_path / "one.jsonl"), *common]) == 0
    assert (
        main(
            [
                "score-pairs",
                str(src),
                str(tmp_path / "ray.jsonl"),
                "--ray",
                "--actors",
                "1",
                "--num-cpus-per-actor",
                "0.5",
                *common,
            ]
        )
        == 0
    )
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    via_ray = [json.loads(x) for x in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [r["id"] for r in via_ray] == list(range(40))
    assert [r["score"] for r in via_ray] == pytest.approx([r["score"] for r in one], abs=1e-5)
