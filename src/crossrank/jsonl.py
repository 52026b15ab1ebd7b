"""The one JSON-lines reader: every ``*.jsonl`` crossrank reads goes through here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crossrank.errors import DatasetError


def json_object(
    text: str, where: str, error: type[Exception], not_object: str = "is not a JSON object"
) -> dict[str, Any]:
    """``text`` as a JSON object, else ``error``: "<where> is not valid JSON (why)" or "<where> <not_object>"."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise error(f"{where} {not_object}")
    return value


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a bad line raises ``DatasetError`` naming it."""
    n = 0
    try:
        with Path(path).open(encoding="utf-8-sig") as f:  # "-sig": a byte-order mark is not part of line 1
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, json_object(line, f"{path}:{n}", DatasetError)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}:{n + 1} is not UTF-8 text ({exc}); save the file as UTF-8") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every object in a JSON-lines file, in order."""
    return [row for _, row in iter_jsonl(path)]
