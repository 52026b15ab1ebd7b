"""crossrank: cross-encoder reranking between retrieval and the LLM.

The core is :class:`Reranker`; the Chroma two-stage pipeline, evaluation and CLI build on it, and
the LangChain / LlamaIndex adapters are thin wrappers around it.
"""

from __future__ import annotations

from .engine import clear_engines
from .errors import (
    BackendUnavailableError,
    CollectionNotFoundError,
    CrossrankError,
    DatasetError,
    ExportError,
    InvalidArgumentError,
    InvalidDocumentError,
    InvalidDocumentTypeError,
    InvalidQueryError,
    InvalidQueryTypeError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedModelError,
    VectorStoreError,
)
from .loading import DEFAULT_MODEL
from .reranker import Reranker
from .types import Candidate, Filtered, Ranked, RankedResults, RerankStats

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "BackendUnavailableError",
    "Candidate",
    "CollectionNotFoundError",
    "CrossrankError",
    "DatasetError",
    "ExportError",
    "Filtered",
    "InvalidArgumentError",
    "InvalidDocumentError",
    "InvalidDocumentTypeError",
    "InvalidQueryError",
    "InvalidQueryTypeError",
    "ModelLoadError",
    "ModelNotFoundError",
    "Ranked",
    "RankedResults",
    "RerankStats",
    "Reranker",
    "UnsupportedModelError",
    "VectorStoreError",
    "__version__",
    "clear_engines",
]
