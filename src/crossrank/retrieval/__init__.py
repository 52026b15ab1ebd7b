"""Retrieval: the first stage and the two-stage pipeline around the reranking core.

Chroma access (``chroma``), the bi-encoder (``embeddings``), BM25 (``bm25``), the one
``first_stage()`` that fuses them (``first_stage``), file indexing (``indexing``), the two-stage
``Pipeline`` (``pipeline``) and BEIR datasets with IR metrics (``beir``). Imports are lazy, so
``import crossrank.retrieval`` loads neither chromadb nor bm25s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossrank.retrieval.pipeline import Hit, Pipeline, SearchResults

__all__ = ["Hit", "Pipeline", "SearchResults"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crossrank.retrieval import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'crossrank.retrieval' has no attribute {name!r}")
