"""Training queries: given ones (JSONL or a BEIR folder's train split), or pseudo-queries cut from the collection.

Pseudo-queries need no generation model: they are spans of the collection's own documents (a
title, a first sentence, or another sentence of the document). The teacher labels every candidate
of every query, so a pseudo-query only has to look like something a user might ask; which document
it came from matters only as a known positive that is always among its candidates.

Held-out queries are split off by a seeded shuffle, separately for given and pseudo-queries, so a
run with real queries always evaluates on some real ones.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import DatasetError, InvalidArgumentError
from crossrank.jsonl import iter_jsonl

PSEUDO_KINDS: tuple[str, ...] = ("sentence", "first-sentence", "title")
"""Spans a pseudo-query can be cut from: another sentence of the document, its first sentence, its title."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_MIN_WORDS, _MAX_WORDS = 5, 40


@dataclass(frozen=True)
class TrainQuery:
    """One training query: its id and text, and the documents known to be relevant (id -> grade).

    ``origin`` says where it came from: ``given`` (a user's file or a BEIR train split) or
    ``pseudo:<kind>`` (cut from the document in ``positives``).
    """

    qid: str
    text: str
    positives: dict[str, int] = field(default_factory=dict)
    origin: str = "given"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run's split manifest stores it)."""
        return {"qid": self.qid, "text": self.text, "positives": self.positives, "origin": self.origin}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainQuery:
        """Inverse of :meth:`to_dict`."""
        return cls(str(d["qid"]), str(d["text"]), {str(k): int(v) for k, v in d["positives"].items()}, d["origin"])


def load_queries(path: str | Path) -> list[TrainQuery]:
    """Queries from a JSONL file or a BEIR folder (its **train** split only).

    JSONL rows: ``{"query": ...}`` (or ``"text"``), optional ``"_id"``/``"id"``, optional
    ``"positive_ids"``: ids of documents in the collection known to be relevant. A BEIR folder
    gives the queries of ``qrels/train.tsv`` with their judgements; its test split is never read,
    so training can not see the queries it is evaluated on.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return _beir_train_queries(p)
    if not p.is_file():
        raise DatasetError(f"{p}: no such file or folder (pass a JSONL file of queries or a BEIR folder)")
    out: list[TrainQuery] = []
    for n, row in iter_jsonl(p):
        text = row.get("query", row.get("text"))
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{p}:{n} has no string 'query' (or 'text') field")
        pos = row.get("positive_ids") or []
        if not isinstance(pos, list):
            raise DatasetError(f"{p}:{n}: 'positive_ids' must be a list of document ids")
        qid = str(row.get("_id", row.get("id", f"q{n}")))
        out.append(TrainQuery(qid, " ".join(text.split()), {str(d): 1 for d in pos}))
    if not out:
        raise DatasetError(f"{p} holds no queries")
    return out


def _beir_train_queries(root: Path) -> list[TrainQuery]:
    """The judged queries of a BEIR folder's train split, with their positive documents."""
    from crossrank.retrieval.beir import load_beir

    if not (root / "qrels" / "train.tsv").is_file():
        raise DatasetError(
            f"{root} has no qrels/train.tsv: training uses a BEIR folder's train split only (never its test "
            "split); pass your own queries as JSONL, or --pseudo-queries"
        )
    ds = load_beir(root, "train")
    out = []
    for qid, rels in ds.qrels.items():
        positives = {d: r for d, r in rels.items() if r > 0}
        if qid in ds.queries and positives:
            out.append(TrainQuery(qid, ds.queries[qid], positives))
    if not out:
        raise DatasetError(f"{root}/qrels/train.tsv judges no query of queries.jsonl")
    return out


def sentences(text: str) -> list[str]:
    """``text`` cut at sentence ends (a period, ! or ? before a capital, digit, quote or bracket)."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _clip(text: str) -> str:
    words = text.split()
    return " ".join(words[:_MAX_WORDS])


def pseudo_queries(
    docs: Mapping[str, tuple[str, Mapping[str, Any]]],
    n: int,
    *,
    kinds: Sequence[str] = PSEUDO_KINDS,
    seed: int = 42,
) -> list[TrainQuery]:
    """Up to ``n`` pseudo-queries from ``docs`` (id -> (text, metadata)), one per sampled document.

    Documents are drawn without replacement in a seeded order and the ``kinds`` are taken in turn;
    a document that has no usable span of the turn's kind (no ``title`` metadata, fewer than five
    words) is passed over for the next kind. Each pseudo-query's only known positive is its
    document.
    """
    bad = [k for k in kinds if k not in PSEUDO_KINDS]
    if bad or not kinds:
        raise InvalidArgumentError(f"pseudo-query kinds {bad or list(kinds)!r}: choose from {', '.join(PSEUDO_KINDS)}")
    rng = random.Random(seed)
    ids = sorted(docs)
    rng.shuffle(ids)
    out: list[TrainQuery] = []
    seen: set[str] = set()
    turn = 0
    for doc_id in ids:
        if len(out) >= n:
            break
        text, meta = docs[doc_id]
        for step in range(len(kinds)):
            kind = kinds[(turn + step) % len(kinds)]
            span = _span(kind, text, meta, rng)
            if span and span.lower() not in seen:
                seen.add(span.lower())
                out.append(TrainQuery(f"pseudo-{len(out)}", span, {doc_id: 1}, f"pseudo:{kind}"))
                turn += 1
                break
    if n > 0 and not out:
        raise DatasetError(
            f"no pseudo-query of kind {', '.join(kinds)} could be cut from {len(docs)} documents: 'title' needs a "
            "'title' metadata field of 3+ words, 'sentence' / 'first-sentence' a sentence of "
            f"{_MIN_WORDS}+ words; choose other kinds or pass --queries"
        )
    return out


def _span(kind: str, text: str, meta: Mapping[str, Any], rng: random.Random) -> str | None:
    """One pseudo-query of ``kind`` from a document, or None when it has none that is 5-40 words long."""
    if kind == "title":
        title = meta.get("title")
        span = " ".join(title.split()) if isinstance(title, str) else ""
        return span if len(span.split()) >= 3 else None
    sents = [s for s in sentences(text) if len(s.split()) >= _MIN_WORDS]
    if not sents:
        return None
    if kind == "first-sentence":
        return _clip(sents[0])
    rest = sents[1:] or sents
    return _clip(rest[rng.randrange(len(rest))])


def split_heldout(
    queries: Sequence[TrainQuery], fraction: float, *, seed: int = 42
) -> tuple[list[TrainQuery], list[TrainQuery]]:
    """``(train, held_out)``: a seeded ``fraction`` of each origin group (given, pseudo) held out.

    At least one query is held out and at least one kept whenever there are two or more.
    """
    if not 0 < fraction < 1:
        raise InvalidArgumentError(f"eval fraction must be between 0 and 1, got {fraction}")
    if len(queries) < 2:
        raise DatasetError(f"need at least 2 training queries to hold some out for evaluation, got {len(queries)}")
    groups: dict[str, list[TrainQuery]] = {}
    for q in queries:
        groups.setdefault(q.origin.split(":")[0], []).append(q)
    rng = random.Random(seed)
    train: list[TrainQuery] = []
    held: list[TrainQuery] = []
    for name in sorted(groups):
        group = sorted(groups[name], key=lambda q: q.qid)
        rng.shuffle(group)
        k = round(len(group) * fraction) if len(group) > 1 else 0
        held += group[:k]
        train += group[k:]
    if not held:
        held, train = train[:1], train[1:]
    if not train:
        train, held = held[:1], held[1:]
    return train, held
