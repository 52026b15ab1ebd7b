"""``crossrank index``: chunk .txt/.md/.jsonl files into a Chroma collection (re-indexing replaces)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from crossrank.cli import common


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``index`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "index", help="index .txt/.md/.jsonl files into a Chroma collection"
    )
    p.add_argument("paths", nargs="+")
    common.add_store_args(p)
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
    pipe = common.pipeline(args, create=True, with_model=False)
    overlap = args.overlap if args.overlap is not None else args.chunk_size // 5
    rep = pipe.index_paths(
        args.paths, chunk_size=args.chunk_size, overlap=overlap, progress=not args.json and not args.quiet
    )
    out = {
        "files": rep.files,
        "chunks": rep.chunks,
        "removed_stale": rep.removed,
        "collection": rep.collection,
        "total_in_collection": rep.count,
        "seconds": round(rep.seconds, 2),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"indexed {rep.chunks} chunks from {rep.files} files into '{rep.collection}' "
            f"({rep.count} in collection, {rep.removed} stale chunks removed) in {rep.seconds:.1f}s"
        )
    return 0
