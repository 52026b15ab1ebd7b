"""``CrossRankCompressor``: rerank retrieved Documents with crossrank, inside any LangChain pipeline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from crossrank import Candidate, InvalidDocumentTypeError, RankedResults, Reranker
from crossrank.inputs import check_output_options
from crossrank.integrations.copying import copy_metadata
from crossrank.model_files import DEFAULT_MODEL

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
from pydantic import ConfigDict, Field, PrivateAttr

EVENT_NAME = "crossrank_rerank"


def _candidates(documents: Sequence[Document]) -> list[Candidate]:
    out = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise InvalidDocumentTypeError(
                f"CrossRankCompressor takes langchain_core Documents; item {i} is {type(doc).__name__} "
                "(for LlamaIndex nodes use llama_index.postprocessor.crossrank.CrossRankRerank)"
            )
        out.append(Candidate(text=doc.page_content, id=doc.id, metadata=doc.metadata))
    return out


def _to_documents(documents: Sequence[Document], results: RankedResults) -> list[Document]:
    out = []
    for r in results:
        src = documents[r.index]
        meta = copy_metadata(src.metadata)
        meta["relevance_score"] = r.score
        meta["retrieval_rank"] = r.first_stage_rank
        out.append(Document(page_content=src.page_content, metadata=meta, id=src.id))
    return out


class CrossRankCompressor(BaseDocumentCompressor):
    """Rerank Documents with a cross-encoder; returns new Documents, best first.

    Each returned Document is a copy with the original ``id`` and metadata, plus
    ``relevance_score`` (float, on the ``normalize`` scale) and ``retrieval_rank`` (1-based position
    in the input). Pass ``reranker=`` to share one loaded model between components.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str = Field(default=DEFAULT_MODEL, description="Hugging Face id or local directory of the cross-encoder.")
    top_n: int | None = Field(default=5, description="How many documents to keep (None keeps all).")
    threshold: float | None = Field(
        default=None, description="Drop documents scoring below this, on the normalize scale."
    )
    normalize: str = Field(default="none", description="Score scale: none, sigmoid, softmax or minmax.")
    reranker_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword options for crossrank.Reranker."
    )
    _reranker: Reranker = PrivateAttr()

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        if reranker is not None and "model" not in data:
            data["model"] = reranker.model_name
        super().__init__(**data)
        check_output_options(self.top_n, self.threshold, self.normalize)
        self._reranker = reranker or Reranker(self.model, normalize=self.normalize, **self.reranker_kwargs)

    @property
    def reranker(self) -> Reranker:
        return self._reranker

    def _event(self, query: str, n: int, results: RankedResults, seconds: float) -> dict[str, Any]:
        return {
            "query": query,
            "candidates": n,
            "top_n": self.top_n,
            "returned": len(results),
            "model": self._reranker.model_name,
            "backend": self._reranker.backend_name,
            "seconds": seconds,
            "scores": results.scores,
        }

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        t = time.perf_counter()
        results = self._reranker.rerank(
            query, _candidates(documents), top_n=self.top_n, threshold=self.threshold, normalize=self.normalize
        )
        manager = get_callback_manager_for_config(ensure_config({"callbacks": callbacks} if callbacks else None))
        if manager.handlers:
            data = self._event(query, len(documents), results, time.perf_counter() - t)
            manager.on_custom_event(EVENT_NAME, data, run_id=manager.parent_run_id or uuid.uuid4())
        return _to_documents(documents, results)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        t = time.perf_counter()
        results = await self._reranker.arerank(
            query, _candidates(documents), top_n=self.top_n, threshold=self.threshold, normalize=self.normalize
        )
        manager = get_async_callback_manager_for_config(ensure_config({"callbacks": callbacks} if callbacks else None))
        if manager.handlers:
            data = self._event(query, len(documents), results, time.perf_counter() - t)
            await manager.on_custom_event(EVENT_NAME, data, run_id=manager.parent_run_id or uuid.uuid4())
        return _to_documents(documents, results)

    def as_runnable(self) -> Runnable[dict[str, Any], list[Document]]:
        """An LCEL step taking ``{"documents": [...], "query": "..."}`` and returning reranked Documents."""

        def _args(inputs: dict[str, Any]) -> tuple[Sequence[Document], str]:
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
            cbs = (config or {}).get("callbacks")
            return list(self.compress_documents(docs, query, callbacks=cbs))

        async def arun(inputs: dict[str, Any], config: Any = None) -> list[Document]:
            docs, query = _args(inputs)
            cbs = (config or {}).get("callbacks")
            return list(await self.acompress_documents(docs, query, callbacks=cbs))

        return RunnableLambda(run, afunc=arun, name="CrossRankRerank")
