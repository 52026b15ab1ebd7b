"""Errors of the late-interaction area: all :class:`~crossrank.errors.VectorStoreError`, so all ``CrossrankError``."""

from __future__ import annotations

from crossrank.errors import VectorStoreError


class LateStoreError(VectorStoreError):
    """The late-interaction vector store cannot be read or written (files missing, locked, corrupt)."""


class LateModelMismatchError(LateStoreError, ValueError):
    """The store's vectors were made by another model (or precision, or token pooling) than the one asked for."""


class LateStoreOutOfSyncError(LateStoreError):
    """The store disagrees with its Chroma collection: ids missing or extra, or an indexing run that never finished."""
