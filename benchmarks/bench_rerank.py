"""Benchmark the scoring paths side by side (same as `crossrank bench`); prints a Markdown table.

    python benchmarks/bench_rerank.py --model ../shared/models/crossrank-minilm-l6-scifact \
        --dataset ../shared/data/beir-scifact            # add --quick for the headline workload only
"""

from __future__ import annotations

import sys

from crossrank.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
