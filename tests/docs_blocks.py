"""The code blocks of the README and the docs pages, as ``tests/test_docs.py`` runs them.

A block is a fenced ```` ```python ```` or ```` ```bash ```` block at the start of a line. The line
right before its fence may hold one marker (an HTML comment, invisible on the rendered page):

* ``<!-- not-run: REASON -->``: shown, never run; the reason is required;
* ``<!-- reduced: ARGS -->`` (bash only): ARGS are appended to every ``crossrank`` command in the
  block, so it runs in a smaller form (argparse keeps an option's last value).

Any other comment right before a fence is an error, so a typo cannot switch a block off. The
documentation of the convention is ``docs/contributing.md`` ("Documentation").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = ("python", "bash")
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
_MARKER = re.compile(r"^<!--\s*(not-run|reduced)\s*:\s*(.*?)\s*-->\s*$")
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its code, and its marker if any."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None = None  # "not-run" or "reduced"
    argument: str = ""  # the not-run reason or the reduced arguments

    @property
    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUNNABLE and self.marker != "not-run"


class MarkerError(ValueError):
    """A marker the convention does not allow (unknown, without a reason, or on the wrong block)."""


def doc_files() -> list[Path]:
    """README.md and every Markdown page under docs/, in a stable order."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` (any language), with the marker on the line before its fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        marker, argument = None, ""
        before = lines[start - 1] if start > 0 else ""
        where = f"{_shown(path)}:{start + 1}"
        if mm := _MARKER.match(before.strip()):
            marker, argument = mm.group(1), mm.group(2)
            if not argument:
                what = "reason" if marker == "not-run" else "list of arguments"
                raise MarkerError(f"{where}: <!-- {marker}: ... --> needs a {what}")
            if marker == "reduced" and lang != "bash":
                raise MarkerError(f"{where}: <!-- reduced: ... --> applies to bash blocks only")
        elif _COMMENT.match(before):
            raise MarkerError(
                f"{where}: unknown marker {before.strip()!r}; use <!-- not-run: REASON --> or <!-- reduced: ARGS -->"
            )
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", marker, argument))
    return out


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def reduce_bash(code: str, args: str) -> str:
    """``code`` with ``args`` appended to every ``crossrank`` command (backslash continuations joined)."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        command, hash_, comment = _split_comment(line)
        if re.match(r"^\s*(?:[A-Z_]+=\S+\s+)*crossrank\s", command):
            command = f"{command.rstrip()} {args}"
            line = f"{command}  {hash_}{comment}" if hash_ else command
        out.append(line)
    return "\n".join(out) + "\n"


def _split_comment(line: str) -> tuple[str, str, str]:
    """A shell line as (command, "#", comment); a # inside quotes is not a comment."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], "#", line[i + 1 :]
    return line, "", ""
