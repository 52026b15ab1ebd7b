"""Errors of the remote backend: one per thing the caller can do something about.

Every one is a :class:`~crossrank.errors.CrossrankError` and carries the URL and, where there was a
response, its status and the server's own message, so a log line says which server refused what.
"""

from __future__ import annotations

from crossrank.errors import CrossrankError, InvalidArgumentError


class RemoteError(CrossrankError, RuntimeError):
    """A rerank server or API could not score the request."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.detail = detail


class RemoteUnavailableError(RemoteError, ConnectionError):
    """The server could not be reached (refused, reset, DNS, TLS) or stopped answering, after the retries."""


class RemoteTimeoutError(RemoteUnavailableError, TimeoutError):
    """No answer before the call's deadline (``timeout=``), retries included."""


class RemoteAuthError(RemoteError, PermissionError):
    """401/403: the API key is missing, wrong, or not allowed to use this model."""


class RemoteNotFoundError(RemoteError, LookupError):
    """404: no rerank route at this URL for the chosen ``api=``, or the server does not serve that model."""


class RemoteRequestError(RemoteError, InvalidArgumentError):
    """400/413/422: the server rejected the request itself (too large, a field it does not accept)."""


class RemoteOverloadedError(RemoteError):
    """429: the server kept refusing for load until the retries or the deadline ran out."""


class RemoteServerError(RemoteError):
    """5xx: the server failed (after the retries), or answered with something that is not a rerank response."""
