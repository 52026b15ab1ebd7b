"""Batch scoring of large (query, document) pair sets from Parquet or JSON lines, streamed.

``crossrank score-pairs IN OUT`` reads ``IN`` a batch of rows at a time, scores each batch's pairs
(one forward pass per query in the batch, through :meth:`Reranker.score_pairs`) and appends the
rows with a ``score`` column to ``OUT``, so memory stays flat whatever the file's size. The format
of each file follows its suffix: ``.parquet`` (needs pyarrow, in the ``ray`` extra) or
``.jsonl``/``.json``. With ``--ray`` the same rows go through Ray Data (:mod:`crossrank.server.ray`)
and are written by the same writer, so both paths give the same file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from crossrank.errors import DatasetError, InvalidArgumentError, missing_extra
from crossrank.jsonl import iter_jsonl
from crossrank.reranker import Reranker

Rows = dict[str, list[Any]]  # column name -> values, one batch


def file_format(path: Path) -> str:
    """``parquet`` or ``jsonl`` from the file's suffix; anything else is a usage error."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise InvalidArgumentError(f"{path}: use a .parquet or .jsonl file (got {suffix or 'no suffix'!r})")


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise missing_extra("pyarrow", "ray") from exc
    return pa, pq


def count_rows(path: Path) -> int | None:
    """Rows in ``path`` when cheap to know (Parquet metadata), else None."""
    if file_format(path) == "parquet":
        _, pq = _pyarrow()
        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


def iter_batches(path: Path, batch_rows: int) -> Iterator[Rows]:
    """``path``'s rows, ``batch_rows`` at a time, as columns."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if file_format(path) == "parquet":
        _, pq = _pyarrow()
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield batch.to_pydict()
        return
    rows: list[dict[str, Any]] = []
    for _, row in iter_jsonl(path):
        rows.append(row)
        if len(rows) == batch_rows:
            yield _columns(rows)
            rows = []
    if rows:
        yield _columns(rows)


def _columns(rows: list[dict[str, Any]]) -> Rows:
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return {k: [r.get(k) for r in rows] for k in keys}


def pairs_of(batch: Rows, query_field: str, document_field: str, first_row: int = 0) -> list[tuple[str, str]]:
    """The (query, document) pairs of a batch; a missing column or a non-string value names the row."""
    for name in (query_field, document_field):
        if name not in batch:
            raise DatasetError(
                f"no {name!r} column (columns: {', '.join(batch)}); name it with --query-field/--document-field"
            )
    out = []
    for i, (q, d) in enumerate(zip(batch[query_field], batch[document_field])):
        if not isinstance(q, str) or not isinstance(d, str):
            raise DatasetError(f"row {first_row + i}: {query_field!r} and {document_field!r} must be strings")
        out.append((q, d))
    return out


class PairWriter:
    """Appends scored batches to a Parquet or JSON-lines file; ``close()`` finishes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = file_format(path)
        self.rows = 0
        self._parquet: Any = None
        self._jsonl: Any = None
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "jsonl":
            self._jsonl = path.open("w", encoding="utf-8")

    def write(self, batch: Rows) -> None:
        n = len(next(iter(batch.values()), []))
        if self.format == "jsonl":
            keys = list(batch)
            for i in range(n):
                self._jsonl.write(json.dumps({k: batch[k][i] for k in keys}, ensure_ascii=False) + "\n")
        else:
            pa, pq = _pyarrow()
            table = pa.Table.from_pydict(batch)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self.rows += n

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._parquet is not None:
            self._parquet.close()
        elif self.format == "parquet":  # no rows: still leave a valid (empty) file
            pa, pq = _pyarrow()
            pq.write_table(pa.table({"score": pa.array([], pa.float64())}), self.path)

    def __enter__(self) -> PairWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def score_pairs_file(
    reranker: Reranker,
    source: Path,
    dest: Path,
    *,
    query_field: str = "query",
    document_field: str = "document",
    score_field: str = "score",
    batch_rows: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score every row of ``source`` into ``dest`` in one process; returns the rows written."""
    done = 0
    with PairWriter(dest) as out:
        for batch in iter_batches(source, batch_rows):
            pairs = pairs_of(batch, query_field, document_field, done)
            batch[score_field] = reranker.score_pairs(pairs)
            out.write(batch)
            done += len(pairs)
            if progress is not None:
                progress(len(pairs))
    return done
