"""Reading an LLM's answer: ratings (pointwise) and permutations (listwise), the way a person would. Pure functions.

LLMs wrap answers in prose, reasoning blocks (``<think>...</think>``), code fences and markdown;
they explain before they rank, revise, repeat ids, invent ids, skip ids, refuse, or run out of
tokens while still thinking. These parsers take what the answer *states* and nothing it merely
mentions: a listwise answer's ranking is an explicit ranking (a ``>`` chain, a ranking or
"final" line, a numbered or bulleted list of ids, a JSON array, a markdown table), the last
complete one, and a number in prose ("I can't rank these 10 passages") is never read as an id.
They count what is unusable and say why nothing was usable, so the scorer can keep the incoming
order for that prompt and report it instead of failing the whole ranking.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- cleaning

_THINK_TAG = re.compile(r"<(/?)(think|thinking|thought|reasoning)>", re.I)
_HARMONY_ANALYSIS = "<|channel|>analysis"
_HARMONY_FINAL = re.compile(r"<\|channel\|>\s*final\s*(?:<\|constrain\|>\S*)?\s*<\|message\|>")
_SPECIAL_TOKEN = re.compile(r"<\|[\w.-]+\|>")
_FENCE = re.compile(r"```[\w+.-]*|~~~[\w+.-]*")
_EMPHASIS = re.compile(r"\*\*|__|`")
_BRACKET_ID = re.compile(r"\[\s*(\d+)\s*\]")
_LONG_SPACE = re.compile(r"[^\S\n]{9,}")
_NUMBER = r"(\d+(?:\.\d+)?)"
_KEYED_RATING = re.compile(r"(?:rating|score|relevance)\W{0,3}(?:is|of|=|:)?\s*\W{0,2}" + _NUMBER, re.I)
# "I'd give it an 8", "I rate it a 7", "so: 9" at the very end: the rating a person reads past other numbers.
_GIVEN_RATING = re.compile(
    r"\b(?:give|giving|gave|assign|assigning|rate|rating|rated|score|scoring)[^\S\n]+(?:it|this|the\s+passage)?"
    r"[^\S\n]*(?:an?|as|at)?[^\S\n]*\W{0,2}" + _NUMBER + r"(?![\w.]*\d)",
    re.I,
)
_CLOSING_RATING = re.compile(
    r"(?:[:=]|\bso\b)[^\S\n]*\W{0,2}" + _NUMBER + r"\W{0,2}(?:/\s*\d+)?[^\S\n]*[.!]?\s*$", re.I
)
_SCALE_MENTION = re.compile(r"(?:from\s+\d+\s+to\s+\d+|\d+\s*(?:-|–|to)\s*\d+\s*scale|/\s*\d+|out\s+of\s+\d+)", re.I)
_ANY_NUMBER = re.compile(r"(?<![\w.])" + _NUMBER + r"(?![\w.]*\d)")
_ID_RATING = re.compile(
    r"(?:\[\s*(\d+)\s*\]|\"(\d+)\"|^\s*(?:passage\s*)?(\d+)\s*(?:[:)=]|\.(?!\d)|(?=(?:rating|score)\b)))"
    r"[^\S\n]*[:=\-–>]?[^\S\n]*"
    r"(?:\*\*)?(?:rating|score)?[^\S\n]*[:=]?[^\S\n]*(?:\*\*)?" + _NUMBER,
    re.I | re.M,
)
# Saying no: labels a listwise failure; stops a pointwise refusal's stray number being read as a rating.
_DECLINE = r"sorry|apologi[sz]e|can(?:no|['’])t|can not|unable|not able|won['’]t|will not|refuse|declin"
_REFUSAL = re.compile(rf"\b(?:{_DECLINE}|none of (?:the|these|them)|no (?:relevant )?(?:passage|document)s?\b)", re.I)
_DECLINES = re.compile(rf"\b(?:{_DECLINE})", re.I)


def _blank(m: re.Match[str]) -> str:
    return " " * len(m.group(0))


def _blank_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    chars = list(text)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    return "".join(chars)


def _reasoning_spans(text: str) -> tuple[list[tuple[int, int]], bool]:
    """Where an answer reasons rather than answers, and whether it ends while still reasoning.

    ``<think>`` / ``<thinking>`` / ``<reasoning>`` blocks; a closing tag with no opening one
    (chat templates such as DeepSeek-R1's and QwQ's open the block in the prompt, so the answer
    starts inside it); gpt-oss's ``analysis`` channel before its ``final`` one.
    """
    spans: list[tuple[int, int]] = []
    open_at: int | None = None
    open_name = ""
    for m in _THINK_TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2).lower()
        if not closing:
            if open_at is None:
                open_at, open_name = m.start(), name
        elif open_at is not None:
            if name == open_name:
                spans.append((open_at, m.end()))
                open_at = None
        else:  # the block was opened by the chat template: all of the answer before it is reasoning
            spans = [(0, m.end())]
    unfinished = open_at is not None
    if open_at is not None:
        spans.append((open_at, len(text)))
    analysis = text.find(_HARMONY_ANALYSIS)
    if analysis >= 0:
        final = _HARMONY_FINAL.search(text, analysis)
        spans.append((analysis, final.end() if final else len(text)))
        unfinished = unfinished or final is None
    return spans, unfinished


def _strip(text: str | None) -> tuple[str, bool]:
    """(the answer with reasoning, special tokens, fences and emphasis blanked, whether it ends mid-reasoning)."""
    if not text:
        return "", False
    spans, unfinished = _reasoning_spans(text)
    out = _blank_spans(text, spans)
    out = _SPECIAL_TOKEN.sub(_blank, out)
    out = _FENCE.sub(_blank, out)
    return _EMPHASIS.sub(_blank, out), unfinished


def clean_answer(text: str | None) -> str:
    """The answer with reasoning blocks, special tokens, code fences and markdown emphasis blanked out.

    Removed spans become spaces of the same length, so character offsets still point into the
    original answer (the logprob reader relies on that).
    """
    return _strip(text)[0]


def unfinished_thinking(text: str | None) -> bool:
    """Whether the answer ends inside a reasoning block: the model was cut off while thinking."""
    return _strip(text)[1]


# --------------------------------------------------------------------------- ids, as a person reads them

_UNITS = [
    *("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD_VALUE = {w: i + 1 for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_WORD = (
    rf"(?:(?:{'|'.join(_TENS)})(?:[-\s](?:{'|'.join(_UNITS[:9])}))?|(?:one\s+)?hundred|"
    rf"{'|'.join(sorted(_UNITS, key=len, reverse=True))})"
)
_DIG = r"\d{1,4}(?!\d|[.,]\d)"
_NUM = rf"(?:{_DIG}|\b{_WORD}\b)"
_BARE = rf"(?:(?<![\w.,#]){_DIG}(?!\w)|\b{_WORD}\b)"
_LABEL = r"(?:passages?|documents?|docs?|candidates?|ids?|p(?=\s?\d))"
_LABELLED = (
    rf"(?:\[\s*(?:{_LABEL}\s*)?#?\s*{_NUM}\s*\]|\(\s*{_NUM}\s*\)|\b{_LABEL}\s*(?:#|:|no\.?|number)?\s*"
    rf"(?:\[\s*{_NUM}\s*\]|{_NUM})|(?<!\w)#{_DIG})"
)
_ID = rf"(?:{_LABELLED}|{_BARE})"
_ID_VALUE = re.compile(rf"\d+|\b{_WORD}\b", re.I)
_BARE_ONLY = re.compile(_BARE, re.I)

_DESC = r"(?:>{1,2}|-+>|=>|→|⟶|➔|≻|＞|&gt;)"
_ASC = r"(?:<|≺|＜|&lt;)"
_GAP = r"(?:\.{3}|…)"
_GAP_RE = re.compile(_GAP)
_NOTE = r"\((?!\s*\d+\s*\))[^()\n]{0,80}\)"  # "[3] (most direct) > [1]": a note, not an id
_NOTE_RE = re.compile(_NOTE)
_NOTED = rf"{_ID}(?:[^\S\n]*{_NOTE})?"
# Equally ranked ids inside a chain ("[2] = [1] > [3]", "[3] >= [2]", "[2], [1] > [3]"): read in the order
# written, as RankGPT's own reader does (it keeps the digits in order). A comma ties bracketed ids only.
_TIE = r"(?:>=|≥|⩾|≈|~|=(?![=>])|,(?=\s*\[))"
_STEP = rf"(?:{_TIE}|{_DESC})"
_CHAIN = re.compile(rf"{_NOTED}(?:\s*{_STEP}\s*(?:{_GAP}\s*{_DESC}\s*)?{_NOTED})+(?:\s*{_DESC}\s*{_GAP})?", re.I)
_TIE_RE = re.compile(_TIE)
_DESC_RE = re.compile(_DESC)
_ASC_CHAIN = re.compile(rf"{_LABELLED}(?:\s*{_ASC}\s*{_LABELLED})+", re.I)
_H = r"[^\S\n]"  # horizontal space
# Between two ids on a line: punctuation (and "and"), "and", spaces, or nothing ("[3][1]"); written so that
# each split of the spaces is matched one way only (no backtracking blow-up on long lines of numbers).
_LINE_SEP = rf"(?:{_H}*[,;，、]{_H}*(?:and{_H}+)?|{_H}+and{_H}+|{_H}+|(?<=\])(?=\[))"
_LINE_LIST = re.compile(
    rf"^{_H}*(?:(?P<prefix>[^\s:|][^\n:|]{{0,60}}?(?::|\b(?:is|are|be)\b)){_H}*)?"
    rf"(?P<ids>{_ID}(?:{_LINE_SEP}{_ID})*)(?:{_H}*[.。!])?{_H}*$",
    re.I | re.M,
)
_ITEM = re.compile(
    r"^(?P<indent>[^\S\n]*)(?:(?P<num>\d{1,3})(?:[.):]|(?:st|nd|rd|th)\b[.):]?)|#(?P<hash>\d{1,3})[.):]?|"
    r"rank(?:ed)?[^\S\n]*#?(?P<rank>\d{1,3})[^\S\n]*[.):\-–]?|(?P<bullet>[-*•+]))[^\S\n]+"
    rf"(?:(?:most|least)[^\S\n]+relevant[^\S\n]*[:\-–][^\S\n]*)?(?P<id>{_ID})(?P<after>[^\n]*)$",
    re.I | re.M,
)
_AFTER_BARE_ID = re.compile(r"\s*(?:$|[:\-–—(.,)|])")
_JSON_ITEM = rf"""["']?\s*{_ID}\s*["']?"""
_JSON_ARRAY = re.compile(rf"\[\s*{_JSON_ITEM}(?:\s*,\s*{_JSON_ITEM})+\s*,?\s*\]", re.I)
_JSON_OBJECTS = re.compile(r"\[\s*\{")
_THEN = rf"(?:[^\S\n]*[,;]?[^\S\n]*(?:and\s+)?(?:then|followed\s+by|next)[^\S\n]+{_LABELLED})"
_THEN_CHAIN = re.compile(rf"{_LABELLED}{_THEN}+", re.I)
_PICK = re.compile(
    rf"(?:most\s+relevant|best(?:\s+match)?|top(?:\s+pick)?)(?:\s+(?:passage|document|one|result|answer))?\s*"
    rf"(?:is|:|=)\s*(?P<a>{_LABELLED})(?P<ra>{_THEN}*)|(?P<b>{_LABELLED})(?:[^\S\n]*{_NOTE})?"
    rf"(?:\s*,\s*(?:which|that|as|since|because)\b[^,\n]{{0,100}},)?\s+is\s+(?:the\s+)?"
    rf"(?:most\s+relevant|best)(?:\s+(?:one|passage|document|match))?(?P<rb>{_THEN}*)",
    re.I,
)
_RATED = re.compile(  # "[2]: 9/10", "Passage 2 - score: 9": ratings per passage, which order them
    rf"^{_H}*(?:(?:[-*•+]|\d{{1,3}}[.)]){_H}*)?(?P<id>{_LABELLED}){_H}*(?:[:=\-–—]{_H}*)?"
    r"(?:(?:relevance|score|rating)[^\S\n]*[:=]?[^\S\n]*(?P<a>\d+(?:\.\d+)?)|"
    r"(?P<b>\d+(?:\.\d+)?)[^\S\n]*(?:/|out\s+of)[^\S\n]*\d+)",
    re.I | re.M,
)
_FINAL_LABEL = re.compile(r"\bfinal\b", re.I)
_LABEL_WORD = re.compile(r"\b(?:rank(?:ing|ings|ed|s)?|order(?:ing|ed)?|answer|result|output|sorted)\b", re.I)
_NOTES_LABEL = re.compile(r"\b(?:explanations?|reasons?|reasoning|rationale|justifications?|analysis|notes?)\b", re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.I | re.S)
_TABLE_SEPARATOR = re.compile(r"^[\s|:\-]*-[\s|:\-]*$")
_ID_KEYS = ("id", "passage", "passage_id", "doc", "doc_id", "document", "document_id", "identifier", "index")
_RANK_KEYS = ("rank", "position", "place")
_SCORE_KEYS = ("score", "relevance", "relevance_score", "rating")


def _value(token: str) -> int | None:
    """The number an id token names: ``[3]``, ``Passage 3``, ``#3``, ``passage three``, ``twenty-one``."""
    m = _ID_VALUE.search(token)
    if m is None:
        return None
    word = m.group(0).lower()
    if word.isdigit():
        return int(word)
    if word.endswith("hundred"):
        return 100
    return sum(_WORD_VALUE[w] for w in re.split(r"[-\s]+", word) if w in _WORD_VALUE)


def _values(text: str) -> list[int]:
    out = []
    for m in re.finditer(_ID, text, re.I):
        v = _value(m.group(0))
        if v is not None:
            out.append(v)
    return out


@dataclass
class _Found:
    """One ranking stated in the answer: where, the ids in order, and where unlisted ids belong (a ``...`` gap)."""

    start: int
    end: int
    ids: list[int]
    shape: str
    gap: int | None = None
    last_bare: bool = False  # the last id is a bare number or word (a cut-off answer may have cut it short)
    notes: bool = False  # a bulleted list, or items with commentary: often notes per passage, not an order
    strength: int = 0  # 2: a "final" answer; 1: labelled a ranking / order / answer; 0: unlabelled; -1: notes


def _chains(t: str) -> list[_Found]:
    out = []
    for m in _CHAIN.finditer(t):
        text = _NOTE_RE.sub(_blank, m.group(0))
        if not _DESC_RE.search(_TIE_RE.sub(_blank, text)):
            continue  # ties only ("[1], [2]"; "[1] = [2]"): a list or an equation, not a ranking chain
        gap = _GAP_RE.search(text)
        ids = _values(text)
        before = len(_values(text[: gap.start()])) if gap else None
        last = list(re.finditer(_ID, text, re.I))[-1].group(0)
        bare = _BARE_ONLY.fullmatch(last) is not None
        out.append(_Found(m.start(), m.end(), ids, "chain", None if before == len(ids) else before, bare))
    for m in _ASC_CHAIN.finditer(t):  # [2] < [3] < [1]: least relevant first
        out.append(_Found(m.start(), m.end(), _values(m.group(0))[::-1], "chain"))
    return out


def _line_lists(t: str) -> list[_Found]:
    """Lines that hold nothing but ids (``2, 5, 1``; ``Ranking: [2] [5] [1]``), and runs of one-id lines."""
    out: list[_Found] = []
    single: list[_Found] = []  # the current run of lines holding one id each
    whole = t.strip()

    def close_run() -> None:
        if len(single) > 1:
            out.append(_Found(single[0].start, single[-1].end, [f.ids[0] for f in single], "line"))
        elif single and (whole == t[single[0].start : single[0].end].strip() or single[0].strength):
            out.append(single[0])  # a lone id: the whole answer ("[2]") or labelled ("Answer: [2]")
        single.clear()

    for m in _LINE_LIST.finditer(t):
        tokens = list(re.finditer(_ID, m.group("ids"), re.I))
        ids = [v for v in (_value(x.group(0)) for x in tokens) if v is not None]
        if not ids:
            continue
        bare = _BARE_ONLY.fullmatch(tokens[-1].group(0)) is not None
        found = _Found(m.start("ids"), m.end("ids"), ids, "line", last_bare=bare)
        prefix = m.group("prefix") or ""
        if len(ids) > 1:
            close_run()
            out.append(found)
            continue
        found.strength = 1 if _LABEL_WORD.search(prefix) or _FINAL_LABEL.search(prefix) else 0
        if single and (prefix or single[-1].strength or t[single[-1].end : m.start()].strip()):
            close_run()
        single.append(found)
        if prefix:
            close_run()
    close_run()
    return out


def _lists(t: str) -> list[_Found]:
    """Numbered (``1. [3]``, ``#1: Passage 3``, ``Rank 1 - 3``) and bulleted lists whose items start with an id."""
    out: list[_Found] = []
    kind, last, indent = "", 0, ""
    for m in _ITEM.finditer(t):
        if _BARE_ONLY.fullmatch(m.group("id")) and not _AFTER_BARE_ID.match(m.group("after")):
            continue  # "1. 3 studies show ..." is prose, not the id 3
        value = _value(m.group("id"))
        if value is None:
            continue
        number = m.group("num") or m.group("hash") or m.group("rank")
        k = "bullet" if m.group("bullet") else "numbered"
        between = t[out[-1].end : m.start()] if out else ""
        if k == "numbered":
            joins = kind == k and int(number) == last + 1
            last = int(number)
        else:  # bullets: the same indentation, only blank or further-indented lines in between
            joins = kind == k and m.group("indent") == indent
            joins = joins and all(not ln.strip() or ln[: len(indent) + 1].isspace() for ln in between.split("\n")[1:])
        notes = k == "bullet" or len(re.findall(r"[^\W\d_]{2,}", m.group("after"))) >= 3
        if out and joins:
            out[-1].ids.append(value)
            out[-1].end = m.end()
            out[-1].notes = out[-1].notes or notes
        else:
            out.append(_Found(m.start(), m.end(), [value], "list", notes=notes))
        kind, indent = k, m.group("indent")
    return out


def _ordered(rows: list[tuple[int, float | None, float | None]]) -> list[int]:
    """Ids of (id, rank, score) rows: by rank where every row has one, else by score, else as listed."""
    if rows and all(r[1] is not None for r in rows):
        return [r[0] for r in sorted(rows, key=lambda r: r[1])]  # type: ignore[arg-type, return-value]
    if rows and all(r[2] is not None for r in rows):
        return [r[0] for r in sorted(rows, key=lambda r: -r[2])]  # type: ignore[operator]
    return [r[0] for r in rows]


def _number(cell: Any) -> float | None:
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return float(cell)
    m = re.search(r"-?\d+(?:\.\d+)?", str(cell))
    return float(m.group(0)) if m else None


def _tables(t: str) -> list[_Found]:
    """Markdown tables with an id column, ordered by their rank column (else a score column, else row order)."""
    out = []
    lines, offset, block = t.split("\n"), 0, []
    for line in [*lines, ""]:
        if "|" in line:
            block.append((offset, line))
        else:
            if len(block) >= 3 and _TABLE_SEPARATOR.match(block[1][1]):
                found = _table(block)
                if found is not None:
                    out.append(found)
            block = []
        offset += len(line) + 1
    return out


def _table(block: list[tuple[int, str]]) -> _Found | None:
    def cells(line: str) -> list[str]:
        line = line.strip()
        return [c.strip() for c in line.removeprefix("|").removesuffix("|").split("|")]

    header = [c.lower() for c in cells(block[0][1])]
    body = [cells(line) for _, line in block[2:]]
    body = [r for r in body if len(r) == len(header)]
    if not body:
        return None

    def column(pattern: str) -> int | None:
        return next((i for i, h in enumerate(header) if re.search(pattern, h)), None)

    rank = column(r"\brank|\bposition\b|\bplace\b|^#$|^no\.?$")
    score = column(r"score|relevan|rating")
    ident = column(r"passage|\bdoc|\bid\b|identifier|candidate")
    if ident is None:  # no header says which column holds the ids: the one whose every cell is [n] / Passage n
        ident = next(
            (i for i in range(len(header)) if all(re.fullmatch(_LABELLED, r[i], re.I) for r in body)),
            None,
        )
    if ident is None or ident == rank:
        return None
    rows = []
    for r in body:
        v = _value(r[ident])
        if v is not None:
            rows.append((v, None if rank is None else _number(r[rank]), None if score is None else _number(r[score])))
    if not rows:
        return None
    return _Found(block[0][0], block[-1][0] + len(block[-1][1]), _ordered(rows), "table")


def _json_value(x: Any) -> int | None:
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    return _value(x) if isinstance(x, str) and re.fullmatch(_ID, x.strip(), re.I) else None


def _json(t: str) -> list[_Found]:
    out = [_Found(m.start(), m.end(), _values(m.group(0)), "json") for m in _JSON_ARRAY.finditer(t)]
    decoder = json.JSONDecoder()
    done = 0
    for m in _JSON_OBJECTS.finditer(t):  # [{"id": 3, "rank": 1}, ...]
        if m.start() < done:
            continue
        try:
            data, end = decoder.raw_decode(t, m.start())
        except ValueError:
            continue
        done = end
        rows = []
        for item in data if isinstance(data, list) else []:
            if not isinstance(item, dict):
                continue
            keys = {str(k).lower(): v for k, v in item.items()}
            v = next((_json_value(keys[k]) for k in _ID_KEYS if k in keys), None)
            if v is not None:
                r = next((_number(keys[k]) for k in _RANK_KEYS if k in keys), None)
                s = next((_number(keys[k]) for k in _SCORE_KEYS if k in keys), None)
                rows.append((v, r, s))
        if rows:
            out.append(_Found(m.start(), end, _ordered(rows), "json"))
    return out


def _picks(t: str) -> list[_Found]:
    """Rankings in words: "[3] is the most relevant, then [1], then [2]"; "[3], followed by [1]"."""
    out = []
    for m in _PICK.finditer(t):
        g = "a" if m.group("a") else "b"
        ids = _values(m.group(g)) + _values(m.group("r" + g))
        out.append(_Found(m.start(g), m.end(), ids, "pick" if len(ids) == 1 else "chain"))
    out += [_Found(m.start(), m.end(), _values(m.group(0)), "chain") for m in _THEN_CHAIN.finditer(t)]
    return out


def _ratings(t: str) -> list[_Found]:
    """Consecutive lines rating one passage each ("[2]: 9/10"), ordered by rating, best first."""
    out: list[_Found] = []
    rows: list[tuple[int, float | None, float | None]] = []
    start = end = 0
    for m in _RATED.finditer(t):
        v = _value(m.group("id"))
        if v is None:
            continue
        if rows and t[end : m.start()].count("\n") > 2:
            out.append(_Found(start, end, _ordered(rows), "ratings"))
            rows = []
        if not rows:
            start = m.start()
        rows.append((v, None, float(m.group("a") or m.group("b"))))
        end = m.end()
    if rows:
        out.append(_Found(start, end, _ordered(rows), "ratings"))
    return [f for f in out if len(f.ids) > 1]


def _label_strength(t: str, found: _Found, floor: int, answers: list[tuple[int, int]]) -> int:
    """How explicitly the text just before a ranking (its line and the line above) declares it the answer."""
    if any(a <= found.start < b for a, b in answers):
        return 2
    i = t.rfind("\n", 0, found.start)  # the end of the line above; then skip blank lines to the last text
    while i >= 0 and t[i].isspace():
        i -= 1
    start = max(floor, t.rfind("\n", 0, i + 1) + 1 if i >= 0 else 0)
    region = t[start : found.start]
    if _FINAL_LABEL.search(region):
        return 2
    if _LABEL_WORD.search(region):
        return 1
    return -1 if found.notes or _NOTES_LABEL.search(region) else 0


def _rankings(t: str) -> list[_Found]:
    """Every ranking the answer states, in order, none inside a longer one; each with its label strength."""
    found = _chains(t) + _line_lists(t) + _ratings(t) + _lists(t) + _tables(t) + _json(t) + _picks(t)
    found.sort(key=lambda f: (f.start, -f.end))  # stable: on equal spans, the earlier extractor wins
    kept: list[_Found] = []
    for f in found:
        if not any(k.start <= f.start and f.end <= k.end and len(f.ids) <= len(k.ids) for k in kept):
            kept.append(f)  # one inside another is the same ranking, unless it lists more ("1. [3] > [1] > [2]")
    answers = [m.span(1) for m in _ANSWER_TAG.finditer(t)]
    floor = 0
    for f in kept:
        f.strength = _label_strength(t, f, floor, answers)
        floor = f.end
    return kept


@dataclass(frozen=True)
class Permutation:
    """A listwise answer read against ``n`` passages (positions 0-based, ids 1-based in the prompt).

    ``order`` is always a full permutation of ``range(n)``: the ids the ranking listed, first
    occurrence first, with the ``missing`` ones in their incoming order after them (or where the
    ranking left a ``...`` gap). ``duplicates`` and ``unknown`` count repeated ids and ids outside
    ``1..n``, which are ignored. ``shape`` says what was read (``chain``, ``list``, ``line``,
    ``json``, ``table``, ``ratings``, ``pick``; empty when nothing). ``listed == 0`` means nothing usable was
    found: the caller keeps the incoming order, and ``problem`` says why: ``empty``, ``thinking``
    (the answer ends inside an unfinished reasoning block), ``refusal`` or ``no-ranking``.
    """

    order: tuple[int, ...]
    listed: int
    missing: tuple[int, ...]
    duplicates: int
    unknown: int
    shape: str = ""
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.listed > 0


def _choose(found: list[_Found], n: int) -> _Found | None:
    """The ranking a reader takes: a "final" one first, then a complete one, then a labelled one; the last of those."""
    usable = [f for f in found if any(1 <= k <= n for k in f.ids)] or found
    if not usable:
        return None

    def complete(f: _Found) -> bool:
        return len({k for k in f.ids if 1 <= k <= n}) == n

    best = max((f.strength == 2, complete(f), f.strength) for f in usable)
    return [f for f in usable if (f.strength == 2, complete(f), f.strength) == best][-1]


def parse_permutation(text: str | None, n: int, *, cut_off: bool = False) -> Permutation:
    """Read a listwise answer (``[2] > [3] > [1]`` and the other shapes in the module docs) for ``n`` passages.

    ``cut_off``: the answer hit the completion budget, so a bare number at its very end may be cut
    short (``1`` of ``12``) and is not taken.
    """
    t, unfinished = _strip(text)
    t = _LONG_SPACE.sub(" " * 8, t)  # blanked reasoning is one long run: keep the patterns' backtracking short
    chosen = _choose(_rankings(t), n)
    listed: list[int] = []
    seen: set[int] = set()
    duplicates = unknown = 0
    gap = None
    if chosen is not None:
        ids = chosen.ids
        if cut_off and chosen.last_bare and not t[chosen.end :].strip():
            ids = ids[:-1]
        for j, k in enumerate(ids):
            if j == chosen.gap:
                gap = len(listed)
            if not 1 <= k <= n:
                unknown += 1
            elif k - 1 in seen:
                duplicates += 1
            else:
                seen.add(k - 1)
                listed.append(k - 1)
    missing = tuple(i for i in range(n) if i not in seen)
    problem = None
    if not listed:
        if unfinished:
            problem = "thinking"
        elif not t.strip():
            problem = "empty"
        elif chosen is None and _REFUSAL.search(t):
            problem = "refusal"
        else:
            problem = "no-ranking"
    cut = len(listed) if gap is None else gap
    return Permutation(
        tuple(listed[:cut]) + missing + tuple(listed[cut:]),
        len(listed),
        missing,
        duplicates,
        unknown,
        chosen.shape if chosen is not None and listed else "",
        problem,
    )


def answer_problem(text: str | None) -> str | None:
    """What is wrong with an answer as a whole, before reading it: ``thinking`` (it ends inside an
    unfinished reasoning block), ``empty`` (nothing after the reasoning), ``refusal``; else None."""
    t, unfinished = _strip(text)
    if unfinished:
        return "thinking"
    if not t.strip():
        return "empty"
    return "refusal" if _REFUSAL.search(t) else None


# --------------------------------------------------------------------------- ratings


def _in_scale(x: float, scale: tuple[int, int]) -> bool:
    return scale[0] <= x <= scale[1]


def _find_rating(t: str, scale: tuple[int, int]) -> tuple[float, int] | None:
    """(rating, its character offset) in an already cleaned answer."""
    for i, pattern in enumerate((_KEYED_RATING, _GIVEN_RATING, _CLOSING_RATING)):
        if i == 1 and _DECLINES.search(t):  # "I can't rate this: it is in 3 languages" is not a 3
            return None
        for m in pattern.finditer(t):
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
