"""``crossrank index``: chunk .txt/.md/.jsonl files into a Chroma collection (re-indexing embeds only what changed).

``--late-interaction MODEL`` also stores every chunk's token vectors beside the collection (see
:mod:`crossrank.retrieval.late_stage`); without paths it only brings those vectors in step with the
collection as it is (``--rebuild`` starts them over).

After indexing, the collection's embedder is exported to ONNX once into crossrank's cache (see
:mod:`crossrank.retrieval.embedder_cache`), so a later ``crossrank query`` embeds without importing
torch; ``CROSSRANK_EMBEDDER_EXPORT=0`` skips it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crossrank.cli import common


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``index`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "index", help="index .txt/.md/.jsonl files into a Chroma collection"
    )
    p.add_argument("paths", nargs="*", help="files or folders (optional with --late-interaction)")
    common.add_store_args(p)
    common.add_late_args(p, indexing=True)
    p.add_argument("--chunk-size", type=int, default=1000, help="characters per chunk (default 1000)")
    p.add_argument(
        "--overlap", type=int, default=None, help="characters shared by neighbouring chunks (default: a fifth)"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Index the paths; report files, chunks and stale chunks removed (one line, or JSON)."""
    from crossrank.errors import InvalidArgumentError

    late = common.late_spec(args)
    if not args.paths and late is None:
        raise InvalidArgumentError("name the files or folders to index (or --late-interaction MODEL to store vectors)")
    if args.rebuild and late is None:
        raise InvalidArgumentError("--rebuild rebuilds the late-interaction vectors: add --late-interaction MODEL")
    extra = {"late": late, "late_store": args.late_store} if late is not None else {}
    pipe = common.pipeline(args, create=bool(args.paths), with_model=False, **extra)
    progress = not args.json and not args.quiet
    if not args.paths:  # the vectors only, for the collection as it is
        return _report(args, None, pipe.index_late(rebuild=args.rebuild, progress=progress), pipe)
    if args.rebuild:  # start the vectors over; indexing the paths then syncs them again (rep.late)
        pipe.index_late(rebuild=True, progress=progress)
    overlap = args.overlap if args.overlap is not None else args.chunk_size // 5
    rep = pipe.index_paths(args.paths, chunk_size=args.chunk_size, overlap=overlap, progress=progress)
    return _report(args, rep, rep.late, pipe, _export_embedder(pipe.embedder, progress))


def _export_embedder(spec: str, progress: bool) -> dict[str, Any]:
    """The embedder exported once into the cache, so later ``crossrank query`` processes skip torch."""
    import time

    from crossrank.retrieval.embedder_cache import ensure_cached_export

    said: list[bool] = []

    def say() -> None:  # only when an export starts: nothing to say when it is already cached
        said.append(True)
        print("exporting the embedder to ONNX once, for fast queries ...", end="\r", file=sys.stderr, flush=True)

    t = time.perf_counter()
    path, status = ensure_cached_export(spec, on_export=say if progress else None)
    if said:
        print(" " * 60, end="\r", file=sys.stderr, flush=True)
    if path is None:
        return {"status": "not exported", "reason": status}
    return {"status": status, "path": str(path), "seconds": round(time.perf_counter() - t, 2)}


def _report(args: argparse.Namespace, rep: Any, sync: Any, pipe: Any, export: dict[str, Any] | None = None) -> int:
    """One line per part (chunks into Chroma, vectors into the late store), or one JSON object."""
    late = None
    if sync is not None:
        late = {**sync.to_dict(), "store": str(pipe.late.store_path)}
    if rep is None:
        if args.json:
            print(json.dumps({"late": late}))
        else:
            print(_late_line(sync))
        return 0
    out = {
        "files": rep.files,
        "chunks": rep.chunks,
        "embedded": rep.embedded,
        "unchanged": rep.chunks - rep.embedded,
        "removed_stale": rep.removed,
        "collection": rep.collection,
        "total_in_collection": rep.count,
        "seconds": round(rep.seconds, 2),
    }
    if late is not None:
        out["late"] = late
    if export is not None:
        out["embedder_export"] = export
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"indexed {rep.chunks} chunks from {rep.files} files into '{rep.collection}' "
            f"({rep.embedded} embedded, {rep.chunks - rep.embedded} unchanged; {rep.count} in collection, "
            f"{rep.removed} stale chunks removed) in {rep.seconds:.1f}s"
        )
        if export is not None and export["status"] == "exported":
            print(f"embedder exported to ONNX for fast queries (once, {export['seconds']:.1f}s): {export['path']}")
        if sync is not None:
            print(_late_line(sync))
    return 0


def _late_line(sync: Any) -> str:
    return (
        f"late-interaction vectors: {sync.chunks} chunks ({sync.encoded} encoded, {sync.unchanged} unchanged, "
        f"{sync.deleted} removed), store {sync.store_bytes / 1e6:.1f} MB, {sync.seconds:.1f}s"
    )
