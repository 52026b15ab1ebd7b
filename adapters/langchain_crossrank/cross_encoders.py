"""``CrossRankCrossEncoder``: crossrank behind LangChain's ``BaseCrossEncoder`` interface.

Lets crossrank plug into LangChain's own ``CrossEncoderReranker`` unchanged.
"""

from __future__ import annotations

from typing import Any

from crossrank import Reranker
from crossrank.model_files import DEFAULT_MODEL

try:
    from langchain_core.cross_encoders import BaseCrossEncoder
except ImportError:  # older langchain-core: the interface lived in langchain-community
    from abc import ABC, abstractmethod

    class BaseCrossEncoder(ABC):  # type: ignore[no-redef]
        @abstractmethod
        def score(self, text_pairs: list[tuple[str, str]]) -> list[float]: ...


class CrossRankCrossEncoder(BaseCrossEncoder):
    """Scores (query, document) pairs with crossrank; pairs may mix queries, results keep input order."""

    def __init__(self, model: str = DEFAULT_MODEL, *, reranker: Reranker | None = None, **kwargs: Any) -> None:
        self.reranker = reranker or Reranker(model, **kwargs)

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        return self.reranker.score_pairs(text_pairs)
