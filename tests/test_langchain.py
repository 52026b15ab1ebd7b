"""LangChain adapter: unit behaviour, and real pipelines over real Chroma with the trained model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_huggingface import HuggingFaceEmbeddings

from crossrank import InvalidDocumentTypeError, InvalidQueryError, Reranker
from langchain_crossrank import CrossRankCompressor, CrossRankCrossEncoder

DOCS = [
    Document(page_content="the python snake is a reptile", metadata={"src": "a", "tags": ["x"]}, id="a"),
    Document(page_content="python code is a program language", metadata={"src": "b"}, id="b"),
    Document(page_content="aspirin dose and heart risk", metadata={"src": "c"}, id="c"),
    Document(page_content="", metadata={"src": "empty"}, id="d"),
]


class EventRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_compressor_returns_new_documents(tiny: Reranker) -> None:
    comp = CrossRankCompressor(reranker=tiny, top_n=3)
    before = copy.deepcopy(DOCS)
    out = comp.compress_documents(DOCS, "python snake")
    assert before == DOCS, "caller's documents must be untouched"
    assert len(out) == 3
    expected = tiny.rerank("python snake", [d.page_content for d in DOCS], top_n=3)
    assert [d.id for d in out] == [DOCS[r.index].id for r in expected]
    for d, r in zip(out, expected):
        assert d is not DOCS[r.index]
        assert type(d.metadata["relevance_score"]) is float
        assert d.metadata["relevance_score"] == pytest.approx(r.score)
        assert d.metadata["retrieval_rank"] == r.index + 1
        assert d.metadata["src"] == DOCS[r.index].metadata["src"]
    out[0].metadata.setdefault("tags", []).append("mutated")
    assert DOCS[0].metadata["tags"] == ["x"]


def test_compressor_options_and_errors(tiny: Reranker) -> None:
    everything = CrossRankCompressor(reranker=tiny, top_n=None).compress_documents(DOCS, "q")
    assert len(everything) == len(DOCS)  # the empty page_content document is scored, not dropped
    cut = everything[1].metadata["relevance_score"]
    kept = CrossRankCompressor(reranker=tiny, top_n=None, threshold=cut).compress_documents(DOCS, "q")
    assert len(kept) == 2
    with pytest.raises(InvalidDocumentTypeError, match="item 1 is dict"):
        CrossRankCompressor(reranker=tiny).compress_documents([DOCS[0], {"text": "x"}], "q")  # type: ignore[list-item]
    with pytest.raises(InvalidQueryError):
        CrossRankCompressor(reranker=tiny).compress_documents(DOCS, "  ")
    with pytest.raises(ValueError, match="top_n"):
        CrossRankCompressor(reranker=tiny, top_n=0)
    assert CrossRankCompressor(reranker=tiny).compress_documents([], "q") == []


async def test_async_matches_sync(tiny: Reranker) -> None:
    comp = CrossRankCompressor(reranker=tiny, top_n=4)
    sync = comp.compress_documents(DOCS, "heart risk")
    got = await comp.acompress_documents(DOCS, "heart risk")
    assert [(d.id, d.metadata["relevance_score"]) for d in got] == [(d.id, d.metadata["relevance_score"]) for d in sync]


def test_custom_event_reaches_callbacks(tiny: Reranker) -> None:
    rec = EventRecorder()
    comp = CrossRankCompressor(reranker=tiny, top_n=2)
    comp.compress_documents(DOCS, "python", callbacks=[rec])
    assert len(rec.events) == 1
    name, data = rec.events[0]
    assert name == "crossrank_rerank"
    assert data["query"] == "python" and data["candidates"] == 4 and data["top_n"] == 2
    assert data["seconds"] >= 0 and len(data["scores"]) == 2


def test_cross_encoder_in_langchain_reranker(tiny: Reranker) -> None:
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker

    ce = CrossRankCrossEncoder(reranker=tiny)
    pairs = [("python", "snake"), ("heart", "aspirin dose"), ("python", "code")]
    scores = ce.score(pairs)
    assert scores[0] == pytest.approx(tiny.score("python", ["snake"])[0])
    assert scores[1] == pytest.approx(tiny.score("heart", ["aspirin dose"])[0])
    out = CrossEncoderReranker(model=ce, top_n=2).compress_documents(DOCS[:3], "python snake")
    ours = CrossRankCompressor(reranker=tiny, top_n=2).compress_documents(DOCS[:3], "python snake")
    assert [d.id for d in out] == [d.id for d in ours]


# --------------------------------------------------------------------------- real pipelines


class PrecomputedEmbeddings(HuggingFaceEmbeddings):
    """The real HuggingFace embedder for queries; documents use vectors computed once per session."""

    vectors: dict[str, list[float]] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[t] for t in texts]


@pytest.fixture(scope="module")
def lc_store(scifact_slice, slice_vectors, embedder_path: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import chromadb
    from langchain_chroma import Chroma

    _, docs = scifact_slice
    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("lc-chroma")))
    emb = PrecomputedEmbeddings(
        model_name=str(embedder_path),
        encode_kwargs={"normalize_embeddings": True},
        model_kwargs={"device": "cpu"},
        vectors={docs[d]: v for d, v in slice_vectors.items()},
    )
    store = Chroma(
        client=client, collection_name="scifact", embedding_function=emb, collection_metadata={"hnsw:space": "cosine"}
    )
    store.add_texts(list(docs.values()), ids=list(docs), metadatas=[{"doc_id": d} for d in docs])
    return store


@pytest.mark.integration
def test_contextual_compression_retriever(lc_store, shared_rr: Reranker, scifact_slice) -> None:  # type: ignore[no-untyped-def]
    from langchain_classic.retrievers import ContextualCompressionRetriever

    queries, _ = scifact_slice
    rec = EventRecorder()
    retriever = ContextualCompressionRetriever(
        base_compressor=CrossRankCompressor(reranker=shared_rr, top_n=5),
        base_retriever=lc_store.as_retriever(search_kwargs={"k": 20}),
    )
    docs = retriever.invoke(queries[0][1], config={"callbacks": [rec]})
    assert len(docs) == 5
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert all(1 <= d.metadata["retrieval_rank"] <= 20 and d.id for d in docs)
    assert [n for n, _ in rec.events] == ["crossrank_rerank"] and rec.events[0][1]["candidates"] == 20


@pytest.mark.integration
async def test_contextual_compression_retriever_async(lc_store, shared_rr: Reranker, scifact_slice) -> None:  # type: ignore[no-untyped-def]
    from langchain_classic.retrievers import ContextualCompressionRetriever

    queries, _ = scifact_slice
    retriever = ContextualCompressionRetriever(
        base_compressor=CrossRankCompressor(reranker=shared_rr, top_n=5),
        base_retriever=lc_store.as_retriever(search_kwargs={"k": 20}),
    )
    sync = retriever.invoke(queries[1][1])
    got = await retriever.ainvoke(queries[1][1])
    assert [d.id for d in got] == [d.id for d in sync]
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(
        [d.metadata["relevance_score"] for d in sync], abs=1e-6
    )


@pytest.mark.integration
async def test_lcel_chain_sync_and_async(lc_store, shared_rr: Reranker, scifact_slice) -> None:  # type: ignore[no-untyped-def]
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    queries, _ = scifact_slice
    prompts: list[str] = []
    rerank = CrossRankCompressor(reranker=shared_rr, top_n=3).as_runnable()
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nClaim: {query}\nVerdict:")

    def remember(value: Any) -> Any:
        prompts.append(value.to_string())
        return value

    chain = (
        {"documents": lc_store.as_retriever(search_kwargs={"k": 20}), "query": RunnablePassthrough()}
        | RunnablePassthrough.assign(context=rerank | RunnableLambda(lambda ds: "\n".join(d.page_content for d in ds)))
        | prompt
        | RunnableLambda(remember)
        | FakeListChatModel(responses=["SUPPORTED", "SUPPORTED"])
        | StrOutputParser()
    )
    q = queries[2][1]
    assert chain.invoke(q) == "SUPPORTED"
    assert await chain.ainvoke(q) == "SUPPORTED"
    top = CrossRankCompressor(reranker=shared_rr, top_n=3).compress_documents(
        lc_store.as_retriever(search_kwargs={"k": 20}).invoke(q), q
    )
    assert top[0].page_content in prompts[0] and prompts[0] == prompts[1]


@pytest.mark.integration
def test_reranked_context_is_more_relevant(lc_store, shared_rr: Reranker, scifact_slice, scifact) -> None:  # type: ignore[no-untyped-def]
    """Over 60 SciFact claims (dense top-20), the 5 documents reaching the LLM are more often relevant."""
    queries, _ = scifact_slice
    comp = CrossRankCompressor(reranker=shared_rr, top_n=5)
    base = lc_store.as_retriever(search_kwargs={"k": 20})
    top1_before = top1_after = hits_before = hits_after = 0
    for qid, text in queries:
        docs = base.invoke(text)
        rel = scifact.qrels[qid]
        after = comp.compress_documents(docs, text)
        hits_before += sum(1 for d in docs[:5] if rel.get(d.id, 0) > 0)
        hits_after += sum(1 for d in after if rel.get(d.id, 0) > 0)
        top1_before += rel.get(docs[0].id, 0) > 0
        top1_after += rel.get(after[0].id, 0) > 0
    assert hits_after > hits_before, (hits_before, hits_after)
    assert top1_after >= top1_before + 3, (top1_before, top1_after)


def test_the_lcel_step_refuses_a_non_dict_input(tiny: Reranker) -> None:
    step = CrossRankCompressor(reranker=tiny).as_runnable()
    with pytest.raises(InvalidDocumentTypeError, match="takes a dict with 'documents' and 'query' keys, got list"):
        step.invoke([Document(page_content="x")])  # type: ignore[arg-type]
