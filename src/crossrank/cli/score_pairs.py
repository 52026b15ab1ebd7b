"""``crossrank score-pairs IN OUT``: score a large (query, document) pair set from Parquet or JSON lines.

Streams: a batch of rows is read, scored and written before the next is read, with a progress
bar on stderr. One process by default; ``--ray`` runs Ray Data ``map_batches`` over an actor pool
(``--actors`` models), writing the same file in the same row order.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from crossrank.cli import common
from crossrank.errors import InvalidArgumentError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``score-pairs`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "score-pairs", help="score (query, document) pairs from Parquet/JSONL into a file", description=__doc__
    )
    p.add_argument("input", type=Path, help="a .parquet or .jsonl file with query and document columns")
    p.add_argument("output", type=Path, help="where to write the rows with a score column (.parquet or .jsonl)")
    common.add_model_args(p)
    p.add_argument("--query-field", default="query")
    p.add_argument("--document-field", default="document")
    p.add_argument("--score-field", default="score")
    p.add_argument("--batch-rows", type=int, default=1024, help="rows read, scored and written at a time")
    p.add_argument("--ray", action="store_true", help="score with Ray Data over an actor pool")
    p.add_argument("--actors", type=int, default=2, help="with --ray: model actors in the pool")
    p.add_argument("--num-cpus-per-actor", type=float, default=1.0, help="with --ray: CPUs each model actor holds")
    p.add_argument("--num-gpus-per-actor", type=float, default=0.0, help="with --ray: e.g. 1 with --device cuda")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Score the file and say how many rows went where."""
    from tqdm import tqdm

    from crossrank.server.pairs import count_rows, file_format, score_pairs_file

    if args.batch_rows < 1:
        raise InvalidArgumentError(f"--batch-rows must be >= 1, got {args.batch_rows}")
    file_format(args.input)
    file_format(args.output)
    if args.input.resolve() == args.output.resolve():
        raise InvalidArgumentError("the output file must differ from the input file")
    model = common.model(args)
    opts = common.reranker_kwargs(args)
    fields = {"query_field": args.query_field, "document_field": args.document_field, "score_field": args.score_field}
    t = time.perf_counter()
    with tqdm(
        total=count_rows(args.input), unit="pair", disable=args.no_progress, file=sys.stderr, desc="scoring"
    ) as bar:
        if args.ray:
            from crossrank.server.ray import score_pairs_file_ray

            rows = score_pairs_file_ray(
                model,
                args.input,
                args.output,
                reranker_options=opts,
                actors=args.actors,
                batch_rows=args.batch_rows,
                num_cpus_per_actor=args.num_cpus_per_actor,
                num_gpus_per_actor=args.num_gpus_per_actor,
                progress=bar.update,
                **fields,
            )
        else:
            from crossrank.reranker import Reranker

            rows = score_pairs_file(
                Reranker(model, **opts),
                args.input,
                args.output,
                batch_rows=args.batch_rows,
                progress=bar.update,
                **fields,
            )
    dt = time.perf_counter() - t
    print(f"scored {rows} pairs in {dt:.1f} s ({rows / dt if dt else 0:.0f} pairs/s) -> {args.output}", file=sys.stderr)
    return 0
