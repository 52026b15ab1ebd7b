"""``CrossRankCompressor``: rerank retrieved Documents with crossrank, inside any LangChain pipeline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from crossrank import Candidate, Cascade, InvalidDocumentTypeError, RankedResults, Reranker
from crossrank.integrations import RerankOptions, copy_metadata
from crossrank.integrations.candidates import to_candidates

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.runnables import Runnable, RunnableLambda
    from langchain_core.runnables.config import (
        ensure_config,
        get_async_callback_manager_for_config,
        get_callback_manager_for_config,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("langchain-core is not installed; install it with: pip install 'crossrank[langchain]'") from exc
from pydantic import ConfigDict

EVENT_NAME = "crossrank_rerank"


def _candidates(documents: Sequence[Document]) -> list[Candidate]:
    return to_candidates(
        documents,
        Document,
        lambda d: Candidate(text=d.page_content, id=d.id, metadata=d.metadata),
        takes="CrossRankCompressor takes langchain_core Documents",
        other="for LlamaIndex nodes use llama_index.postprocessor.crossrank.CrossRankRerank",
    )


def _to_documents(documents: Sequence[Document], results: RankedResults) -> list[Document]:
    out = []
    for r in results:
        extra: dict[str, Any] = {"relevance_score": r.score, "retrieval_rank": r.first_stage_rank}
        if r.stages:  # a cascade ran (llm=): every stage's score and rank
            extra["rerank_stages"] = [{"name": s.name, "score": s.score, "rank": s.rank} for s in r.stages]
        src = documents[r.index]
        out.append(Document(page_content=src.page_content, metadata=copy_metadata(src.metadata, **extra), id=src.id))
    return out


def _config(callbacks: Callbacks | None) -> Any:
    return ensure_config({"callbacks": callbacks} if callbacks else None)


class CrossRankCompressor(RerankOptions, BaseDocumentCompressor):
    """Rerank Documents with a cross-encoder; returns new Documents, best first.

    Each returned Document is a copy with the original ``id`` and metadata, plus
    ``relevance_score`` (float, on the ``normalize`` scale) and ``retrieval_rank`` (1-based position
    in the input). Options: ``model``, ``top_n``, ``threshold``, ``normalize``, ``reranker_kwargs``,
    and ``reranker=`` to share one loaded model between components. Each call fires the custom
    callback event ``crossrank_rerank`` with the scores, counts and timings.

    ``llm=`` (a LangChain chat model, or an OpenAI-compatible URL) adds an LLM stage: the
    cross-encoder ranks every Document, then the LLM reorders its top ``llm_top_k`` (``llm_mode``
    ``listwise`` or ``pointwise``, ``llm_kwargs`` for budget and prompts). ``relevance_score`` is
    then the score of the last stage that ranked the Document, and ``rerank_stages`` lists each
    stage's name, score and rank. ``reranker=`` also takes a :class:`~crossrank.Cascade`, e.g. a
    late-interaction stage then the cross-encoder (Documents from a crossrank-indexed Chroma use
    their stored token vectors, found by their text).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    def __init__(self, *, reranker: Reranker | Cascade | None = None, **data: Any) -> None:
        super().__init__(reranker=reranker, **data)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; copies, best first, at most ``top_n``."""
        t = time.perf_counter()
        results = self._rerank(query, _candidates(documents))
        manager = get_callback_manager_for_config(_config(callbacks))
        if manager.handlers:
            data = self._report(query, len(documents), results, t)
            manager.on_custom_event(EVENT_NAME, data, run_id=manager.parent_run_id or uuid.uuid4())
        return _to_documents(documents, results)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`: concurrent calls share forward passes."""
        t = time.perf_counter()
        results = await self._arerank(query, _candidates(documents))
        manager = get_async_callback_manager_for_config(_config(callbacks))
        if manager.handlers:
            data = self._report(query, len(documents), results, t)
            await manager.on_custom_event(EVENT_NAME, data, run_id=manager.parent_run_id or uuid.uuid4())
        return _to_documents(documents, results)

    def as_runnable(self) -> Runnable[dict[str, Any], list[Document]]:
        """An LCEL step taking ``{"documents": [...], "query": "..."}`` and returning reranked Documents."""

        def _args(inputs: dict[str, Any]) -> tuple[Sequence[Document], str]:
            if not isinstance(inputs, Mapping):
                raise InvalidDocumentTypeError(
                    f"the rerank step takes a dict with 'documents' and 'query' keys, got {type(inputs).__name__}; "
                    "e.g. {'documents': retriever, 'query': RunnablePassthrough()} | compressor.as_runnable()"
                )
            docs = inputs.get("documents", inputs.get("docs", inputs.get("context")))
            query = inputs.get("query", inputs.get("question"))
            if docs is None or query is None:
                raise InvalidDocumentTypeError(
                    "the rerank step needs a dict with 'documents' and 'query' keys, e.g. "
                    "{'documents': retriever, 'query': RunnablePassthrough()} | compressor.as_runnable()"
                )
            return docs, query

        def run(inputs: dict[str, Any], config: Any = None) -> list[Document]:
            docs, query = _args(inputs)
            return list(self.compress_documents(docs, query, callbacks=(config or {}).get("callbacks")))

        async def arun(inputs: dict[str, Any], config: Any = None) -> list[Document]:
            docs, query = _args(inputs)
            return list(await self.acompress_documents(docs, query, callbacks=(config or {}).get("callbacks")))

        return RunnableLambda(run, afunc=arun, name="CrossRankRerank")
