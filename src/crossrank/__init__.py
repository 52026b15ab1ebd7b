"""crossrank: cross-encoder reranking between retrieval and the LLM.

The core is :class:`Reranker`; the Chroma two-stage pipeline, evaluation and CLI build on it, and
the LangChain / LlamaIndex adapters are thin wrappers around it.
"""

from __future__ import annotations

from crossrank.errors import (
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
from crossrank.model_files import DEFAULT_MODEL
from crossrank.reranker import Reranker
from crossrank.results import Candidate, Filtered, Ranked, RankedResults, RerankStats
from crossrank.scoring.engine import clear_engines

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
