"""One error family, so callers can catch ``CrossrankError`` and still tell causes apart.

Each class also subclasses the builtin that fits (``ValueError`` for bad values, ``TypeError`` for
wrong types, ``OSError``-free on purpose: a missing model is a configuration problem, not an I/O
accident), so code written against plain Python exceptions keeps working.
"""

from __future__ import annotations


class CrossrankError(Exception):
    """Base of every error crossrank raises on purpose."""


class InvalidQueryError(CrossrankError, ValueError):
    """The query is empty, blank or not a string."""


class InvalidQueryTypeError(InvalidQueryError, TypeError):
    """The query is not a string."""


class InvalidDocumentError(CrossrankError, ValueError):
    """A candidate document cannot be scored (missing text, wrong type)."""


class InvalidDocumentTypeError(InvalidDocumentError, TypeError):
    """A candidate is ``None`` or of a type that carries no text."""


class InvalidArgumentError(CrossrankError, ValueError):
    """An option is out of range or unknown (``top_n``, ``threshold``, ``normalize`` ...)."""


class UnknownOptionError(InvalidArgumentError, TypeError):
    """A keyword option the call does not take (a ``TypeError``, as Python's own, with a suggestion)."""


class ModelNotFoundError(CrossrankError, ValueError):
    """The model could not be located locally or on the Hub."""


class ModelLoadError(CrossrankError, RuntimeError):
    """The model files exist but could not be loaded (truncated, corrupt, incompatible)."""


class UnsupportedModelError(CrossrankError, ValueError):
    """The model is not a usable cross-encoder (e.g. a head with more than two labels)."""


class BackendUnavailableError(CrossrankError, ImportError):
    """A backend or optional dependency is not installed."""


class ExportError(CrossrankError, RuntimeError):
    """Exporting or quantizing a model to ONNX failed."""


class NotExportedError(ExportError):
    """An exported model folder (``crossrank export``) lacks the backend or precision asked for.

    Such a folder never builds anything: re-export with that variant, or let ``backend="auto"``
    choose among what the folder holds.
    """


class VectorStoreError(CrossrankError, RuntimeError):
    """Chroma failed: server unreachable, collection missing, timeout."""


class CollectionNotFoundError(VectorStoreError, LookupError):
    """The named collection does not exist in the Chroma database."""


class EmbedderMismatchError(VectorStoreError, ValueError):
    """A collection's vectors were made by another embedder than the one about to query it."""


class DatasetError(CrossrankError, ValueError):
    """An evaluation dataset or input path is missing or malformed."""


def missing_extra(package: str, extra: str) -> ImportError:
    """Build the ImportError raised when an optional dependency is absent."""
    return BackendUnavailableError(f"{package} is not installed; install it with: pip install 'crossrank[{extra}]'")
