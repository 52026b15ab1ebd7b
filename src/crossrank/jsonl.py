"""The one JSON-lines reader: every ``*.jsonl`` crossrank reads goes through here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crossrank.errors import DatasetError


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a bad line raises ``DatasetError`` naming it."""
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n} is not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{n} is not a JSON object")
            yield n, row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every object in a JSON-lines file, in order."""
    return [row for _, row in iter_jsonl(path)]
