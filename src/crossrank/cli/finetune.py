"""``crossrank finetune``: train a cross-encoder on (query, positive) pairs with mined hard negatives.

See :mod:`crossrank.training.finetune` for the stages. ``--teacher`` turns it into cross-encoder
distillation (e.g. ``--layers 2`` for a shallower, faster reranker). Resumable: run the same
command again after an interrupt.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from crossrank.cli import common
from crossrank.cli.distill import add_training_args, format_metrics


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``finetune`` on the ``crossrank`` subparsers."""
    from crossrank.retrieval.first_stage import SOURCES
    from crossrank.training.finetune import DEFAULT_LENGTH_CAP, LABEL_LOSSES, TEACHER_LOSSES

    losses = list(dict.fromkeys(LABEL_LOSSES + TEACHER_LOSSES))
    p: argparse.ArgumentParser = subparsers.add_parser(
        "finetune",
        help="fine-tune a cross-encoder on your pairs (hard negatives from the first stage), or distil one",
        description="Train a cross-encoder reranker on (query, positive) pairs with hard negatives mined from the "
        "first stage; the output folder is served by Reranker(OUT) on every backend. Resumable.",
    )
    p.add_argument("--train", required=True, help="a BEIR folder (train split) or JSONL of query/positive[/negatives]")
    p.add_argument("--out", required=True, help="folder for the trained cross-encoder (and the run's work files)")
    p.add_argument("--base", default=None, help="model to start from (default: the teacher, else $CROSSRANK_MODEL)")
    p.add_argument("--teacher", default=None, help="cross-encoder whose scores become soft labels (distillation)")
    p.add_argument(
        "--loss",
        default=None,
        choices=losses,
        help=f"without --teacher: {', '.join(LABEL_LOSSES)} (default listwise); "
        f"with: {', '.join(TEACHER_LOSSES)} (default margin-mse)",
    )
    p.add_argument("--layers", type=int, default=None, help="keep only the base's first N transformer layers")
    common.add_store_args(p)
    p.add_argument(
        "--mine-from",
        type=common.comma_list(common.choice(SOURCES)),
        default=["dense", "bm25"],
        help=f"first stages to draw negatives from, comma list of {', '.join(SOURCES)} (default dense,bm25)",
    )
    p.add_argument("--candidates", type=int, default=30, help="top-k of each first stage (default 30)")
    p.add_argument("--negatives", type=int, default=3, help="negatives per positive (default 3)")
    p.add_argument("--groups-per-positive", type=int, default=1, help="groups drawn per positive (default 1)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per pair (default: chosen from the data)")
    p.add_argument(
        "--max-length-cap",
        type=int,
        default=DEFAULT_LENGTH_CAP,
        help=f"upper bound of the length chosen from the data (default {DEFAULT_LENGTH_CAP})",
    )
    add_training_args(p, batch_size=4, learning_rate=5e-5, eval_fraction=0.1)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Fine-tune and print the held-out table."""
    from crossrank.training.common import keep_freed_memory
    from crossrank.training.finetune import FinetuneConfig, finetune

    keep_freed_memory()  # this process only trains: reuse freed activations (see the function)

    config = common.config_from_args(FinetuneConfig, args, progress=not args.json)
    report = finetune(config)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    losses = f", {report.losses[0]:.4f} → {report.losses[-1]:.4f}" if report.losses else ""
    print(f"cross-encoder saved to {report.out} ({report.steps} steps, loss {report.loss}{losses})")
    print(
        f"max length {report.max_length} tokens; base {report.base}"
        + (f", {report.layers} layers" if report.layers else "")
    )
    print(f"held-out first stage alone: {format_metrics(report.first_stage)}")
    print(f"held-out reranked: before {format_metrics(report.before)} → after {format_metrics(report.after)}")
    print(f"use it: crossrank query TEXT --model {report.out}  (MODEL_CARD.md describes the run)")
    return 0
