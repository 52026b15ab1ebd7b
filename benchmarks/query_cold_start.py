"""`crossrank query` as a one-off process: with the embedder's cached ONNX export, and without it.

`crossrank index` exports the collection's embedder once (see ``crossrank.retrieval.embedder_cache``);
a later query process then embeds with ONNX Runtime instead of importing sentence-transformers and
torch. This script runs the same ``crossrank query --json`` in fresh processes, alternating the two
ways (``CROSSRANK_EMBEDDER_EXPORT=0`` switches the export off), over an existing collection and a
shared ``CROSSRANK_CACHE_DIR`` (one untimed query first builds the reranker's export and decision),
and prints the median wall and CPU seconds per process, what each imported and whether the two
returned the same hits. CPU model, ISA flags and the load average are printed with the table.

    python benchmarks/query_cold_start.py --db DIR --collection NAME --model MODEL [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from typing import Any

from first_score import run_python  # sibling script: one fresh-process timer

QUERY = "how do I rerank inside LangChain?"

# Runs the command's entry point, then reports which heavy modules the process imported.
CHILD = """
import contextlib, io, json, sys
from crossrank.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
res = json.loads(out.getvalue()) if code == 0 else {}
print(json.dumps({"code": code, "embedder_runtime": res.get("embedder_runtime"), "backend": res.get("backend"),
                  "hits": [[h["id"], h["score"], h["distance"]] for h in res.get("hits", [])],
                  "loaded": [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules]}))
"""


def run_child(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One fresh ``crossrank`` process: its report, plus wall and CPU seconds as the parent saw them."""
    row = run_python(CHILD, argv, env)
    if row["code"] != 0:
        raise SystemExit(f"crossrank {' '.join(argv[:1])} exited {row['code']}")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="the Chroma folder (crossrank index --db)")
    p.add_argument("--collection", required=True)
    p.add_argument("--model", required=True, help="the cross-encoder (folder or exported folder)")
    p.add_argument("--query", default=QUERY)
    p.add_argument("--runs", type=int, default=5, help="fresh processes per way (median)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from crossrank.cpuinfo import describe
    from crossrank.retrieval.embedder_cache import ENV

    query = ["query", args.query, "--db", args.db, "--collection", args.collection, "--model", args.model, "--json"]
    base = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    ways = {"cached ONNX export": {**base, ENV: "1"}, "sentence-transformers": {**base, ENV: "0"}}
    load = os.getloadavg()[0]
    warm = run_child(query, ways["cached ONNX export"])  # untimed: reranker export, tuning decision, page cache
    if warm["embedder_runtime"] != "onnxruntime (cached export)":
        raise SystemExit(f"no cached export is used ({warm['embedder_runtime']}): run `crossrank index` first")
    rows: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    for _ in range(max(1, args.runs)):  # alternating, so drift on a noisy machine hits both alike
        for way, env in ways.items():
            rows[way].append(run_child(query, env))
    ref = rows["sentence-transformers"][0]["hits"]
    fast = [r["hits"] for r in rows["cached ONNX export"]]
    ids_equal = all([h[0] for h in hits] == [h[0] for h in ref] for hits in fast)
    gaps = [abs(a[i] - b[i]) for hits in fast for a, b in zip(hits, ref) for i in (1, 2) if a[i] is not None]
    max_gap = max(gaps, default=0.0)
    summary = {
        way: {
            "embedder_runtime": rs[0]["embedder_runtime"],
            "backend": rs[0]["backend"],
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "cpu_s": statistics.median(r["cpu_s"] for r in rs),
            "loaded": rs[0]["loaded"],
        }
        for way, rs in rows.items()
    }
    cpu = describe()
    if args.json:
        out = {"cpu": cpu, "load_average": load, "runs": args.runs, "same_ids": ids_equal, "max_abs_diff": max_gap}
        print(json.dumps({**out, **summary}))
        return 0
    print(f"CPU: {cpu}; load average {load:.1f} at the start; Python {platform.python_version()}")
    print(f"query: {args.query!r} over {args.collection!r}; reranker {args.model} ({warm['backend']})\n")
    print("| query embedded by | process wall s | CPU s | imported |")
    print("|---|---:|---:|---|")
    for way, row in summary.items():
        loaded = ", ".join(row["loaded"]) or "none of torch, sentence-transformers, transformers"
        print(f"| {way} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {loaded} |")
    ratio = summary["sentence-transformers"]["wall_s"] / summary["cached ONNX export"]["wall_s"]
    print(
        f"\nmedian of {args.runs} fresh processes each, alternating; {ratio:.1f}x faster with the export; "
        f"same hits in the same order: {'yes' if ids_equal else 'NO'} (scores and distances within {max_gap:.1e})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
