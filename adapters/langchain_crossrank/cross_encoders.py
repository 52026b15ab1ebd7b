"""``CrossRankCrossEncoder``: crossrank behind LangChain's ``BaseCrossEncoder`` interface.

Lets crossrank plug into LangChain's own ``CrossEncoderReranker`` unchanged.
"""

from __future__ import annotations

from typing import Any

from crossrank import InvalidDocumentTypeError, Reranker
from crossrank.loading import DEFAULT_MODEL

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
        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(text_pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidDocumentTypeError(f"text_pairs[{i}] must be a (query, document) pair, got {pair!r}")
            groups.setdefault(pair[0], []).append(i)
        out = [0.0] * len(text_pairs)
        for query, idx in groups.items():
            for i, s in zip(idx, self.reranker.score(query, [text_pairs[i][1] for i in idx])):
                out[i] = s
        return out
