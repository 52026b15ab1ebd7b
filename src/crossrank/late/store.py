"""``LateVectorStore``: every chunk's token vectors on disk beside its Chroma collection.

Layout of a store directory (by default ``<chroma persist dir>/crossrank-late/<collection>/``)::

    index.sqlite         id -> (text hash, shard, first row, token count, truncated); the model record
    vectors-00000.f16    token vectors, one row of ``dim`` values per token, appended (float16 or int8)
    vectors-00000.scale  int8 stores only: one float32 scale per row
    write.lock           held (flock) by the one process writing

A query reads only its candidates' rows: SQLite finds them by text hash (or id), the shards are
memory-mapped, and the rows are copied out of the map.

Crash safety: a write appends the vectors past the end of the shard, ``fsync``\\ s the shard, and
only then commits all the rows' index entries in one SQLite transaction (synchronous=FULL). A
process killed before the commit leaves unreferenced bytes at the end of a shard (garbage, never
read; :meth:`LateVectorStore.compact` rewrites the shards without it) and no index entry; killed
during the commit, SQLite rolls the transaction back. So every index entry points at complete,
durable vectors, and every entry's vectors are exactly those of the text whose hash it records:
an entry is never updated in place, a changed text gets new vectors and a new entry.

Staleness is therefore impossible by construction for lookups by text hash (the scorer's path:
a candidate's current text either has current vectors or none). What can go wrong is coverage: ids
Chroma has and the store lacks, or the reverse. :meth:`LateVectorStore.check_collection` detects
that (and an indexing run that was killed: a ``run`` marker set when a run starts and cleared by
its last commit) and names the fix.

Rebuilds under open readers: a handle reads the model record once and keeps it (its query
encoder was loaded for that model), while another process may ``--rebuild`` the store with
another model, precision or pooling. So the record is written with a random ``generation`` token
(a new one every time a model is bound to an emptied store), and every lookup reads the record
and token in the same SQLite read transaction as its rows and shard bytes: a handle whose store
was rebuilt since it read the record gets :class:`LateStoreChangedError`, never the rebuilt
store's vectors. :meth:`LateVectorStore.refresh` moves a handle onto the rebuilt store when the
caller's model still matches it (a scorer does that itself).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.late.errors import (
    LateModelMismatchError,
    LateStoreChangedError,
    LateStoreError,
    LateStoreOutOfSyncError,
)
from crossrank.late.maxsim import Packed

STORE_DIRNAME = "crossrank-late"
FORMAT_VERSION = 1
#: A shard is closed once it holds this many bytes; the next write opens a new one.
SHARD_BYTES = 1 << 30
_SUFFIX = {"fp16": ".f16", "int8": ".i8"}
_DTYPE = {"fp16": np.float16, "int8": np.int8}
STORE_PRECISIONS: tuple[str, ...] = ("fp16", "int8")
_SQL_VARS = 500  # ids per IN (...) query, under SQLite's variable limit
#: What must agree between a store's record and the model a caller reads or writes it with.
_MODEL_KEYS = ("fingerprint", "dim", "document_length", "precision", "pool_factor")


def text_hash(text: str) -> str:
    """The key a text's vectors are stored under: blake2b-128 of its UTF-8 bytes (exact text, no normalizing)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def store_path(persist_dir: str | os.PathLike[str], collection: str) -> Path:
    """Where a collection's store lives beside an embedded Chroma: ``<persist_dir>/crossrank-late/<collection>``."""
    return Path(persist_dir).expanduser() / STORE_DIRNAME / collection


def _chunks(items: Sequence[str], n: int = _SQL_VARS) -> Iterator[Sequence[str]]:
    for s in range(0, len(items), n):
        yield items[s : s + n]


class LateVectorStore:
    """Token vectors by Chroma id, on disk; see the module docs for the layout and the crash rules.

    ``LateVectorStore(path)`` opens (or, unless ``readonly``, creates) the store in ``path``. A new
    store records its model on the first :meth:`bind`; a store made by another model refuses it
    with :class:`LateModelMismatchError` naming the fix. ``readonly=True`` opens the index read-only
    (readers on shared storage: the indexer writes, every query process reads). Reads are
    thread-safe; writes take an exclusive lock file, so two indexers never interleave.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        db = self.path / "index.sqlite"
        if readonly:
            if not db.is_file():
                raise LateStoreError(
                    f"no late-interaction store at {self.path}: build it with "
                    "`crossrank index PATHS --collection NAME --late-interaction MODEL`"
                )
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LateStoreError(f"cannot create the late-interaction store at {self.path} ({exc})") from exc
        self._lock = threading.RLock()
        self._maps: dict[tuple[str, int], np.ndarray] = {}
        self._run_fd: int | None = None
        self._record: dict[str, Any] | None = None
        self._pinned: tuple[str, str | None] | None = None  # (record JSON, generation) this handle reads
        try:
            uri = f"file:{db}?mode=ro" if readonly else f"file:{db}"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=DELETE")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(
                    """
                    CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    CREATE TABLE IF NOT EXISTS vectors(
                        id TEXT PRIMARY KEY, text_hash TEXT NOT NULL, shard INTEGER NOT NULL,
                        row INTEGER NOT NULL, tokens INTEGER NOT NULL, truncated INTEGER NOT NULL DEFAULT 0);
                    CREATE INDEX IF NOT EXISTS vectors_by_hash ON vectors(text_hash);
                    """
                )
        except sqlite3.Error as exc:
            raise LateStoreError(f"cannot open the late-interaction index {db} ({exc})") from exc

    # ------------------------------------------------------------------ identity
    @classmethod
    def for_collection(
        cls, persist_dir: str | os.PathLike[str], collection: str, *, readonly: bool = False
    ) -> LateVectorStore:
        """The store beside an embedded Chroma's ``persist_dir`` for ``collection`` (see :func:`store_path`)."""
        return cls(store_path(persist_dir, collection), readonly=readonly)

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a store."""
        return (Path(path).expanduser() / "index.sqlite").is_file()

    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def record(self) -> dict[str, Any] | None:
        """The model that built the store (name, fingerprint, dim, document/query length), its
        ``precision`` (fp16 / int8) and ``pool_factor``; None for a store no model was bound to yet.

        Read once and kept: this handle reads the store as that model's from then on. A rebuild by
        another handle or process makes this handle's lookups raise :class:`LateStoreChangedError`
        (see :meth:`refresh`).
        """
        if self._record is None:
            with self._lock:
                raw, generation = self._identity_now()
                if raw is not None and self._record is None:
                    self._pin(raw, generation)
        return None if self._record is None else dict(self._record)

    def _identity_now(self) -> tuple[str | None, str | None]:
        """The record (its JSON) and generation token the index holds now (None, None for an empty store)."""
        with self._lock:
            rows = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('record', 'generation')"))
        return rows.get("record"), rows.get("generation")

    def _pin(self, raw: str, generation: str | None) -> None:
        """Read the store as holding this record's vectors from now on (forgetting maps of older shard files)."""
        if self._pinned != (raw, generation):
            self._maps.clear()
        self._record = dict(json.loads(raw))
        self._pinned = (raw, generation)

    @staticmethod
    def _describe_record(rec: Mapping[str, Any] | None) -> str:
        if rec is None:
            return "no model (emptied: a rebuild is under way)"
        return (
            f"{rec.get('name')!r} (fingerprint {rec.get('fingerprint')}, {rec.get('dim')} dims, {rec.get('precision')}"
            + (f", pool factor {rec['pool_factor']}" if rec.get("pool_factor") else "")
            + ")"
        )

    def _verify(self) -> None:
        """Raise :class:`LateStoreChangedError` if the store was rebuilt since this handle read its record.

        Call it under ``self._lock`` inside the read transaction (or write lock) that reads the rows,
        so the check and the rows see the same commit. A handle that had not seen a record yet
        (opened on an empty store) takes the one it finds now.
        """
        raw, generation = self._identity_now()
        if self._pinned is None:
            if raw is not None:
                self._pin(raw, generation)
            return
        if (raw, generation) != self._pinned:
            now = None if raw is None else dict(json.loads(raw))
            raise LateStoreChangedError(
                f"the late-interaction store at {self.path} was rebuilt since this process opened it: it held "
                f"vectors of {self._describe_record(self._record)}, it now holds {self._describe_record(now)}. "
                "Its vectors may not match the query encoder loaded for it: reopen the store (restart the server "
                "or query process) with the model it now records"
            )

    @staticmethod
    def _differences(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
        return [k for k in _MODEL_KEYS if k in wanted and current.get(k) != wanted.get(k)]

    def _check_expected(self, expect: Mapping[str, Any] | None) -> None:
        """Raise :class:`LateModelMismatchError` when the pinned record is not the model ``expect`` describes."""
        if expect is None or self._record is None:
            return
        diff = self._differences(self._record, expect)
        if diff:
            said = ", ".join(f"{k} {self._record.get(k)!r} (asked: {expect.get(k)!r})" for k in diff)
            raise LateModelMismatchError(
                f"the late-interaction store at {self.path} holds vectors of {self._record.get('name')!r}: {said}. "
                "Vectors of different models do not mix: query with the model the store records, or rebuild it "
                "with this one (crossrank index ... --late-interaction MODEL --rebuild)"
            )

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction under this handle's lock: what runs inside sees a single commit, and no
        writer can commit (nor a rebuild delete the shards' index) until it ends."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def refresh(self, *, expect: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Read the store's record again, after a rebuild by another handle or process; returns it.

        ``expect`` (a model record with ``precision`` / ``pool_factor``, as :meth:`check_model`
        takes) is the model the caller reads vectors for: if the rebuilt store holds another one,
        :class:`LateStoreChangedError` is raised and this handle stays on the old record (its lookups
        keep raising). A store emptied by a rebuild still under way returns None (lookups find
        nothing until the new model is bound; then this handle takes that record).
        """
        with self._lock:
            raw, generation = self._identity_now()
            if raw is None:
                self._record, self._pinned = None, None
                self._maps.clear()
                return None
            now = dict(json.loads(raw))
            diff = self._differences(now, expect) if expect is not None else []
            if diff:
                said = ", ".join(f"{k} {now.get(k)!r} (this process: {expect.get(k)!r})" for k in diff)  # type: ignore[union-attr]
                raise LateStoreChangedError(
                    f"the late-interaction store at {self.path} was rebuilt since this process opened it and now "
                    f"holds vectors of {self._describe_record(now)}: {said}. Restart the server or query process "
                    f"with the model the store now records ({now.get('name')}), or rebuild the store with this one"
                )
            self._pin(raw, generation)
            return dict(now)

    @property
    def precision(self) -> str:
        rec = self.record
        return str(rec["precision"]) if rec else "fp16"

    @property
    def dim(self) -> int | None:
        rec = self.record
        return int(rec["dim"]) if rec else None

    def describe(self) -> str:
        rec = self.record
        if rec is None:
            return f"empty late-interaction store at {self.path}"
        return (
            f"{rec['name']} (fingerprint {rec['fingerprint']}, {rec['dim']} dims, {rec['precision']}"
            + (f", pool factor {rec['pool_factor']}" if rec.get("pool_factor") else "")
            + ")"
        )

    def bind(
        self,
        model: dict[str, Any],
        *,
        precision: str = "fp16",
        pool_factor: int | None = None,
        fix: str = "crossrank index PATHS --collection NAME --late-interaction MODEL --rebuild",
    ) -> None:
        """Record ``model`` (a :class:`~crossrank.late.model.ModelRecord` dict) as the store's, or check it is.

        Raises :class:`LateModelMismatchError` (naming ``fix``) when the store holds vectors of
        another model, precision or pooling: vectors of two models do not mix.
        """
        if precision not in STORE_PRECISIONS:
            raise LateStoreError(f"store precision must be one of {', '.join(STORE_PRECISIONS)}, got {precision!r}")
        wanted = {**model, "precision": precision, "pool_factor": pool_factor or None}
        raw, generation = self._identity_now()  # what the store holds now, not what this handle read earlier
        if raw is None:
            self._require_writable()
            with self._lock, self._writer():
                raw, generation = self._identity_now()
                if raw is None:
                    raw, generation = json.dumps(wanted, sort_keys=True), uuid.uuid4().hex
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta(key, value) "
                        "VALUES('record', ?), ('version', ?), ('generation', ?)",
                        (raw, str(FORMAT_VERSION), generation),
                    )
                    self._pin(raw, generation)
                    return
        self._check_against(dict(json.loads(raw)), wanted, fix=fix)
        with self._lock:
            self._pin(raw, generation)  # the caller's model is the store's: read it as it is now

    def check_model(self, wanted: dict[str, Any], *, fix: str) -> None:
        """Raise :class:`LateModelMismatchError` unless ``wanted`` (model record + precision/pool) matches."""
        current = self.record
        if current is None:
            return
        self._check_against(current, wanted, fix=fix)

    def _check_against(self, current: dict[str, Any], wanted: dict[str, Any], *, fix: str) -> None:
        diff = self._differences(current, wanted)
        if diff:
            said = ", ".join(f"{k} {current.get(k)!r} (asked: {wanted.get(k)!r})" for k in diff)
            raise LateModelMismatchError(
                f"the late-interaction store at {self.path} holds vectors of {current.get('name')!r}: {said}. "
                f"Vectors of different models do not mix: query with the model that built it, or rebuild it "
                f"with `{fix}`"
            )

    # ------------------------------------------------------------------ reading
    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def ids(self) -> set[str]:
        """Every id with stored vectors."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM vectors")}

    def hashes(self, ids: Sequence[str] | None = None) -> dict[str, str]:
        """``id -> text hash`` for ``ids`` that have vectors (every id when None)."""
        out: dict[str, str] = {}
        with self._lock:
            if ids is None:
                return {r[0]: r[1] for r in self._db.execute("SELECT id, text_hash FROM vectors")}
            for part in _chunks(list(ids)):
                q = f"SELECT id, text_hash FROM vectors WHERE id IN ({','.join('?' * len(part))})"
                out.update({r[0]: r[1] for r in self._db.execute(q, tuple(part))})
        return out

    def _map(self, shard: int, kind: str, need_rows: int) -> np.ndarray:
        """The shard (or its scales) memory-mapped, re-mapped when it has grown past ``need_rows``."""
        key = (kind, shard)
        m = self._maps.get(key)
        if m is not None and m.shape[0] >= need_rows:
            return m
        rec = self.record
        if rec is None:
            raise LateStoreError(f"the late-interaction store at {self.path} has no model record")
        precision, dim = rec["precision"], int(rec["dim"])
        f = self._shard_file(shard, kind, precision)
        width = 1 if kind == "scale" else dim
        dtype = np.dtype(np.float32) if kind == "scale" else np.dtype(_DTYPE[precision])
        try:
            rows = f.stat().st_size // (width * dtype.itemsize)
            if rows < need_rows:
                raise LateStoreError(
                    f"{f} holds {rows} rows but the index points at row {need_rows - 1}: the store is damaged; "
                    "rebuild it (crossrank index ... --late-interaction MODEL --rebuild)"
                )
            m = np.memmap(f, dtype=dtype, mode="r", shape=(rows, width))
        except FileNotFoundError as exc:
            raise LateStoreError(f"{f} is missing: the store is damaged; rebuild it with --rebuild") from exc
        self._maps[key] = m
        return m

    def _read(self, shard: int, row: int, tokens: int) -> Packed:
        values = np.array(self._map(shard, "values", row + tokens)[row : row + tokens])
        scales = None
        if self._record is not None and self._record["precision"] == "int8":
            scales = np.array(self._map(shard, "scale", row + tokens)[row : row + tokens, 0])
        return Packed(values, scales)

    def get_by_hashes(
        self, hashes: Sequence[str], *, expect: Mapping[str, Any] | None = None
    ) -> dict[str, tuple[Packed, bool]]:
        """``text hash -> (vectors, truncated)`` for the hashes the store has (any id with that text).

        Raises :class:`LateStoreChangedError` when the store was rebuilt since this handle read its
        record, and :class:`LateModelMismatchError` when ``expect`` (the caller's model record with
        ``precision`` / ``pool_factor``) is not the model the store holds: checked in the same read
        transaction as the rows, so the vectors returned are always those of the record checked.
        """
        found: dict[str, tuple[int, int, int, bool]] = {}
        with self._snapshot():
            self._verify()
            self._check_expected(expect)
            for part in _chunks(list(dict.fromkeys(hashes))):
                q = (
                    "SELECT text_hash, shard, row, tokens, truncated FROM vectors "
                    f"WHERE text_hash IN ({','.join('?' * len(part))})"
                )
                for h, shard, row, tokens, trunc in self._db.execute(q, tuple(part)):
                    found.setdefault(h, (shard, row, tokens, bool(trunc)))
            return {h: (self._read(s, r, t), tr) for h, (s, r, t, tr) in found.items()}

    def get_by_ids(self, ids: Sequence[str], *, expect: Mapping[str, Any] | None = None) -> list[Packed | None]:
        """Each id's vectors, or None where the store has none (checked as :meth:`get_by_hashes` is)."""
        rows: dict[str, tuple[int, int, int]] = {}
        with self._snapshot():
            self._verify()
            self._check_expected(expect)
            for part in _chunks(list(dict.fromkeys(ids))):
                q = f"SELECT id, shard, row, tokens FROM vectors WHERE id IN ({','.join('?' * len(part))})"
                rows.update({i: (s, r, t) for i, s, r, t in self._db.execute(q, tuple(part))})
            return [self._read(*rows[i]) if i in rows else None for i in ids]

    def size_bytes(self) -> int:
        """Bytes on disk: shards, scales and the index."""
        return sum(f.stat().st_size for f in self.path.glob("*") if f.is_file())

    # ------------------------------------------------------------------ writing
    def _require_writable(self) -> None:
        if self.readonly:
            raise LateStoreError(f"the late-interaction store at {self.path} was opened read-only")

    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        """The exclusive write lock (a flock on ``write.lock``): one writing process at a time."""
        self._require_writable()
        fd = os.open(self.path / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def writer_active(self) -> bool:
        """Whether some process holds the run lock now (an indexing run is in progress)."""
        lock = self.path / "run.lock"
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def _shard_file(self, shard: int, kind: str, precision: str) -> Path:
        suffix = ".scale" if kind == "scale" else _SUFFIX[precision]
        return self.path / f"vectors-{shard:05d}{suffix}"

    def put(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: Sequence[Packed],
        truncated: Sequence[bool] | None = None,
    ) -> None:
        """Store each id's vectors for its text (replacing what the id had): append, fsync, then one commit."""
        self._require_writable()
        if not (len(ids) == len(texts) == len(vectors)):
            raise LateStoreError("put() needs as many ids, texts and vectors")
        if not ids:
            return
        rec = self.record
        if rec is None:
            raise LateStoreError("bind() a model to the store before putting vectors into it")
        precision, dim = rec["precision"], int(rec["dim"])
        dtype = np.dtype(_DTYPE[precision])
        row_bytes = dim * dtype.itemsize
        for i, v in zip(ids, vectors):
            if v.values.ndim != 2 or v.values.shape[1] != dim or v.values.dtype != dtype:
                raise LateStoreError(
                    f"vectors for {i!r} are {v.values.dtype} {v.values.shape}, the store keeps {dtype} (n, {dim})"
                )
            if (v.scales is None) != (precision != "int8"):
                raise LateStoreError(f"vectors for {i!r} do not match the store's {precision} form")
        with self._lock, self._writer():
            self._verify()  # rebuilt by another handle since this one bound its model: write nothing
            shard = int(self._meta("shard") or 0)
            values_file = self._shard_file(shard, "values", precision)
            if values_file.exists() and values_file.stat().st_size >= SHARD_BYTES:
                shard += 1
                values_file = self._shard_file(shard, "values", precision)
            scale_file = self._shard_file(shard, "scale", precision)
            size = values_file.stat().st_size if values_file.exists() else 0
            start = -(-size // row_bytes)  # past anything a killed writer left, on a row boundary
            if precision == "int8" and scale_file.exists():
                start = max(start, -(-scale_file.stat().st_size // 4))
            blob = b"".join(v.values.tobytes() for v in vectors)
            self._append(values_file, start * row_bytes, blob)
            if precision == "int8":
                scales = b"".join(np.asarray(v.scales, dtype=np.float32).tobytes() for v in vectors)
                self._append(scale_file, start * 4, scales)
            rows, row = [], start
            flags = list(truncated) if truncated is not None else [False] * len(ids)
            for i, t, v, tr in zip(ids, texts, vectors, flags):
                rows.append((i, text_hash(t), shard, row, v.tokens, int(bool(tr))))
                row += v.tokens
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('shard', ?)", (str(shard),))
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    def _append(self, f: Path, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` of ``f`` and make it durable (file and, when new, its directory)."""
        new = not f.exists()
        fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            dfd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def delete(self, ids: Iterable[str]) -> int:
        """Forget these ids' vectors (their bytes become garbage until :meth:`compact`); returns how many."""
        self._require_writable()
        gone = 0
        with self._lock, self._writer():
            self._verify()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for part in _chunks(list(ids)):
                    cur = self._db.execute(
                        f"DELETE FROM vectors WHERE id IN ({','.join('?' * len(part))})", tuple(part)
                    )
                    gone += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        return gone

    def clear(self) -> None:
        """Empty the store and forget its model (``--rebuild``)."""
        self._require_writable()
        with self._lock, self._writer():
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM vectors")
            self._db.execute("DELETE FROM meta")
            self._db.execute("COMMIT")
            self._record, self._pinned = None, None
            self._maps.clear()
            for f in self.path.glob("vectors-*"):
                f.unlink()

    def begin_run(self) -> None:
        """Start an indexing run: hold the run lock (one run at a time) and set the ``run`` marker.

        :meth:`finish_run` clears both. The kernel drops the lock of a killed process, so a marker
        that is set while nobody holds the lock tells a run that was killed (:meth:`unfinished_run`).
        """
        self._require_writable()
        fd = os.open(self.path / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._run_fd = fd
        with self._lock, self._writer():
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('run', ?)", (str(time.time()),))

    def finish_run(self) -> None:
        """End the run: clear the marker, release the run lock."""
        self._require_writable()
        with self._lock, self._writer():
            self._db.execute("DELETE FROM meta WHERE key='run'")
        self.abandon_run()

    def abandon_run(self) -> None:
        """Release the run lock but keep the marker (a run that failed: the next open reports it)."""
        fd, self._run_fd = self._run_fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def unfinished_run(self) -> bool:
        """Whether an indexing run started and neither finished nor is still running (it was killed)."""
        return self._meta("run") is not None and not self.writer_active()

    def compact(self) -> int:
        """Rewrite the referenced rows into one new shard and drop the old ones; returns the bytes saved.

        Crash-safe like :meth:`put`: the new shard is written and fsynced, the index switched to it in
        one commit, and only then are the old shards deleted.
        """
        self._require_writable()
        with self._lock, self._writer():
            self._verify()
            rec = self.record
            if rec is None:
                return 0
            before = self.size_bytes()
            precision = rec["precision"]
            rows = list(self._db.execute("SELECT id, text_hash, shard, row, tokens, truncated FROM vectors"))
            old = sorted(self.path.glob("vectors-*"))
            # Past every shard named anywhere, files included: a killed writer may have left a file with
            # the next number, and the new shard must be neither written into it nor deleted with it.
            on_disk = [int(f.name[8:13]) for f in old if f.name[8:13].isdigit()]
            shard = 1 + max([int(self._meta("shard") or 0), *(r[2] for r in rows), *on_disk])
            new_rows, row, values, scales = [], 0, [], []
            for i, h, s, r, t, tr in rows:
                p = self._read(s, r, t)
                values.append(p.values.tobytes())
                if p.scales is not None:
                    scales.append(np.asarray(p.scales, dtype=np.float32).tobytes())
                new_rows.append((i, h, shard, row, t, tr))
                row += t
            self._append(self._shard_file(shard, "values", precision), 0, b"".join(values))
            if precision == "int8":
                self._append(self._shard_file(shard, "scale", precision), 0, b"".join(scales))
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM vectors")
            self._db.executemany("INSERT INTO vectors VALUES (?, ?, ?, ?, ?, ?)", new_rows)
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('shard', ?)", (str(shard),))
            self._db.execute("COMMIT")
            self._maps.clear()
            for f in old:
                f.unlink(missing_ok=True)
            return before - self.size_bytes()

    # ------------------------------------------------------------------ consistency with Chroma
    def check_collection(self, collection_ids: Iterable[str], *, fix: str, examples: int = 3) -> None:
        """Raise :class:`LateStoreOutOfSyncError` (naming ``fix``) when the store and the collection disagree.

        Disagreement: an indexing run was killed (its marker is still set and no writer holds the
        lock), or ids in one and not the other.
        """
        if self.unfinished_run():
            raise LateStoreOutOfSyncError(
                f"an indexing run into the late-interaction store at {self.path} did not finish (killed?): "
                f"run `{fix}` again to complete it"
            )
        chroma = set(collection_ids)
        mine = self.ids()
        missing, extra = chroma - mine, mine - chroma
        if missing or extra:
            parts = []
            if missing:
                parts.append(
                    f"{len(missing)} chunk(s) of the collection have no vectors (e.g. {sorted(missing)[:examples]})"
                )
            if extra:
                parts.append(
                    f"{len(extra)} stored id(s) are no longer in the collection (e.g. {sorted(extra)[:examples]})"
                )
            raise LateStoreOutOfSyncError(
                f"the late-interaction store at {self.path} is out of step with its Chroma collection: "
                f"{'; '.join(parts)}. Bring it up to date with `{fix}`"
            )

    def close(self) -> None:
        with self._lock:
            self._maps.clear()
            self._db.close()
            if self._run_fd is not None:
                os.close(self._run_fd)
                self._run_fd = None

    def __enter__(self) -> LateVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LateVectorStore({str(self.path)!r}, {self.describe()}, {self.count()} ids)"
