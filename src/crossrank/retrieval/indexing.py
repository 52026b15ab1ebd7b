"""Read text, Markdown and JSONL files into chunks with stable ids, ready for Chroma.

Ids are ``<hash of the absolute path>:<chunk number>``, so indexing the same file again replaces
its chunks (and deletes chunks a shorter version no longer has) instead of duplicating them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import DatasetError
from crossrank.jsonl import iter_jsonl

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
JSONL_SUFFIXES = {".jsonl"}


@dataclass(frozen=True)
class Chunk:
    """One piece of a source file as stored in Chroma: a stable id, its text, scalar metadata."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def source_key(path: Path) -> str:
    """A short stable key for a file (its absolute path hashed): the prefix of its chunks' ids."""
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]


def split_text(text: str, chunk_size: int = 1000, overlap: int = 200) -> list[tuple[int, str]]:
    """Windows of at most ``chunk_size`` characters, cut at paragraph or word boundaries, overlapping.

    Returns ``(start_char, chunk)`` pairs covering the whole text.
    """
    if chunk_size < 50:
        raise DatasetError(f"chunk_size must be at least 50 characters, got {chunk_size}")
    if not 0 <= overlap < chunk_size // 2:
        raise DatasetError(f"overlap must be between 0 and half of chunk_size, got {overlap}")
    lead = len(text) - len(text.lstrip())  # start_char counts from the file's first character
    text = text.strip()
    out: list[tuple[int, str]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + chunk_size)
        if end < n:
            window = text[start:end]
            cut = max(window.rfind("\n\n"), -1)
            if cut < chunk_size // 2:
                cut = max(window.rfind(". "), window.rfind("\n"))
                cut = cut + 1 if cut >= chunk_size // 2 else window.rfind(" ")
            if cut > 0:
                end = start + cut
        piece = text[start:end].strip()
        if piece:
            out.append((lead + start + len(text[start:end]) - len(text[start:end].lstrip()), piece))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        space = text.find(" ", nxt, end)
        start = space + 1 if overlap and space != -1 else nxt
    return out


def _hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in a hidden file or folder below ``root`` (``.git``, ``.venv``, ``.cache``)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Files to index under the given paths (directories are walked recursively, sorted; hidden files
    and folders inside them, such as ``.git`` or ``.venv``, are skipped unless named)."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise DatasetError(f"{raw}: no such file or directory")
        if p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES and not _hidden(f, p)
            )
        elif p.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES:
            files.append(p)
        else:
            raise DatasetError(f"{raw}: unsupported file type (use .txt, .md or .jsonl)")
    if not files:
        raise DatasetError(f"no .txt, .md or .jsonl files under {', '.join(map(str, paths))}")
    return files


def _jsonl_chunks(path: Path) -> Iterator[Chunk]:
    """BEIR ``corpus.jsonl`` shape ({"_id", "title", "text"}) or any JSON lines with "text"."""
    seen: dict[str, int] = {}
    for n, row in iter_jsonl(path):
        text = row.get("text")
        if not isinstance(text, str):
            raise DatasetError(f"{path}:{n} has no string 'text' field")
        title = row.get("title") or ""
        doc_id = str(row.get("_id", row.get("id", f"{source_key(path)}:{n}")))
        if doc_id in seen:
            raise DatasetError(
                f"{path}:{n} repeats the id {doc_id!r} of line {seen[doc_id]}: ids must be unique "
                "(one would silently replace the other)"
            )
        seen[doc_id] = n
        meta: dict[str, Any] = {"source": str(path.resolve()), "chunk": 0, "line": n}
        if title:
            meta["title"] = title
        extra = row.get("metadata") or {}
        if not isinstance(extra, dict):
            raise DatasetError(f"{path}:{n}: 'metadata' must be a JSON object, got {type(extra).__name__}")
        for k, v in extra.items():
            if isinstance(v, (str, int, float, bool)) and v == v:  # NaN: Chroma drops it (never equal on re-index)
                meta[k] = v
        yield Chunk(id=doc_id, text=f"{title} {text}".strip() if title else text, metadata=meta)


def chunk_file(path: Path, chunk_size: int = 1000, overlap: int = 200) -> list[Chunk]:
    """A JSONL file's rows (one chunk each), or a text file split by :func:`split_text`."""
    if path.suffix.lower() in JSONL_SUFFIXES:
        return list(_jsonl_chunks(path))
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not text
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc})") from exc
    key = source_key(path)
    src = str(path.resolve())
    return [
        Chunk(id=f"{key}:{i}", text=piece, metadata={"source": src, "chunk": i, "start_char": start})
        for i, (start, piece) in enumerate(split_text(text, chunk_size, overlap))
    ]


def iter_chunks(
    files: Iterable[Path], chunk_size: int = 1000, overlap: int = 200
) -> Iterator[tuple[Path, list[Chunk]]]:
    """``(file, its chunks)`` one file at a time, so indexing holds one file's chunks in memory."""
    for f in files:
        yield f, chunk_file(f, chunk_size, overlap)
