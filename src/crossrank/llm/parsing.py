"""Reading an LLM's answer: ratings (pointwise) and permutations (listwise), robustly. Pure functions.

LLMs wrap answers in prose, reasoning blocks (``<think>...</think>``), code fences and markdown;
they repeat ids, invent ids, skip ids or answer nothing. These parsers take what is usable,
count what is not, and say when nothing was usable, so the scorer can keep the incoming order for
that prompt and report it instead of failing the whole ranking.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)
_FENCE = re.compile(r"```[a-zA-Z]*")
_BRACKET_ID = re.compile(r"\[\s*(\d+)\s*\]")
_LABEL_ID = re.compile(r"\b(?:passage|document|doc|id)\s*#?\s*(\d+)", re.I)
_CHAIN = re.compile(r"\d+(?:\s*(?:>>?|->|→|,|;|\s)\s*\d+)+")
_INT = re.compile(r"\b\d+\b")
_NUMBER = r"(\d+(?:\.\d+)?)"
_KEYED_RATING = re.compile(r"(?:rating|score|relevance)\W{0,3}(?:is|of|=|:)?\s*\W{0,2}" + _NUMBER, re.I)
_SCALE_MENTION = re.compile(r"(?:from\s+\d+\s+to\s+\d+|\d+\s*(?:-|–|to)\s*\d+\s*scale|/\s*\d+|out\s+of\s+\d+)", re.I)
_ANY_NUMBER = re.compile(r"(?<![\w.])" + _NUMBER + r"(?![\w.]*\d)")
_ID_RATING = re.compile(
    r"(?:\[\s*(\d+)\s*\]|\"(\d+)\"|^\s*(?:passage\s*)?(\d+)\s*(?:[:)=]|\.(?!\d)))[^\S\n]*[:=\-–>]?[^\S\n]*"
    r"(?:\*\*)?(?:rating|score)?[^\S\n]*[:=]?[^\S\n]*(?:\*\*)?" + _NUMBER,
    re.I | re.M,
)


def _blank(m: re.Match[str]) -> str:
    return " " * len(m.group(0))


def clean_answer(text: str | None) -> str:
    """The answer with reasoning blocks, code fences and markdown emphasis blanked out.

    Removed spans become spaces of the same length, so character offsets still point into the
    original answer (the logprob reader relies on that).
    """
    if not text:
        return ""
    out = _THINK.sub(_blank, text)
    out = _FENCE.sub(_blank, out)
    return out.replace("**", "  ")


@dataclass(frozen=True)
class Permutation:
    """A listwise answer read against ``n`` passages (positions 0-based, ids 1-based in the prompt).

    ``order`` is always a full permutation of ``range(n)``: the ids the answer listed, first
    occurrence first, then the ``missing`` ones in their incoming order. ``duplicates`` and
    ``unknown`` count repeated ids and ids outside ``1..n``, which are ignored. ``listed == 0``
    means nothing usable was found (empty or nonsense answer): the caller keeps the incoming order.
    """

    order: tuple[int, ...]
    listed: int
    missing: tuple[int, ...]
    duplicates: int
    unknown: int

    @property
    def ok(self) -> bool:
        return self.listed > 0


def _ids(text: str) -> list[int]:
    """The ids an answer lists, in its order: bracketed ids, else "passage N" labels, else a number chain."""
    for pattern in (_BRACKET_ID, _LABEL_ID):
        found = pattern.findall(text)
        if found:
            return [int(x) for x in found]
    chains = [m.group(0) for m in _CHAIN.finditer(text)]
    if chains:
        best = max(chains, key=lambda c: len(_INT.findall(c)))
        return [int(x) for x in _INT.findall(best)]
    singles = _INT.findall(text)
    return [int(singles[0])] if len(singles) == 1 else []


def parse_permutation(text: str | None, n: int) -> Permutation:
    """Read a RankGPT-style answer (``[2] > [3] > [1]``) for ``n`` passages, tolerating prose and noise."""
    listed: list[int] = []
    seen: set[int] = set()
    duplicates = unknown = 0
    for k in _ids(clean_answer(text)):
        if not 1 <= k <= n:
            unknown += 1
        elif k - 1 in seen:
            duplicates += 1
        else:
            seen.add(k - 1)
            listed.append(k - 1)
    missing = tuple(i for i in range(n) if i not in seen)
    return Permutation(tuple(listed) + missing, len(listed), missing, duplicates, unknown)


def _in_scale(x: float, scale: tuple[int, int]) -> bool:
    return scale[0] <= x <= scale[1]


def _find_rating(t: str, scale: tuple[int, int]) -> tuple[float, int] | None:
    """(rating, its character offset) in an already cleaned answer."""
    for m in _KEYED_RATING.finditer(t):
        x = float(m.group(1))
        if _in_scale(x, scale):
            return x, m.start(1)
    for m in _ANY_NUMBER.finditer(_SCALE_MENTION.sub(_blank, t)):
        x = float(m.group(1))
        if _in_scale(x, scale):
            return x, m.start(1)
    return None


def parse_rating(text: str | None, scale: tuple[int, int]) -> float | None:
    """One rating in ``scale`` from an answer such as ``7``, ``Rating: 7/10`` or ``{"score": 7}``; None if absent.

    A number after ``rating`` / ``score`` / ``relevance`` wins; otherwise the first number in the
    scale once scale mentions (``from 0 to 10``, ``/10``, ``out of 10``) are removed.
    """
    found = _find_rating(_BRACKET_ID.sub(_blank, clean_answer(text)), scale)
    return None if found is None else found[0]


@dataclass(frozen=True)
class Ratings:
    """A pointwise answer for ``n`` passages: ``ratings[i]`` for the positions it rated (0-based).

    ``offsets[i]`` is where rating ``i`` starts in the answer text (for the logprob reader).
    """

    ratings: dict[int, float]
    offsets: dict[int, int]
    duplicates: int
    unknown: int


def parse_ratings(text: str | None, n: int, scale: tuple[int, int]) -> Ratings:
    """Per-passage ratings from lines such as ``[2] 7``, ``2: 7`` or ``{"2": 7}``.

    With one passage a bare rating (``7``, ``Rating: 7/10``) is accepted too. The first rating
    given for an id counts; later ones are duplicates. Ids outside ``1..n`` and ratings outside
    the scale are ``unknown`` (ignored).
    """
    t = clean_answer(text)
    ratings: dict[int, float] = {}
    offsets: dict[int, int] = {}
    duplicates = unknown = 0
    for m in _ID_RATING.finditer(t):
        k = int(m.group(1) or m.group(2) or m.group(3))
        x = float(m.group(4))
        if not 1 <= k <= n or not _in_scale(x, scale):
            unknown += 1
        elif k - 1 in ratings:
            duplicates += 1
        else:
            ratings[k - 1], offsets[k - 1] = x, m.start(4)
    if n == 1 and not ratings:
        found = _find_rating(_BRACKET_ID.sub(_blank, t), scale)
        if found is not None:
            ratings[0], offsets[0] = found
    return Ratings(ratings, offsets, duplicates, unknown)


TopLogprobs = Sequence[Sequence[tuple[str, float]]]


def expected_rating(top_logprobs: TopLogprobs | None, scale: tuple[int, int]) -> float | None:
    """The expected rating of a one-passage answer from its token log-probabilities; None if unusable.

    ``top_logprobs`` has one entry per generated token: the (token, logprob) alternatives there,
    the generated token first. The answer is rebuilt from the generated tokens and parsed like
    the text; at the token where the rating starts, the expectation is taken over the alternatives
    that are ratings, renormalised. A ``1`` the model continued with ``0`` (a two-token ``10``) is
    split into 1 and 10 by the next position's probability of ``0``; a ``1`` alternative that was
    not generated counts as 1, so on tokenizers that split digits a 0-9 scale is exact.
    """
    if not top_logprobs or any(not alts for alts in top_logprobs):
        return None
    tokens = [alts[0][0] for alts in top_logprobs]
    parsed = parse_ratings("".join(tokens), 1, scale)
    if 0 not in parsed.offsets:
        return None
    offset, pos, end = parsed.offsets[0], 0, 0
    for pos, tok in enumerate(tokens):  # noqa: B007 - pos is used after the loop
        end += len(tok)
        if end > offset:
            break
    lo, hi = scale
    mass: dict[float, float] = {}
    for token, logprob in top_logprobs[pos]:
        tok = token.strip()
        if tok.isdigit() and lo <= int(tok) <= hi and math.isfinite(logprob):
            mass[float(int(tok))] = mass.get(float(int(tok)), 0.0) + math.exp(logprob)
    if not mass:
        return None
    if tokens[pos].strip() == "1" and hi >= 10 and pos + 1 < len(tokens) and 1.0 in mass:
        p_zero = min(sum(math.exp(lp) for tok, lp in top_logprobs[pos + 1] if tok.strip() == "0"), 1.0)
        p_one = mass.pop(1.0)
        mass[1.0] = p_one * (1 - p_zero)
        mass[10.0] = mass.get(10.0, 0.0) + p_one * p_zero
    total = sum(mass.values())
    return sum(v * p for v, p in mass.items()) / total if total > 0 else None
