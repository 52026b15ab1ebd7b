"""Prompt templates for LLM reranking, and fitting documents into a prompt-token budget.

Templates are plain ``str.format`` strings. The fields a template may use:

- ``{query}``: the search query;
- ``{candidates}``: the numbered passages, each rendered with :attr:`LLMPrompts.passage`
  (``[{id}] {text}``, ids 1-based within the prompt);
- ``{instruction}``: the task instruction (:attr:`LLMPrompts.instruction` unless the scorer gets
  ``instruction=``);
- ``{n}``: how many passages the prompt holds; ``{min}`` / ``{max}``: the rating scale (pointwise).

Documents and queries are inserted as values, never parsed as templates, so braces in them are
safe. Prompt size is counted with a token counter (a callable ``str -> int``); without one,
:func:`approx_tokens` estimates it.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crossrank.errors import InvalidArgumentError

TokenCounter = Callable[[str], int]
Messages = list[tuple[str, str]]  # (role, content): "system" / "user"

FIELDS = frozenset({"query", "candidates", "instruction", "n", "min", "max"})
MIN_DOC_TOKENS = 16  # a passage trimmed below this says too little to be judged

DEFAULT_SYSTEM = "You are an expert search relevance judge. You follow the requested output format exactly."

DEFAULT_INSTRUCTION = "Judge how well each passage answers the search query."

DEFAULT_POINTWISE = """{instruction}

Query: {query}

Passages:
{candidates}

Rate how relevant each passage is to the query on a scale from {min} (irrelevant) to {max} (perfectly \
relevant). Answer with one line per passage in the form "[id] rating", for example "[1] {max}", and nothing else."""

DEFAULT_LISTWISE = """{instruction}

I will provide you with {n} passages, each indicated by a numerical identifier []. Rank the passages based on \
their relevance to the search query.

Query: {query}

{candidates}

Rank the {n} passages above based on their relevance to the query, most relevant first. The output format \
should be [] > [], e.g., [2] > [1]. Only respond with the ranking, do not explain."""


@dataclass(frozen=True)
class LLMPrompts:
    """The prompts an :class:`~crossrank.llm.LLMScorer` sends; replace any of them.

    ``pointwise`` asks for a rating per passage (one or a few passages per prompt), ``listwise``
    for a permutation of a window of passages (RankGPT style); ``system`` is the system message
    (empty: none is sent); ``passage`` renders one candidate from ``{id}`` and ``{text}``. Each
    template is checked when the object is made: only the fields listed in this module, and
    ``{query}`` and ``{candidates}`` present in ``pointwise`` and ``listwise``.
    """

    system: str = DEFAULT_SYSTEM
    pointwise: str = DEFAULT_POINTWISE
    listwise: str = DEFAULT_LISTWISE
    passage: str = "[{id}] {text}"
    instruction: str = DEFAULT_INSTRUCTION

    def __post_init__(self) -> None:
        for name in ("system", "pointwise", "listwise"):
            used = _fields(name, getattr(self, name))
            unknown = used - FIELDS
            if unknown:
                raise InvalidArgumentError(
                    f"LLMPrompts.{name} uses unknown field(s) {sorted(unknown)}; allowed: {sorted(FIELDS)}"
                )
            if name != "system" and not {"query", "candidates"} <= used:
                raise InvalidArgumentError(f"LLMPrompts.{name} must contain {{query}} and {{candidates}}")
        if _fields("passage", self.passage) != {"id", "text"}:
            raise InvalidArgumentError("LLMPrompts.passage must contain exactly the fields {id} and {text}")


def _fields(name: str, template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise InvalidArgumentError(f"LLMPrompts.{name} is not a valid format string ({exc})") from exc


_PIECES = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate of BPE tokens: one per word or symbol, at least one per 4 characters.

    Close to GPT / Llama / Qwen counts for English prose; it undercounts scripts and code that
    those tokenizers split finely, so pass the real tokenizer's counter (``count_tokens=``) when
    the prompt budget is tight.
    """
    return max(math.ceil(len(text) / 4), len(_PIECES.findall(text)))


def trim_to_tokens(text: str, limit: int, count: TokenCounter) -> str:
    """The longest prefix of ``text`` (cut at a word boundary where one is near) within ``limit`` tokens."""
    if count(text) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # largest prefix length whose count fits
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    cut = text.rfind(" ", 0, lo + 1)
    if cut > lo * 0.8:
        lo = cut
    return text[:lo].rstrip()


@dataclass(frozen=True)
class Prompt:
    """One rendered prompt: its messages, which passages were trimmed, and its estimated size."""

    messages: Messages
    trimmed: tuple[bool, ...]
    tokens: int


def render(
    prompts: LLMPrompts,
    template: str,
    *,
    query: str,
    texts: Sequence[str],
    instruction: str,
    scale: tuple[int, int],
    max_prompt_tokens: int | None,
    count: TokenCounter,
) -> Prompt:
    """The messages for ``texts`` (numbered 1..n), passages trimmed so the prompt fits the budget.

    Trimming shares the tokens left after the fixed text fairly: passages shorter than their share
    keep all of it and give the rest to longer ones; no passage is cut below ``MIN_DOC_TOKENS``,
    so a budget too small for the fixed text yields a prompt over budget rather than empty passages.
    """

    def build(docs: Sequence[str]) -> tuple[Messages, int]:
        cands = "\n".join(prompts.passage.format(id=i + 1, text=" ".join(d.split())) for i, d in enumerate(docs))
        values = {
            "query": query,
            "candidates": cands,
            "instruction": instruction,
            "n": len(docs),
            "min": scale[0],
            "max": scale[1],
        }
        messages: Messages = []
        if prompts.system:
            messages.append(("system", prompts.system.format_map(values)))
        messages.append(("user", template.format_map(values)))
        return messages, sum(count(c) for _, c in messages)

    messages, tokens = build(texts)
    if max_prompt_tokens is None or tokens <= max_prompt_tokens:
        return Prompt(messages, (False,) * len(texts), tokens)
    docs = [" ".join(t.split()) for t in texts]
    _, overhead = build([""] * len(docs))
    sizes = [count(d) for d in docs]
    budget = max_prompt_tokens - overhead
    for _ in range(4):  # counts are not exactly additive; shrink until the whole prompt fits
        shares = _fair_shares(sizes, budget)
        fitted = [d if s >= n else trim_to_tokens(d, s, count) for d, s, n in zip(docs, shares, sizes)]
        messages, tokens = build(fitted)
        if tokens <= max_prompt_tokens or all(s <= MIN_DOC_TOKENS for s in shares):
            break
        budget -= tokens - max_prompt_tokens
    trimmed = tuple(f != d for f, d in zip(fitted, docs))
    return Prompt(messages, trimmed, tokens)


def _fair_shares(sizes: Sequence[int], budget: int) -> list[int]:
    """Water-filling: each passage gets min(its size, an equal share of what the shorter ones left)."""
    shares = [0] * len(sizes)
    left = max(budget, 0)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for k, i in enumerate(order):
        share = left // (len(sizes) - k)
        shares[i] = min(sizes[i], share)
        left -= shares[i]
    return [max(s, min(MIN_DOC_TOKENS, n)) for s, n in zip(shares, sizes)]
