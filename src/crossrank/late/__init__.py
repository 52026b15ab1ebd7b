"""Late interaction (ColBERT-style): a multi-vector scorer, its vector store beside Chroma, and indexing.

* :func:`load_multi_vector_model` loads a sentence-transformers ``MultiVectorEncoder``, PyLate or
  Stanford ColBERT folder (shared process-wide);
* :class:`LateInteractionScorer` is a :class:`~crossrank.scoring.Scorer`: ``Reranker(scorer)`` and
  ``Cascade([(scorer, 100), (Reranker(cross_encoder), 30)])`` take it like any other;
* :func:`maxsim` scores one query's token vectors against many documents', vectorised;
* :class:`LateVectorStore` keeps every chunk's token vectors on disk beside its Chroma collection,
  and :func:`sync_store` brings it in step with the collection.

A core-level area (like ``remote``): it imports only the core; ``retrieval``, ``server``, ``training``
and ``cli`` build on it.
"""

from crossrank.late.errors import (
    LateModelMismatchError,
    LateStoreChangedError,
    LateStoreError,
    LateStoreOutOfSyncError,
)
from crossrank.late.indexer import SyncReport, sync_store
from crossrank.late.maxsim import Packed, maxsim, pack, quantize_int8, to_fp16
from crossrank.late.model import (
    ModelRecord,
    MultiVectorModel,
    folder_fingerprint,
    is_multi_vector_folder,
    load_multi_vector_model,
)
from crossrank.late.scorer import LateInteractionScorer
from crossrank.late.store import LateVectorStore, store_path, text_hash

__all__ = [
    "LateInteractionScorer",
    "LateModelMismatchError",
    "LateStoreChangedError",
    "LateStoreError",
    "LateStoreOutOfSyncError",
    "LateVectorStore",
    "ModelRecord",
    "MultiVectorModel",
    "Packed",
    "SyncReport",
    "folder_fingerprint",
    "is_multi_vector_folder",
    "load_multi_vector_model",
    "maxsim",
    "pack",
    "quantize_int8",
    "store_path",
    "sync_store",
    "text_hash",
    "to_fp16",
]
