"""The ``crossrank`` command: index, query, demo, eval, bench, tune, serve, score-pairs, distill, finetune, export.

Each command module has ``add_parser(subparsers)`` and ``run(args) -> int``; shared argument
groups live in :mod:`crossrank.cli.common`. Errors are one line on stderr that says what to do,
with exit status 2; ``--json`` prints machine-readable results on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence

from crossrank.errors import CrossrankError


def build_parser() -> argparse.ArgumentParser:
    """The ``crossrank`` argument parser with every subcommand registered."""
    from crossrank.cli import bench, demo, distill, export, finetune, index, query, score_pairs, serve, tune
    from crossrank.cli import eval as evaluate  # the module, not the builtin

    p = argparse.ArgumentParser(prog="crossrank", description="Cross-encoder reranking over Chroma.")
    p.add_argument("--version", action="version", version=f"crossrank {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (index, query, demo, evaluate, bench, serve, score_pairs, distill, finetune, tune, export):
        command.add_parser(sub)
    return p


def _version() -> str:
    from crossrank import __version__

    return __version__


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """A warning as the CLI says it: ``crossrank: warning: ...``, not Python's file, line and source."""
    return f"crossrank: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a ``CrossrankError`` becomes ``crossrank: error: ...`` on stderr and exit 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):  # no "Loading weights" bars either (read when huggingface_hub is imported)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    python_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    t = time.perf_counter()
    try:
        return int(args.func(args))
    except CrossrankError as exc:
        print(f"crossrank: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"crossrank: interrupted after {time.perf_counter() - t:.1f}s", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = python_format  # main() also runs in-process (tests, notebooks)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
