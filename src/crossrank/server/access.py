"""The access log and request ids: one line per request, as text or JSON lines, and ``X-Request-ID``.

Every HTTP request gets a request id: the client's ``X-Request-ID`` when it sends a usable one
(1-200 printable ASCII characters, no spaces), else a new one (32 hex digits). The id goes back in
the ``X-Request-ID`` response header of every answer, errors included, is the ``id`` of Cohere and
Infinity responses, and is in the request's access log line, so a client's report of one request
finds its line in the server's log.

The access log is the ``crossrank.server.access`` logger: one record per request with the method,
route, status, latency in milliseconds, documents, tokens scored, request id and client address
(``/health`` and ``/metrics`` at ``debug``, everything else at ``info``). :func:`configure_logging`
gives the crossrank and uvicorn loggers one handler that writes plain text or, with ``json``, one
JSON object per line (the access fields as top-level keys), which is what ``crossrank serve`` uses.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass
from typing import IO, Any

ACCESS_LOGGER = "crossrank.server.access"
REQUEST_ID_HEADER = "x-request-id"
LOG_FORMATS = ("text", "json")
QUIET_PATHS = frozenset({"/health", "/metrics"})  # probed every few seconds: logged at debug
_USABLE_ID = re.compile(r"[\x21-\x7e]{1,200}")
_FIELD = "crossrank_access"  # the LogRecord attribute holding an access record's fields

access_log = logging.getLogger(ACCESS_LOGGER)


def request_id(sent: str | None) -> str:
    """The client's request id when usable (kept as sent), else a new one."""
    if sent is not None and _USABLE_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


@dataclass
class RequestInfo:
    """What one request's access line reports beyond what the ASGI guard sees: set by the route."""

    id: str
    documents: int | None = None
    tokens: int | None = None


def log_access(
    info: RequestInfo, *, method: str, path: str, status: int, latency_ms: float, client: str | None
) -> None:
    """Write one request's access line (a no-op when the logger is off for that level)."""
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "method": method,
        "route": path,
        "status": status,
        "latency_ms": round(latency_ms, 2),
        "documents": info.documents,
        "tokens": info.tokens,
        "request_id": info.id,
        "client": client,
    }
    text = f'{client or "-"} "{method} {path}" {status} {latency_ms:.1f}ms'
    if info.documents is not None:
        text += f" documents={info.documents}"
    if info.tokens is not None:
        text += f" tokens={info.tokens}"
    text += f" request_id={info.id}"
    access_log.log(level, text, extra={_FIELD: fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger and either the access fields or the message."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, _FIELD, None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def make_handler(log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) writing ``text`` or ``json`` lines."""
    if log_format not in LOG_FORMATS:
        from crossrank.errors import InvalidArgumentError

        raise InvalidArgumentError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


SERVER_LOGGERS = ("crossrank", "uvicorn", "uvicorn.error", "py.warnings")


def configure_logging(
    level: str = "info", log_format: str = "text", *, access: bool = True, stream: IO[str] | None = None
) -> logging.Handler:
    """Send the crossrank and uvicorn loggers (and Python warnings) to one handler at ``level``.

    Returns the handler. ``access=False`` turns the access log off. Replaces a handler this
    function installed earlier (calling it twice never doubles lines) and leaves every other
    logger alone.
    """
    handler = make_handler(log_format, stream)
    logging.captureWarnings(True)
    handler._crossrank = True  # type: ignore[attr-defined]
    numeric = logging.getLevelName(level.upper())
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_crossrank", False)]:
            logger.removeHandler(old)
        if name == "uvicorn.error":
            logger.propagate = True  # to "uvicorn", which has the handler
            continue
        logger.addHandler(handler)
        logger.setLevel(numeric)
        logger.propagate = False
    access_log.disabled = not access
    return handler
