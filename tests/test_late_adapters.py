"""Both adapters with a late-interaction stage, in real LangChain and LlamaIndex pipelines over a real
Chroma collection that crossrank indexed with ``--late-interaction`` (tiny random models throughout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crossrank import Cascade, Reranker
from crossrank.late import LateInteractionScorer, LateVectorStore
from crossrank.late.testing import make_tiny_multi_vector
from crossrank.retrieval.pipeline import Pipeline

TOPICS = ["aspirin and the heart", "coffee and sleep", "python code", "gene and protein", "blood sugar and insulin"]
QUERY = "does aspirin help the heart?"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Chroma collection ``notes`` of 40 chunks, indexed by crossrank with a tiny multi-vector model."""
    from crossrank.training.testing import make_tiny_bi_encoder

    root = tmp_path_factory.mktemp("late-adapters")
    late, bi = make_tiny_multi_vector(root / "mv"), make_tiny_bi_encoder(root / "bi", layers=1)
    docs = root / "docs"
    docs.mkdir()
    rows = [{"_id": f"d{i}", "text": f"note {i}: {TOPICS[i % 5]}, with {TOPICS[(i + 1) % 5]}."} for i in range(40)]
    (docs / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    Pipeline("notes", db=root / "db", embedder=bi, late=late, create=True).index_paths([docs], progress=False)
    return {"db": root / "db", "late": late, "bi": bi}


def late_cascade(indexed: dict[str, Path], tiny: Reranker) -> tuple[Cascade, LateInteractionScorer]:
    store = LateVectorStore.for_collection(indexed["db"], "notes", readonly=True)
    scorer = LateInteractionScorer(indexed["late"], store=store)
    return Cascade([(scorer, None), (tiny, 4)]), scorer


def test_langchain_retriever_with_a_late_stage(indexed: dict[str, Path], tiny: Reranker) -> None:
    import chromadb
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_huggingface import HuggingFaceEmbeddings

    from langchain_crossrank import CrossRankCompressor

    class Events(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            self.seen.append(data)

    client = chromadb.PersistentClient(path=str(indexed["db"]))
    vectorstore = Chroma(
        client=client,
        collection_name="notes",
        embedding_function=HuggingFaceEmbeddings(model_name=str(indexed["bi"]), model_kwargs={"device": "cpu"}),
    )
    cascade, scorer = late_cascade(indexed, tiny)
    compressor = CrossRankCompressor(reranker=cascade, top_n=6)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=vectorstore.as_retriever(search_kwargs={"k": 15})
    )
    events = Events()
    docs = retriever.invoke(QUERY, config={"callbacks": [events]})
    retrieved = vectorstore.similarity_search(QUERY, k=15)

    assert scorer.totals == {"cached": 0, "stored": 15, "encoded": 0}, "every candidate's vectors came from the store"
    want = cascade.rerank(QUERY, [d.page_content for d in retrieved], top_n=6)
    assert [d.page_content for d in docs] == [r.text for r in want]
    assert [s["name"] for s in docs[0].metadata["rerank_stages"]] == ["late-interaction", "cross-encoder"]
    assert all(isinstance(d.metadata["relevance_score"], float) for d in docs)
    assert all("rerank_stages" not in d.metadata for d in retrieved), "the caller's Documents are untouched"
    stages = events.seen[-1]["stats"]["scorer"]["stages"]
    assert [s["name"] for s in stages] == ["late-interaction", "cross-encoder"]
    assert stages[0]["candidates"] == 15 and stages[1]["candidates"] == 4


def test_llama_index_query_engine_with_a_late_stage(indexed: dict[str, Path], tiny: Reranker) -> None:
    import chromadb
    from llama_index.core import VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from llama_index.postprocessor.crossrank import CrossRankRerank

    collection = chromadb.PersistentClient(path=str(indexed["db"])).get_collection("notes")
    index = VectorStoreIndex.from_vector_store(
        ChromaVectorStore(chroma_collection=collection),
        embed_model=HuggingFaceEmbedding(model_name=str(indexed["bi"]), device="cpu"),
    )
    cascade, scorer = late_cascade(indexed, tiny)
    pp = CrossRankRerank(reranker=cascade, top_n=6)
    retriever = index.as_retriever(similarity_top_k=15)
    engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[pp], llm=MockLLM())
    response = engine.query(QUERY)
    nodes = retriever.retrieve(QUERY)

    assert scorer.totals["stored"] == 15 and scorer.totals["encoded"] == 0
    want = cascade.rerank(QUERY, [n.node.get_content() for n in nodes], top_n=6)
    assert [n.node.get_content() for n in response.source_nodes] == [r.text for r in want]
    assert [n.score for n in response.source_nodes] == [r.score for r in want]
    assert {n.node.node_id for n in response.source_nodes} <= {n.node.node_id for n in nodes}


def test_pipeline_keeps_a_given_scorers_store_and_load_options(indexed: dict[str, Path], tmp_path: Path) -> None:
    """``Pipeline(late=scorer)`` ranks with that scorer's store and loads its model as that scorer does."""
    elsewhere = LateVectorStore(tmp_path / "elsewhere")
    given = LateInteractionScorer(indexed["late"], store=elsewhere, device="cpu")
    pipe = Pipeline("notes", db=indexed["db"], embedder=indexed["bi"], late=given, candidates=0)
    assert pipe.late is not None and pipe.late.store_path == elsewhere.path
    assert pipe.late.scorer.model is given.model  # device="cpu" kept: the same loaded copy
    assert len(pipe.search(QUERY, top_n=3).hits) == 3
