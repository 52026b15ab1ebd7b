"""Tokenization's share of a warm rerank call, with the document token cache off and on.

    python benchmarks/token_share.py --model ../shared/models/crossrank-minilm-l6-scifact \
        --dataset ../shared/data/beir-scifact [--candidates 100,20] [--repeats 15] [--json out.json]

RAG reranks the same chunks for many queries. Each call here scores the same documents (``crossrank
bench``'s fixed workload: SciFact abstracts cut to exactly 200 tokens) against a different query,
on the model's default path (``backend="auto"``). "off" is the token cache disabled
(``CROSSRANK_TOKEN_CACHE_MB=0``): every document tokenized on every call, as before the cache;
"on" is the cache warm. Per call, from ``RerankStats``: ``tokenize_ms`` (query tokenizing,
document ids, pair assembly), ``model_ms`` (forward passes) and ``total_ms`` (the whole
``rerank``); medians over ``--repeats`` calls per setting, settings alternating. The issue's
target: tokenization ≤ 5% of a warm 100-candidate call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from crossrank import Reranker
from crossrank.cli.bench import passages
from crossrank.cpuinfo import describe
from crossrank.jsonl import iter_jsonl
from crossrank.scoring.token_cache import DEFAULT_MB, set_token_cache_mb

TARGET_SHARE = 0.05


def queries(dataset: Path, n: int) -> list[str]:
    """The first ``n`` SciFact queries: a different query per call, over the same documents."""
    out = [str(row["text"]) for _, row in iter_jsonl(dataset / "queries.jsonl")]
    return out[:n]


def measure(model: str, dataset: Path, candidates: list[int], repeats: int, cache_mb: float) -> dict[str, Any]:
    """Per candidates count and setting: medians of tokenize / model / total ms and the tokenize share."""
    rr = Reranker(model).warmup()
    qs = queries(dataset, repeats + 2)
    docs_all = passages(model, dataset / "corpus.jsonl", 200, max(candidates))
    rows = []
    for n in candidates:
        docs = docs_all[:n]
        runs: dict[str, list[Any]] = {"off": [], "on": []}
        for r in range(repeats):
            for setting in ("off", "on") if r % 2 == 0 else ("on", "off"):
                set_token_cache_mb(0 if setting == "off" else cache_mb)
                if setting == "on":
                    rr.rerank(qs[-1], docs)  # fill the cache (it is emptied while off)
                runs[setting].append(rr.rerank(qs[r], docs).stats)
        for setting, stats in runs.items():
            tok = statistics.median(s.tokenize_ms for s in stats)
            total = statistics.median(s.total_ms for s in stats)
            rows.append(
                {
                    "candidates": n,
                    "token_cache": setting,
                    "tokenize_ms": tok,
                    "model_ms": statistics.median(s.model_ms for s in stats),
                    "total_ms": total,
                    "tokenize_share": statistics.median(s.tokenize_ms / s.total_ms for s in stats),
                    "cache_hits": statistics.median(s.token_cache_hits for s in stats),
                }
            )
    set_token_cache_mb(cache_mb)
    return {"cpu": describe(), "backend": rr.backend_name, "batch_size": rr.batch_size, "rows": rows}


def table(res: dict[str, Any]) -> str:
    lines = [
        f"CPU: {res['cpu']} · backend: {res['backend']} (batch {res['batch_size']}) · 200-token documents, "
        "the same documents every call, a new query each call",
        "",
        "| candidates | token cache | tokenize ms | model ms | total ms | tokenize share | docs from cache |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['candidates']} | {r['token_cache']} | {r['tokenize_ms']:.2f} | {r['model_ms']:.0f} | "
            f"{r['total_ms']:.0f} | {r['tokenize_share']:.2%} | {r['cache_hits']:.0f} |"
        )
    for r in res["rows"]:
        if r["candidates"] == 100 and r["token_cache"] == "on":
            ok = r["tokenize_share"] <= TARGET_SHARE
            lines += [
                "",
                f"target: tokenization ≤ {TARGET_SHARE:.0%} of a warm 100-candidate call: "
                f"{r['tokenize_share']:.2%}, {'met' if ok else 'NOT met'}",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    ap.add_argument("--candidates", default="100", help="documents per call, comma-separated (default 100)")
    ap.add_argument("--repeats", type=int, default=15, help="timed calls per setting and candidates count")
    ap.add_argument("--cache-mb", type=float, default=DEFAULT_MB, help="the token cache's size when on")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    candidates = [int(c) for c in args.candidates.split(",") if c.strip()]
    res = measure(args.model, Path(args.dataset), candidates, args.repeats, args.cache_mb)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
