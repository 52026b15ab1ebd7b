"""Input validation: turn whatever the caller passed into ``Candidate`` records, or say exactly why not.

Everything here runs before any model is touched, so bad input fails fast with a typed error
instead of deep inside a tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args

from crossrank.errors import (
    InvalidArgumentError,
    InvalidDocumentError,
    InvalidDocumentTypeError,
    InvalidQueryError,
    InvalidQueryTypeError,
    UnknownOptionError,
)
from crossrank.results import Candidate, clean_float

Normalize = Literal["none", "sigmoid", "softmax", "minmax"]
LongDocuments = Literal["truncate", "windows"]
Aggregate = Literal["max", "mean_top2", "first"]
Fusion = Literal["none", "rrf"]
TruncationSide = Literal["right", "left"]
CandidateLike = str | Candidate | Mapping[str, Any]

NORMALIZE_CHOICES: tuple[str, ...] = get_args(Normalize)
LONG_DOC_CHOICES: tuple[str, ...] = get_args(LongDocuments)
AGGREGATE_CHOICES: tuple[str, ...] = get_args(Aggregate)
FUSION_CHOICES: tuple[str, ...] = get_args(Fusion)
TRUNCATION_SIDES: tuple[str, ...] = get_args(TruncationSide)


def check_query(query: object) -> str:
    if not isinstance(query, str):
        if isinstance(query, bytes):
            raise InvalidQueryTypeError("query must be str, got bytes: decode it first, e.g. query.decode('utf-8')")
        raise InvalidQueryTypeError(f"query must be a non-empty str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidQueryError("query is empty or whitespace: pass the user's question as a non-empty string")
    return query


def _doc_type_error(i: int, doc: object) -> InvalidDocumentTypeError:
    if doc is None:
        return InvalidDocumentTypeError(
            f"candidate {i} is None: pass a string (use '' for an empty document) or a Candidate"
        )
    if isinstance(doc, bytes):
        return InvalidDocumentTypeError(f"candidate {i} is bytes: decode it to str first")
    return InvalidDocumentTypeError(
        f"candidate {i} has type {type(doc).__name__}: pass str, crossrank.Candidate, or a mapping with a 'text' key"
    )


def to_candidate(i: int, doc: object) -> Candidate:
    """Coerce one input; the caller's object is never modified."""
    if isinstance(doc, str):
        return Candidate(text=doc)
    if isinstance(doc, Candidate):
        if not isinstance(doc.text, str):
            raise _doc_type_error(i, doc.text)
        if doc.score is not None and not isinstance(doc.score, (int, float)):
            raise InvalidDocumentError(f"candidate {i} has a non-numeric first-stage score {doc.score!r}")
        return doc
    if isinstance(doc, Mapping):
        text = doc.get("text", doc.get("page_content"))
        if not isinstance(text, str):
            raise InvalidDocumentTypeError(f"candidate {i} is a mapping without a str 'text' (or 'page_content') value")
        score = doc.get("score")
        if score is not None and not isinstance(score, (int, float)):
            raise InvalidDocumentError(f"candidate {i} has a non-numeric first-stage score {score!r}")
        raw_id = doc.get("id")
        return Candidate(
            text=text,
            id=None if raw_id is None else str(raw_id),
            metadata=dict(doc.get("metadata") or {}),
            score=clean_float(score),
        )
    raise _doc_type_error(i, doc)


def to_candidates(docs: Iterable[object]) -> list[Candidate]:
    if isinstance(docs, (str, bytes)):
        raise InvalidDocumentTypeError(
            "documents must be a list of strings or Candidates, not a single string: wrap it in a list"
        )
    if docs is None:
        raise InvalidDocumentTypeError("documents is None: pass a list (an empty list gives empty results)")
    return [to_candidate(i, d) for i, d in enumerate(docs)]


def check_options(options: Mapping[str, object], allowed: Iterable[str], where: str) -> None:
    """Refuse option names ``where`` does not take, naming the closest one (``top_k`` -> ``top_n``)."""
    import difflib

    known = sorted(allowed)
    unknown = sorted(set(options) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownOptionError(
            f"{where}() got an unexpected keyword argument {unknown[0]!r}; {hint}it takes {', '.join(known)}"
        )


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(f"{name}={value!r} is not supported; choose one of {', '.join(choices)}")
    return value


def check_top_n(top_n: object) -> int | None:
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise InvalidArgumentError(f"top_n must be a positive int or None, got {top_n!r}")
    if top_n < 1:
        raise InvalidArgumentError(f"top_n must be >= 1 (None keeps every candidate), got {top_n}")
    return top_n


def check_threshold(threshold: object) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidArgumentError(f"threshold must be a number or None, got {threshold!r}")
    if math.isnan(threshold):
        raise InvalidArgumentError("threshold is NaN: pass a number on the chosen normalize scale, or None")
    return float(threshold)


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    return value


def check_output_options(top_n: object, threshold: object, normalize: object) -> None:
    """Validate the options every adapter exposes, at construction rather than on the first query."""
    check_top_n(top_n)
    check_threshold(threshold)
    check_choice("normalize", normalize, NORMALIZE_CHOICES)
