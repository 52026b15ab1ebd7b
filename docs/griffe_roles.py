"""A griffe extension for the API reference: crossrank's reST-flavoured docstrings render as Markdown.

crossrank's docstrings use Sphinx roles (``:class:`~crossrank.Reranker` ``, ``:func:`first_stage` ``)
and doctest examples (``>>> rr.rerank(...)``), which Markdown would show as literal colons and
backticks and as nested quotes. This turns each role into inline code with the name a reader sees
(the last dotted part when the target starts with ``~``) and each run of doctest lines into a
fenced ``pycon`` block (without ``# doctest:`` directives), so the reference pages read like the
prose pages. Loaded by ``mkdocs.yml`` (``extensions:``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|term|ref):`~?([^`<]+?)(?:\s*<[^>]+>)?`")


def _shown(match: re.Match[str]) -> str:
    """The role's target as inline code: ``~a.b.C`` shows as ``C``, ``a.b.C`` as itself."""
    target = match.group(1).strip()
    if match.group(0).split("`", 1)[1].startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def strip_roles(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code."""
    return _ROLE.sub(_shown, text)


_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines (``>>>``, ``...`` and their output) in a pycon fence."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(_DIRECTIVE.sub("", lines[i]))
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every loaded object's docstring (modules, classes, functions, attributes)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(strip_roles(obj.docstring.value))
