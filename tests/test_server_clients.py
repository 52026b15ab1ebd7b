"""Real, unmodified clients against crossrank serve: the Cohere SDK (v1 and v2), LangChain's and
LlamaIndex's CohereRerank in a real retriever / query engine, infinity-client, and plain httpx for TEI.

Each client only points its base URL (and key) at the server; every answer must parse with the
client's own types and rank exactly as the in-process ``Reranker`` does.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from crossrank import Reranker  # noqa: E402
from crossrank.server import ServerSettings, create_app  # noqa: E402
from crossrank.server.testing import serve_in_thread  # noqa: E402

KEY = "client-test-key"
QUERY = "does aspirin prevent heart attacks?"
DOCS = [
    "The eiffel tower is a landmark in Paris.",
    "Low-dose aspirin reduces the risk of a first heart attack in some adults.",
    "Statins lower LDL cholesterol.",
    "Aspirin is an anti-inflammatory drug; it thins the blood.",
    "Bananas are rich in potassium.",
]


@pytest.fixture(scope="module")
def url(tiny: Reranker) -> Any:
    settings = ServerSettings(served_model_names=("tiny-reranker",), api_key=KEY)
    with serve_in_thread(create_app(tiny, settings)) as base:
        yield base


@pytest.fixture(scope="module")
def local(tiny: Reranker) -> Any:
    return tiny.rerank(QUERY, DOCS)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_cohere_sdk_v1(url: str, local: Any) -> None:
    cohere = pytest.importorskip("cohere")
    co = cohere.Client(api_key=KEY, base_url=url)
    res = co.rerank(
        model="tiny-reranker",
        query=QUERY,
        documents=DOCS,
        top_n=3,
        return_documents=True,
        request_options={"max_retries": 0},
    )
    assert [r.index for r in res.results] == local.indices[:3]
    for r, want in zip(res.results, local):
        assert r.relevance_score == pytest.approx(_sigmoid(want.raw_score), abs=1e-6)
        assert r.document is not None and r.document.text == DOCS[r.index]
    assert res.id and res.meta is not None and res.meta.api_version is not None

    bare = co.rerank(query=QUERY, documents=[{"text": d} for d in DOCS], request_options={"max_retries": 0})
    assert [r.index for r in bare.results] == local.indices
    assert all(r.document is None for r in bare.results)


def test_cohere_sdk_v2_sync_and_async(url: str, local: Any) -> None:
    cohere = pytest.importorskip("cohere")
    co = cohere.ClientV2(api_key=KEY, base_url=url)
    res = co.rerank(model="tiny-reranker", query=QUERY, documents=DOCS, top_n=2, request_options={"max_retries": 0})
    assert [r.index for r in res.results] == local.indices[:2]

    async def go() -> Any:
        aco = cohere.AsyncClientV2(api_key=KEY, base_url=url)
        return await asyncio.gather(
            *(
                aco.rerank(model="tiny-reranker", query=QUERY, documents=DOCS, request_options={"max_retries": 0})
                for _ in range(8)
            )
        )

    for r in asyncio.run(go()):
        assert [x.index for x in r.results] == local.indices


def test_cohere_sdk_errors_are_the_sdks_own(url: str) -> None:
    cohere = pytest.importorskip("cohere")
    from cohere.errors import NotFoundError, UnauthorizedError

    opts = {"max_retries": 0}
    with pytest.raises(UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=url).rerank(
            model="tiny-reranker", query=QUERY, documents=DOCS, request_options=opts
        )
    with pytest.raises(NotFoundError) as err:
        cohere.ClientV2(api_key=KEY, base_url=url).rerank(
            model="/etc/passwd", query=QUERY, documents=DOCS, request_options=opts
        )
    assert "never loads" in str(err.value.body)


def test_langchain_cohere_rerank_in_a_retriever(url: str, local: Any) -> None:
    pytest.importorskip("langchain_cohere")
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(page_content=d, metadata={"i": i}) for i, d in enumerate(DOCS)])
    reranker = CohereRerank(model="tiny-reranker", cohere_api_key=KEY, base_url=url, top_n=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": len(DOCS)})
    )
    docs = retriever.invoke(QUERY)
    assert [d.metadata["i"] for d in docs] == local.indices[:3]
    assert all(0.0 <= d.metadata["relevance_score"] <= 1.0 for d in docs)


def test_llama_index_cohere_rerank_in_a_query_engine(url: str, local: Any) -> None:
    pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    index = VectorStoreIndex.from_documents(
        [Document(text=d, metadata={"i": i}, excluded_embed_metadata_keys=["i"]) for i, d in enumerate(DOCS)],
        embed_model=MockEmbedding(embed_dim=8),
    )
    rerank = CohereRerank(api_key=KEY, base_url=url, model="tiny-reranker", top_n=2, max_retries=1)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=len(DOCS), node_postprocessors=[rerank])
    response = engine.query(QUERY)
    got = [n.node.metadata["i"] for n in response.source_nodes]
    assert got == local.indices[:2]
    assert all(0.0 <= (n.score or 0.0) <= 1.0 for n in response.source_nodes)


def test_infinity_client(url: str, local: Any) -> None:
    pytest.importorskip("infinity_client")
    from infinity_client import AuthenticatedClient
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput, ReRankResult

    client = AuthenticatedClient(base_url=url, token=KEY)
    res = rerank.sync(client=client, body=RerankInput(query=QUERY, documents=DOCS, return_documents=True))
    assert isinstance(res, ReRankResult)
    assert [r.index for r in res.results] == local.indices
    assert all(r.document == DOCS[r.index] for r in res.results)
    raw = rerank.sync(client=client, body=RerankInput(query=QUERY, documents=DOCS, raw_scores=True, top_n=2))
    assert isinstance(raw, ReRankResult)
    assert [r.relevance_score for r in raw.results] == pytest.approx([r.raw_score for r in local][:2], abs=1e-5)


def test_infinity_client_lists_the_served_model(url: str, tiny: Reranker) -> None:
    """infinity_client's own ``models`` call parses our /models (its ModelInfo takes only Infinity's values)."""
    pytest.importorskip("infinity_client")
    from infinity_client import AuthenticatedClient
    from infinity_client.api.default import models
    from infinity_client.models import OpenAIModelInfo

    listed = models.sync(client=AuthenticatedClient(base_url=url, token=KEY))
    assert isinstance(listed, OpenAIModelInfo)
    assert [m.id for m in listed.data] == ["tiny-reranker"]
    assert listed.data[0].backend == tiny.scorer.describe().backend and listed.data[0].capabilities == ["rerank"]
    assert httpx.get(url + "/models").status_code == 401  # behind the key, as Infinity's route is


def test_tei_info_has_teis_fields(url: str, tiny: Reranker, tiny_model: Any) -> None:
    """/info carries every field of TEI's ``Info`` (router/src/lib.rs, ``struct Info``) with TEI's types;
    TEI clients such as Dify's read ``model_type`` (``{"reranker": {...}}``), ``max_input_length`` and
    ``max_client_batch_size`` from it. TEI takes the labels from the model's config.json."""
    import json

    info = httpx.get(url + "/info", headers={"Authorization": f"Bearer {KEY}"}).json()
    tei_fields: dict[str, Any] = {  # name: type, as TEI serialises them (Option<...> may be null)
        "model_id": str,
        "model_sha": (str, type(None)),
        "model_dtype": str,
        "model_type": dict,
        "max_concurrent_requests": int,
        "max_input_length": int,
        "max_batch_tokens": int,
        "max_batch_requests": (int, type(None)),
        "max_client_batch_size": int,
        "auto_truncate": bool,
        "tokenization_workers": int,
        "version": str,
        "sha": (str, type(None)),
        "docker_label": (str, type(None)),
    }
    for name, kind in tei_fields.items():
        assert isinstance(info.get(name, ...), kind), name
    config = json.loads((tiny_model / "config.json").read_text())
    want = {str(k): v for k, v in config["id2label"].items()}
    assert info["model_type"] == {"reranker": {"id2label": want, "label2id": {v: int(k) for k, v in want.items()}}}
    assert info["model_id"] == "tiny-reranker" and info["max_input_length"] == tiny.max_length
    assert info["model_dtype"] in ("float32", "float16", "bfloat16", "int8")


def test_tei_with_plain_httpx(url: str, local: Any) -> None:
    r = httpx.post(
        url + "/rerank",
        json={
            "query": QUERY,
            "texts": DOCS,
            "raw_scores": False,
            "return_text": True,
            "truncate": True,
            "truncation_direction": "Right",
        },
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200
    assert [x["index"] for x in r.json()] == local.indices
