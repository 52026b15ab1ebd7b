"""``CrossRankCrossEncoder``: crossrank behind LangChain's ``BaseCrossEncoder`` interface.

Lets crossrank plug into LangChain's own ``CrossEncoderReranker`` unchanged.
"""

from __future__ import annotations

from typing import Any

from crossrank import Reranker

try:
    from langchain_core.cross_encoders import BaseCrossEncoder
except ImportError:  # older langchain-core: the interface lived in langchain-community
    from abc import ABC, abstractmethod

    class BaseCrossEncoder(ABC):  # type: ignore[no-redef]
        @abstractmethod
        def score(self, text_pairs: list[tuple[str, str]]) -> list[float]: ...


class CrossRankCrossEncoder(BaseCrossEncoder):
    """Scores (query, document) pairs with crossrank; pairs may mix queries, results keep input order.

    ``model`` defaults to ``$CROSSRANK_MODEL`` or ms-marco-MiniLM-L6-v2; ``reranker=`` shares a loaded one.
    """

    def __init__(self, model: str | None = None, *, reranker: Reranker | None = None, **kwargs: Any) -> None:
        self.reranker = reranker or Reranker(model, **kwargs)

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Raw scores (or the reranker's ``normalize`` scale) for each (query, document) pair."""
        return self.reranker.score_pairs(text_pairs)
