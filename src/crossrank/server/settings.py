"""The server's settings: who may call, how much one request may ask for, and which model names it answers to.

Kept apart from the app so the CLI, Ray Serve and tests build the same settings the same way, and
so every limit has one default, one check and one place in ``/info``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import PurePath, PureWindowsPath

from crossrank.errors import InvalidArgumentError

# What Infinity's own client sends when the caller names no model.
UNSPECIFIED_MODEL_NAMES = frozenset({"", "default/not-specified"})


@dataclass(frozen=True)
class ServerSettings:
    """Limits and access rules of one crossrank server.

    ``served_model_names``: the names a request's ``model`` field may carry (the first is reported
    as the model in every response; build them with :func:`model_names`, which never puts a
    filesystem path there). A request naming anything else gets 404 unless ``ignore_model_field``
    is set; a request can never make the server load a model or read a path. ``api_key``: when
    set, every route but ``/health`` (and the docs) needs ``Authorization: Bearer <key>``.
    ``access_log``: one log line per request (see :mod:`crossrank.server.access`); ``log_format``:
    ``text`` or ``json`` (one JSON object per line), how ``crossrank serve`` writes its log.
    """

    served_model_names: tuple[str, ...] = ("crossrank",)
    ignore_model_field: bool = False
    api_key: str | None = None
    max_documents: int = 10_000
    max_body_bytes: int = 4 * 2**20
    max_concurrent: int = 128
    request_timeout_s: float = 60.0
    retry_after_s: int = 1
    docs: bool = True
    extra_labels: dict[str, str] = field(default_factory=dict)
    access_log: bool = True
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.served_model_names or not all(isinstance(n, str) and n for n in self.served_model_names):
            raise InvalidArgumentError("served_model_names must name at least one non-empty model name")
        for name in ("max_documents", "max_body_bytes", "max_concurrent", "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.request_timeout_s, (int, float)) or self.request_timeout_s <= 0:
            raise InvalidArgumentError(f"request_timeout_s must be a number > 0, got {self.request_timeout_s!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidArgumentError("api_key is empty: pass a real key, or None to serve without one")
        if self.log_format not in ("text", "json"):
            raise InvalidArgumentError(f"log_format must be 'text' or 'json', got {self.log_format!r}")

    @property
    def model_name(self) -> str:
        """The name the server reports as its model."""
        return self.served_model_names[0]

    def accepts_model(self, requested: str | None) -> bool:
        """Whether a request's ``model`` field names the served model (absent or Infinity's default always do)."""
        if self.ignore_model_field or requested is None or requested in UNSPECIFIED_MODEL_NAMES:
            return True
        return requested in self.served_model_names


def served_name(model: str | os.PathLike[str]) -> str:
    """The name a model is served under by default: a Hub id as given, a local folder's own name.

    Never a filesystem path: ``/srv/models/my-reranker`` is served as ``my-reranker``, and a folder
    in the Hugging Face cache (``.../models--BAAI--bge-reranker-base/snapshots/<hash>``) as the
    Hub id it was downloaded from (``BAAI/bge-reranker-base``), as TEI and vLLM name such models.
    """
    spec = os.fspath(model)
    if "://" in spec:  # a rerank server's URL: its last path part, never the host or credentials
        tail = spec.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return tail if tail and "@" not in tail and ":" not in tail else "crossrank"
    trimmed = spec.rstrip("/\\")
    path = PureWindowsPath(trimmed) if "\\" in trimmed else PurePath(trimmed)
    for part in reversed(path.parts):
        if part.startswith("models--") and "--" in part[len("models--") :]:
            return part[len("models--") :].replace("--", "/")
    if _is_local(spec):
        return path.name or "crossrank"
    return spec


def _is_local(spec: str) -> bool:
    """Whether ``spec`` names a local path rather than a Hub id (``org/name``)."""
    if spec.startswith(("/", "\\", ".", "~")) or (len(spec) > 1 and spec[1] == ":"):
        return True
    return os.path.exists(spec)


def model_names(model: str | os.PathLike[str], extra: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The names a model is served under: the ones given first, then :func:`served_name` (and a Hub id's last part).

    ``../models/my-reranker`` is served as ``my-reranker`` (its path is never a name, so no
    response or error can show where the server keeps its files, and no request can probe for
    paths); a Hub id ``org/name`` answers to itself and ``name``. The first name is reported as
    the model, so ``--served-model-name`` picks it, as with vLLM and Infinity.
    """
    names = [n for n in extra if n]
    name = served_name(model)
    names.append(name)
    tail = name.rsplit("/", 1)[-1]
    if tail:
        names.append(tail)
    return tuple(dict.fromkeys(names))
