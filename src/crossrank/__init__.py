"""crossrank: cross-encoder reranking between retrieval and the LLM.

The core is :class:`Reranker` (options, validation and one ranking step) over a :class:`Scorer`
(:class:`LocalScorer` runs a Hugging Face reranker in-process). The Chroma two-stage pipeline
(``crossrank.retrieval``), the CLI (``crossrank.cli``) and the LangChain / LlamaIndex adapters
(through ``crossrank.integrations``) build on it.
"""

from __future__ import annotations

from crossrank.cascade import Cascade
from crossrank.demo_data import corpus as demo_corpus
from crossrank.demo_data import queries as demo_queries
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
    UnknownOptionError,
    UnsupportedModelError,
    VectorStoreError,
)
from crossrank.model_files import DEFAULT_MODEL, default_model
from crossrank.reranker import Reranker
from crossrank.results import Candidate, Filtered, Ranked, RankedResults, RerankStats, StageScore
from crossrank.scoring import LocalScorer, Scored, Scorer, ScorerInfo, ScoreSettings
from crossrank.scoring.engine import clear_engines

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "BackendUnavailableError",
    "Candidate",
    "Cascade",
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
    "LocalScorer",
    "ModelLoadError",
    "ModelNotFoundError",
    "Ranked",
    "RankedResults",
    "RerankStats",
    "Reranker",
    "ScoreSettings",
    "Scored",
    "Scorer",
    "ScorerInfo",
    "StageScore",
    "UnknownOptionError",
    "UnsupportedModelError",
    "VectorStoreError",
    "__version__",
    "clear_engines",
    "default_model",
    "demo_corpus",
    "demo_queries",
]
