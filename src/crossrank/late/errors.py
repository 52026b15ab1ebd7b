"""Errors of the late-interaction area: all :class:`~crossrank.errors.VectorStoreError`, so all ``CrossrankError``."""

from __future__ import annotations

from crossrank.errors import VectorStoreError


class LateStoreError(VectorStoreError):
    """The late-interaction vector store cannot be read or written (files missing, locked, corrupt)."""


class LateModelMismatchError(LateStoreError, ValueError):
    """The store's vectors were made by another model (or precision, or token pooling) than the one asked for."""


class LateStoreChangedError(LateModelMismatchError):
    """The store was rebuilt (emptied, or bound to a model again) since this handle read its model record.

    Its vectors may come from another model, precision or pooling than the query encoder a process
    loaded for it: reopen the store (restart the server) with the model it now records.
    """


class LateStoreOutOfSyncError(LateStoreError):
    """The store disagrees with its Chroma collection: ids missing or extra, or an indexing run that never finished."""
