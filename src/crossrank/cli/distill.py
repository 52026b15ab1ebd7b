"""``crossrank distill``: train the collection's embedder on a cross-encoder's scores, then re-embed the collection.

See :mod:`crossrank.training.distill` for the stages. A run is resumable: run the same command
again after an interrupt and it continues from the last finished stage or checkpoint.
``--late-interaction`` trains a ColBERT-style multi-vector student on the same data instead
(:mod:`crossrank.training.late`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from crossrank.cli import common
from crossrank.errors import InvalidArgumentError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``distill`` on the ``crossrank`` subparsers."""
    from crossrank.retrieval.first_stage import SOURCES
    from crossrank.training.distill import DISTILL_LOSSES
    from crossrank.training.queries import PSEUDO_KINDS

    p: argparse.ArgumentParser = subparsers.add_parser(
        "distill",
        help="train the collection's bi-encoder on a cross-encoder's scores and re-embed the collection",
        description="Distil a cross-encoder (the teacher) into the collection's bi-encoder (the student), on the "
        "collection's own first-stage candidates; then re-embed the collection with the student and swap it in "
        "once verified (the old collection is kept). Resumable: run the same command again after an interrupt.",
    )
    common.add_store_args(p)
    p.add_argument("--out", required=True, help="folder for the trained student (and the run's work files)")
    p.add_argument("--teacher", default=None, help="cross-encoder id or folder (default: $CROSSRANK_MODEL or ms-marco)")
    p.add_argument("--student", default=None, help="bi-encoder to train (default: the collection's own embedder)")
    p.add_argument("--queries", default=None, help="training queries: a JSONL file, or a BEIR folder (train split)")
    p.add_argument(
        "--pseudo-queries",
        type=int,
        nargs="?",
        const=1000,
        default=0,
        metavar="N",
        help="add N queries cut from the collection's documents (default N: 1000); needs no generation model",
    )
    p.add_argument(
        "--pseudo-kinds",
        type=common.comma_list(common.choice(PSEUDO_KINDS)),
        default=list(PSEUDO_KINDS),
        help=f"comma list from {', '.join(PSEUDO_KINDS)} (default: all, in turn)",
    )
    p.add_argument("--first-stage", default="dense", choices=SOURCES, help="where candidates come from")
    p.add_argument("--candidates", type=int, default=20, help="first-stage candidates per query (default 20)")
    p.add_argument("--negatives", type=int, default=3, help="candidates per group besides the best (default 3)")
    p.add_argument("--groups-per-query", type=int, default=1, help="groups drawn per query (default 1)")
    p.add_argument(
        "--loss",
        default="kl-in-batch",
        choices=DISTILL_LOSSES,
        help="kl: listwise KL over each group; kl-in-batch: the same, the batch's other documents as negatives; "
        "margin-mse (default kl-in-batch)",
    )
    p.add_argument("--scale", type=float, default=20.0, help="student similarity = scale × cosine (default 20)")
    p.add_argument("--temperature", type=float, default=1.0, help="kl temperature (default 1)")
    add_training_args(p, batch_size=32, learning_rate=5e-5, eval_fraction=0.05, epochs=3.0)
    p.add_argument("--max-seq-length", type=int, default=None, help="student tokens per text (default: its own)")
    p.add_argument("--no-reembed", action="store_true", help="train only; leave the collection as it is")
    p.add_argument("--no-swap", action="store_true", help="build the re-embedded collection beside the old one")
    late = p.add_argument_group(
        "late interaction",
        "--late-interaction trains a ColBERT-style multi-vector student (sentence-transformers MultiVectorEncoder) "
        "on the same queries, candidates and teacher scores, from the --student bi-encoder (default: the "
        "collection's embedder); the collection is left as it is (store the student's document vectors with "
        "`crossrank index --late-interaction OUT`)",
    )
    late.add_argument("--late-interaction", action="store_true", help="train a late-interaction student")
    late.add_argument("--dim", type=int, default=None, help=f"token vector width (default {_LATE['dim']})")
    late.add_argument(
        "--query-length", type=int, default=None, help=f"query tokens, [MASK]-padded (default {_LATE['query_length']})"
    )
    late.add_argument(
        "--document-length", type=int, default=None, help=f"document tokens (default {_LATE['document_length']})"
    )
    late.add_argument(
        "--train-document-length",
        type=int,
        default=None,
        help="cap document tokens during training only (faster steps; default: --document-length)",
    )
    late.add_argument(
        "--projection-lr",
        dest="projection_learning_rate",
        type=float,
        default=None,
        help="learning rate of the token projection, which starts random (default: --lr)",
    )
    late.add_argument(
        "--no-query-expansion", action="store_true", help="do not pad queries with [MASK] to --query-length"
    )
    p.set_defaults(func=run)
    return p


_LATE = {"dim": 128, "query_length": 32, "document_length": 256}
_LATE_ONLY = ("dim", "query_length", "document_length", "train_document_length", "projection_learning_rate")


def add_training_args(
    p: argparse.ArgumentParser, *, batch_size: int, learning_rate: float, eval_fraction: float, epochs: float = 1.0
) -> None:
    """The trainer options ``distill`` and ``finetune`` share."""
    from crossrank.backends.table import BACKEND_CHOICES
    from crossrank.training.common import DEVICES, PRECISIONS

    p.add_argument("--epochs", type=float, default=epochs, help=f"passes over the training groups (default {epochs:g})")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"groups per step (default {batch_size})")
    p.add_argument("--lr", type=float, default=learning_rate, help=f"learning rate (default {learning_rate})")
    p.add_argument("--warmup", type=float, default=0.1, help="warmup, a share of the steps (default 0.1)")
    p.add_argument(
        "--eval-fraction", type=float, default=eval_fraction, help=f"queries held out (default {eval_fraction})"
    )
    p.add_argument("--evaluations", type=int, default=4, help="held-out evaluations = checkpoints (default 4)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 mixed precision where the hardware has native bf16 (a recent GPU; AMX or AVX-512 BF16 on "
        "CPU), else fp32",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="auto: the GPU when torch sees one (CUDA_VISIBLE_DEVICES picks it), else the CPU",
    )
    p.add_argument("--teacher-backend", default="auto", choices=BACKEND_CHOICES, help="backend scoring the teacher")
    p.add_argument("--teacher-max-length", type=int, default=None, help="teacher tokens per pair (default: declared)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep trainer checkpoints after a finished run")
    p.add_argument("--restart", action="store_true", help="discard this --out's unfinished run and start over")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Distil, re-embed, and print what changed."""
    from crossrank.retrieval.chroma import DEFAULT_COLLECTION
    from crossrank.training.common import keep_freed_memory
    from crossrank.training.distill import DistillConfig, distill

    if args.late_interaction:
        return _run_late(args)
    given = [_flag(n) for n in _LATE_ONLY if getattr(args, n) is not None]
    if given or args.no_query_expansion:
        raise InvalidArgumentError(
            f"{', '.join(given or ['--no-query-expansion'])}: options of --late-interaction (a multi-vector student)"
        )
    keep_freed_memory()  # this process only trains: reuse freed activations (see the function)

    config = common.config_from_args(
        DistillConfig,
        args,
        collection=args.collection or DEFAULT_COLLECTION,
        reembed=not args.no_reembed,
        swap=not args.no_swap,
        progress=not args.json,
    )
    report = distill(config)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(f"student saved to {report.out} ({report.steps} steps, loss {report.loss}{_losses(report.losses)})")
    print(f"queries: {report.queries['train']} for training, {report.queries['held_out']} held out")
    print(f"held-out: before {format_metrics(report.before)} → after {format_metrics(report.after)}")
    swap = report.swap
    if swap and swap.get("swapped"):
        print(
            f"collection '{swap['collection']}' now holds {swap['count']} documents embedded by the student; the old "
            f"one is kept as '{swap['previous']}' until you delete it"
        )
    elif swap:
        print(f"re-embedded collection: '{swap['collection']}' ({swap['count']} documents); the old one is unchanged")
    return 0


def _run_late(args: argparse.Namespace) -> int:
    """``--late-interaction``: train the multi-vector student and print where it is and how it did."""
    from crossrank.retrieval.chroma import DEFAULT_COLLECTION
    from crossrank.training.common import keep_freed_memory
    from crossrank.training.late import LateDistillConfig, distill_late

    if args.scale != 20.0:
        raise InvalidArgumentError("--scale is the bi-encoder student's: MaxSim scores are not scaled")
    if args.no_reembed or args.no_swap:
        raise InvalidArgumentError(
            "--no-reembed / --no-swap: a late-interaction run re-embeds nothing (the collection is left as it is)"
        )
    keep_freed_memory()  # this process only trains: reuse freed activations (see the function)
    shape = {n: getattr(args, n) for n in _LATE_ONLY if getattr(args, n) is not None}
    config = common.config_from_args(
        LateDistillConfig,
        args,
        collection=args.collection or DEFAULT_COLLECTION,
        reembed=False,
        swap=False,
        progress=not args.json,
        query_expansion=not args.no_query_expansion,
        **{**_LATE, **shape},
    )
    report = distill_late(config)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(
        f"late-interaction student saved to {report.out} ({report.steps} steps, loss {report.loss}"
        f"{_losses(report.losses)})"
    )
    print(f"queries: {report.queries['train']} for training, {report.queries['held_out']} held out")
    print(f"held-out MaxSim reranking: before {format_metrics(report.before)} → after {format_metrics(report.after)}")
    for e in report.evaluations:
        metrics = {k: v for k, v in e.items() if k not in ("step", "epoch")}
        print(f"  step {e['step']} (epoch {e['epoch']:.2f}): {format_metrics(metrics)}")
    print(f"store its document vectors beside the collection: crossrank index --late-interaction {report.out}")
    return 0


def _flag(field: str) -> str:
    return "--projection-lr" if field == "projection_learning_rate" else f"--{field.replace('_', '-')}"


def format_metrics(m: dict[str, float]) -> str:
    """``ndcg@10 0.6421 · mrr@10 ...`` for the one-line summaries."""
    return " · ".join(f"{k} {v:.4f}" for k, v in m.items()) or "—"


def _losses(losses: list[float]) -> str:
    return f", {losses[0]:.4f} → {losses[-1]:.4f}" if losses else ""
