"""RAG with LlamaIndex: a Chroma-backed VectorStoreIndex recalls 20 nodes, crossrank keeps the best 3.

Runs offline with local models:

    CROSSRANK_MODEL=../shared/models/crossrank-minilm-l6-scifact python examples/llamaindex_rag.py

Options: --model / --embedder (or CROSSRANK_MODEL / CROSSRANK_EMBEDDER), --db (Chroma folder),
--query. The embedder defaults to all-MiniLM-L6-v2 (the bundled offline copy when installed).
"""

from __future__ import annotations

import argparse
import tempfile

import chromadb
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.vector_stores.chroma import ChromaVectorStore

from crossrank import Reranker, default_model, demo_corpus
from crossrank.retrieval import resolve_embedder
from llama_index.postprocessor.crossrank import CrossRankRerank


def main() -> None:
    """Index the demo corpus in Chroma, retrieve, rerank, and print before and after."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=default_model())
    p.add_argument("--embedder", default=None, help="default: $CROSSRANK_EMBEDDER or all-MiniLM-L6-v2")
    p.add_argument("--db", default=None, help="Chroma folder (default: a temporary one)")
    p.add_argument("--query", default="Is salt intake linked to high blood pressure?")
    args = p.parse_args()

    # 1. A real Chroma collection behind a LlamaIndex VectorStoreIndex.
    rows = demo_corpus()
    nodes = [TextNode(text=r["text"], id_=r["_id"], metadata=r["metadata"]) for r in rows]
    client = chromadb.PersistentClient(path=args.db or tempfile.mkdtemp(prefix="crossrank-li-"))
    collection = client.get_or_create_collection("li-example", metadata={"hnsw:space": "cosine"})
    embed = HuggingFaceEmbedding(model_name=resolve_embedder(args.embedder), device="cpu")
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    if collection.count() != len(nodes):
        index = VectorStoreIndex(nodes, storage_context=storage, embed_model=embed)
    else:
        index = VectorStoreIndex.from_vector_store(storage.vector_store, embed_model=embed)

    # 2. The reranker as a node postprocessor in an ordinary query engine (MockLLM: no API key needed).
    rerank = CrossRankRerank(reranker=Reranker(args.model), top_n=3, keep_retrieval_score=True)
    engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank], llm=MockLLM())

    retrieved = index.as_retriever(similarity_top_k=20).retrieve(args.query)
    response = engine.query(args.query)
    print(f"query: {args.query}\n\nretrieved by Chroma (top 5 of {len(retrieved)}, similarity):")
    for i, n in enumerate(retrieved[:5], 1):
        print(f"  {i}. [{n.score:.3f}] {n.node.get_content()[:85]}")
    print(f"\nreranked by {rerank.model} (top 3 sent to the LLM):")
    order = {n.node.node_id: i for i, n in enumerate(retrieved, 1)}
    for i, n in enumerate(response.source_nodes, 1):
        print(f"  {i}. [{n.score:+.2f}, was #{order[n.node.node_id]}] {n.node.get_content()[:80]}")


if __name__ == "__main__":
    main()
