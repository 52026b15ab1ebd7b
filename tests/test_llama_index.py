"""LlamaIndex adapter: unit behaviour, events, and a real query engine over real Chroma."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from crossrank import InvalidDocumentTypeError, InvalidQueryError, Reranker
from llama_index.postprocessor.crossrank import CrossRankRerank


def make_nodes() -> list[NodeWithScore]:
    texts = ["the python snake is a reptile", "python code is a program language", "aspirin dose and heart risk", ""]
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"src": f"s{i}", "tags": ["x"]}), score=0.9 - i / 10)
        for i, t in enumerate(texts)
    ]


class Recorder(BaseEventHandler):
    events: list[BaseEvent] = []

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder():  # type: ignore[no-untyped-def]
    root = get_dispatcher()
    rec = Recorder(events=[])
    root.add_event_handler(rec)
    yield rec
    root.event_handlers.remove(rec)


def _names(rec: Recorder) -> list[str]:
    return [e.class_name() for e in rec.events if e.class_name().startswith("ReRank")]


def test_postprocess_returns_copies(tiny: Reranker, recorder: Recorder) -> None:
    nodes = make_nodes()
    before = copy.deepcopy(nodes)
    pp = CrossRankRerank(reranker=tiny, top_n=3, keep_retrieval_score=True)
    out = pp.postprocess_nodes(nodes, query_str="python snake")
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]
    expected = tiny.rerank("python snake", [n.node.get_content() for n in nodes], top_n=3)
    assert [n.node.node_id for n in out] == [f"n{r.index}" for r in expected]
    for n, r in zip(out, expected):
        assert type(n.score) is float and n.score == pytest.approx(r.score)
        assert n.node is not nodes[r.index].node
        assert n.node.metadata["retrieval_score"] == pytest.approx(0.9 - r.index / 10)
        assert n.node.metadata["src"] == f"s{r.index}"
    out[0].node.metadata["tags"].append("mutated")
    assert all(n.node.metadata["tags"] == ["x"] for n in nodes)
    assert "retrieval_score" not in nodes[0].node.metadata
    assert _names(recorder) == ["ReRankStartEvent", "ReRankEndEvent"]
    assert CrossRankRerank.class_name() == "CrossRankRerank"


def test_copies_share_no_mutable_state_with_the_callers_nodes(tiny: Reranker) -> None:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    nodes = make_nodes()
    for n in nodes:
        n.node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="doc", metadata={"page": [1]})
        n.node.excluded_llm_metadata_keys = ["src"]
        n.node.embedding = [0.5, 0.25]
    before = copy.deepcopy(nodes)
    out = CrossRankRerank(reranker=tiny, top_n=None).postprocess_nodes(nodes, query_str="python snake")
    for n in out:
        n.node.relationships[NodeRelationship.PREVIOUS] = RelatedNodeInfo(node_id="other")
        n.node.relationships[NodeRelationship.SOURCE].metadata["page"].append(2)
        n.node.excluded_llm_metadata_keys.append("tags")
        n.node.excluded_embed_metadata_keys.append("tags")
        assert n.node.embedding is not None
        n.node.embedding[0] = 9.0
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]


async def test_the_async_path_has_its_own_span(tiny: Reranker) -> None:
    """LlamaIndex traces each postprocessor call as a span; the async call is one too, its events inside it."""
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    root = get_dispatcher()
    spans = SimpleSpanHandler()
    root.add_span_handler(spans)
    try:
        pp = CrossRankRerank(reranker=tiny, top_n=2)
        await pp.apostprocess_nodes(make_nodes(), query_str="python snake")
        pp.postprocess_nodes(make_nodes(), query_str="python snake")
    finally:
        root.span_handlers.remove(spans)
    names = [s.id_.split("-")[0] for s in spans.completed_spans]
    assert "CrossRankRerank._apostprocess_nodes" in names and "CrossRankRerank._postprocess_nodes" in names


def test_missing_query_fails_before_events(tiny: Reranker, recorder: Recorder) -> None:
    debug = LlamaDebugHandler()
    pp = CrossRankRerank(reranker=tiny, callback_manager=CallbackManager([debug]))
    with pytest.raises(InvalidQueryError, match="needs the query"):
        pp.postprocess_nodes(make_nodes())
    assert _names(recorder) == [] and debug.get_event_pairs(CBEventType.RERANKING) == []


def test_wrong_item_type(tiny: Reranker) -> None:
    from langchain_core.documents import Document

    with pytest.raises(InvalidDocumentTypeError, match="item 1 is Document"):
        CrossRankRerank(reranker=tiny).postprocess_nodes(
            [make_nodes()[0], Document(page_content="x")],
            query_str="q",  # type: ignore[list-item]
        )


async def test_async_matches_sync_and_fires_events(tiny: Reranker, recorder: Recorder) -> None:
    debug = LlamaDebugHandler()
    pp = CrossRankRerank(reranker=tiny, top_n=4, callback_manager=CallbackManager([debug]))
    sync = pp.postprocess_nodes(make_nodes(), QueryBundle("heart risk"))
    got = await pp.apostprocess_nodes(make_nodes(), QueryBundle("heart risk"))
    assert [(n.node.node_id, n.score) for n in got] == [(n.node.node_id, n.score) for n in sync]
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 2
    assert _names(recorder) == ["ReRankStartEvent", "ReRankEndEvent"] * 2


def test_same_core_same_ranking_in_both_frameworks(tiny: Reranker) -> None:
    from langchain_core.documents import Document

    from langchain_crossrank import CrossRankCompressor

    nodes = make_nodes()
    docs = [Document(page_content=n.node.get_content(), id=n.node.node_id) for n in nodes]
    li = CrossRankRerank(reranker=tiny, top_n=None).postprocess_nodes(nodes, query_str="python")
    lc = CrossRankCompressor(reranker=tiny, top_n=None).compress_documents(docs, "python")
    assert [n.node.node_id for n in li] == [d.id for d in lc]
    assert [n.score for n in li] == [d.metadata["relevance_score"] for d in lc]


# --------------------------------------------------------------------------- real pipeline


@pytest.fixture(scope="module")
def li_index(scifact_slice, slice_vectors, embedder_path: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import chromadb
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore

    _, docs = scifact_slice
    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("li-chroma")))
    collection = client.get_or_create_collection("scifact", metadata={"hnsw:space": "cosine"})
    store = ChromaVectorStore(chroma_collection=collection)
    nodes = [TextNode(text=t, id_=d, embedding=slice_vectors[d], metadata={"doc_id": d}) for d, t in docs.items()]
    embed = HuggingFaceEmbedding(model_name=str(embedder_path), device="cpu")
    return VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed)


@pytest.mark.integration
async def test_query_engine_sync_and_async(li_index, shared_rr: Reranker, scifact_slice, recorder: Recorder) -> None:  # type: ignore[no-untyped-def]
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    queries, _ = scifact_slice
    debug = LlamaDebugHandler()
    pp = CrossRankRerank(reranker=shared_rr, top_n=5)
    engine = RetrieverQueryEngine.from_args(
        li_index.as_retriever(similarity_top_k=20),
        node_postprocessors=[pp],
        llm=MockLLM(),
        callback_manager=CallbackManager([debug]),
    )
    q = queries[0][1]
    resp = engine.query(q)
    scores = [n.score for n in resp.source_nodes]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    aresp = await engine.aquery(q)
    assert [n.node.node_id for n in aresp.source_nodes] == [n.node.node_id for n in resp.source_nodes]
    assert [n.score for n in aresp.source_nodes] == pytest.approx(scores, abs=1e-6)
    assert _names(recorder) == ["ReRankStartEvent", "ReRankEndEvent"] * 2
    start = next(e for e in recorder.events if e.class_name() == "ReRankStartEvent")
    assert len(start.nodes) == 20 and start.top_n == 5  # type: ignore[attr-defined]
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 2


@pytest.mark.integration
def test_both_adapters_agree_on_real_candidates(li_index, shared_rr: Reranker, scifact_slice) -> None:  # type: ignore[no-untyped-def]
    from langchain_core.documents import Document

    from langchain_crossrank import CrossRankCompressor

    queries, _ = scifact_slice
    retriever = li_index.as_retriever(similarity_top_k=20)
    for _, q in queries[:3]:
        nodes = retriever.retrieve(q)
        docs = [Document(page_content=n.node.get_content(), id=n.node.node_id) for n in nodes]
        li = CrossRankRerank(reranker=shared_rr, top_n=10).postprocess_nodes(nodes, query_str=q)
        lc = CrossRankCompressor(reranker=shared_rr, top_n=10).compress_documents(docs, q)
        assert [n.node.node_id for n in li] == [d.id for d in lc]
        assert [n.score for n in li] == [d.metadata["relevance_score"] for d in lc]
