"""RAG retrieval with LangChain: Chroma recalls 20 passages, crossrank keeps the best 3 for the LLM.

Runs offline with local models:

    CROSSRANK_MODEL=../shared/models/crossrank-minilm-l6-scifact python examples/langchain_rag.py

Options: --model / --embedder (or CROSSRANK_MODEL / CROSSRANK_EMBEDDER), --db (Chroma folder),
--query. The embedder defaults to all-MiniLM-L6-v2 (the bundled offline copy when installed).
"""

from __future__ import annotations

import argparse
import tempfile

import chromadb
from langchain_chroma import Chroma
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_huggingface import HuggingFaceEmbeddings

from crossrank import Reranker, default_model, demo_corpus
from crossrank.retrieval import resolve_embedder
from langchain_crossrank import CrossRankCompressor


def main() -> None:
    """Index the demo corpus in Chroma, retrieve, rerank, and print before and after."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=default_model())
    p.add_argument("--embedder", default=None, help="default: $CROSSRANK_EMBEDDER or all-MiniLM-L6-v2")
    p.add_argument("--db", default=None, help="Chroma folder (default: a temporary one)")
    p.add_argument("--query", default="Does aspirin prevent heart attacks in healthy older people?")
    args = p.parse_args()

    # 1. A real Chroma collection over the sample corpus that ships with crossrank.
    rows = demo_corpus()
    docs = [Document(page_content=r["text"], metadata=r["metadata"], id=r["_id"]) for r in rows]
    embeddings = HuggingFaceEmbeddings(model_name=resolve_embedder(args.embedder), model_kwargs={"device": "cpu"})
    client = chromadb.PersistentClient(path=args.db or tempfile.mkdtemp(prefix="crossrank-lc-"))
    store = Chroma(
        client=client,
        collection_name="lc-example",
        embedding_function=embeddings,
        collection_metadata={"hnsw:space": "cosine"},
    )
    if store._collection.count() != len(docs):
        store.add_documents(docs, ids=[d.id for d in docs])
    base = store.as_retriever(search_kwargs={"k": 20})

    # 2. The reranker: one loaded model, shared by every component that needs it.
    reranker = Reranker(args.model)
    compressor = CrossRankCompressor(reranker=reranker, top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)

    before = base.invoke(args.query)
    after = retriever.invoke(args.query)
    print(f"query: {args.query}\n\nretrieved by Chroma (top 5 of {len(before)}):")
    for i, d in enumerate(before[:5], 1):
        print(f"  {i}. {d.page_content[:90]}")
    print(f"\nreranked by {reranker.model_name} (top 3 kept for the LLM):")
    for i, d in enumerate(after, 1):
        print(
            f"  {i}. [{d.metadata['relevance_score']:+.2f}, was #{d.metadata['retrieval_rank']}] {d.page_content[:80]}"
        )

    # 3. The same step inside an LCEL chain, ending in a (fake) chat model.
    prompt = ChatPromptTemplate.from_template("Answer from the context.\n\nContext:\n{context}\n\nQuestion: {query}")
    chain = (
        {"documents": base, "query": RunnablePassthrough()}
        | RunnablePassthrough.assign(
            context=compressor.as_runnable() | (lambda ds: "\n".join(d.page_content for d in ds))
        )
        | prompt
        | FakeListChatModel(responses=["(a real LLM would answer here from the 3 reranked passages)"])
        | StrOutputParser()
    )
    print(f"\nLCEL chain answer: {chain.invoke(args.query)}")


if __name__ == "__main__":
    main()
