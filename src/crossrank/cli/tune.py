"""``crossrank tune``: time every CPU path for a model on this CPU, print the table, cache the decision.

``backend="auto"`` does this by itself the first time a model is used on a CPU; this command
measures again (after a runtime upgrade, or on a quiet machine after a noisy first start) and
shows what the decision came from.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from crossrank.cli import common


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tune`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "tune", help="measure the CPU paths for a model and cache what backend='auto' runs"
    )
    p.add_argument("--model", default=None, help="cross-encoder folder or Hub id (default: $CROSSRANK_MODEL)")
    p.add_argument("--quantize", default="auto", choices=["auto", "int8", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores this process may use)")
    p.add_argument("--trust-remote-code", action="store_true", help="let the export run the model's own code")
    p.add_argument("--dry-run", action="store_true", help="measure and print, but keep the cached decision")
    p.add_argument("--json", action="store_true", help="print the decision and every measurement as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Measure, cache (unless ``--dry-run``) and print the decision table."""
    from crossrank.model_files import inspect_model, resolve_model_dir
    from crossrank.scoring.engine import retune

    name = common.model(args)
    info = inspect_model(resolve_model_dir(name), name=name)
    decision = retune(
        info,
        quantize=args.quantize,
        num_threads=args.threads,
        trust_remote_code=args.trust_remote_code,
        progress=not args.json,
        save=not args.dry_run,
    )
    if args.json:
        print(json.dumps(decision.to_json()))
    else:
        print(decision.table())
        from crossrank.scoring.tuning import decision_path

        where = "not saved (--dry-run)" if args.dry_run else f"saved: {decision_path(decision.key)}"
        print(
            f"\nauto runs {decision.backend}-{decision.quantize}, batch {decision.batch_size}, "
            f"{decision.threads} threads ({where})"
        )
    return 0
