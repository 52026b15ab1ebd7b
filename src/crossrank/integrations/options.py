"""The options and the scoring calls both framework adapters share."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from crossrank.inputs import check_output_options
from crossrank.model_files import default_model
from crossrank.reranker import Reranker
from crossrank.results import Candidate, RankedResults


class RerankOptions(BaseModel):
    """Pydantic fields and calls shared by ``CrossRankCompressor`` and ``CrossRankRerank``.

    Pass ``reranker=`` to share one loaded model between components; the adapter's own
    ``top_n`` / ``threshold`` / ``normalize`` still apply to its calls.
    """

    model: str = Field(
        default_factory=default_model,
        description="Hugging Face id or local directory of the reranker "
        "(default: $CROSSRANK_MODEL, else ms-marco-MiniLM-L6-v2).",
    )
    top_n: int | None = Field(default=5, description="How many results to keep (None keeps all).")
    threshold: float | None = Field(
        default=None, description="Drop results scoring below this, on the normalize scale."
    )
    normalize: str = Field(default="none", description="Score scale: none, sigmoid, softmax or minmax.")
    reranker_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra options for crossrank.Reranker.")
    _reranker: Reranker = PrivateAttr()

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        if reranker is not None and "model" not in data:
            data["model"] = reranker.model_name
        super().__init__(**data)
        check_output_options(self.top_n, self.threshold, self.normalize)
        self._reranker = reranker or Reranker(self.model, normalize=self.normalize, **self.reranker_kwargs)

    @property
    def reranker(self) -> Reranker:
        """The core reranker this adapter scores with."""
        return self._reranker

    def _rerank(self, query: str, candidates: Sequence[Candidate]) -> RankedResults:
        return self._reranker.rerank(
            query, candidates, top_n=self.top_n, threshold=self.threshold, normalize=self.normalize
        )

    async def _arerank(self, query: str, candidates: Sequence[Candidate]) -> RankedResults:
        return await self._reranker.arerank(
            query, candidates, top_n=self.top_n, threshold=self.threshold, normalize=self.normalize
        )

    def _report(self, query: str, candidates: int, results: RankedResults, started: float) -> dict[str, Any]:
        """What one call did, for the framework's callbacks / instrumentation."""
        return {
            "query": query,
            "candidates": candidates,
            "top_n": self.top_n,
            "returned": len(results),
            "model": self._reranker.model_name,
            "backend": self._reranker.backend_name,
            "seconds": time.perf_counter() - started,
            "scores": results.scores,
            "filtered": len(results.filtered),
            "stats": asdict(results.stats),
        }
