"""Turning a framework's retrieved items into core candidates, with one precise error for the wrong kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from crossrank.errors import InvalidDocumentTypeError
from crossrank.results import Candidate

T = TypeVar("T")


def to_candidates(
    items: Sequence[object], kind: type[T], convert: Callable[[T], Candidate], *, takes: str, other: str
) -> list[Candidate]:
    """``convert`` each item, refusing one that is not a ``kind`` with an error naming its position.

    ``takes`` says what the adapter takes ("CrossRankCompressor takes langchain_core Documents"),
    ``other`` where the other framework's objects go (the usual cause of the mistake).
    """
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise InvalidDocumentTypeError(f"{takes}; item {i} is {type(item).__name__} ({other})")
        out.append(convert(item))
    return out
