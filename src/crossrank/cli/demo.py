"""``crossrank demo``: index the bundled demo corpus and show how reranking reorders the results."""

from __future__ import annotations

import argparse
import json
from typing import Any

from crossrank import demo_data
from crossrank.cli import common
from crossrank.jsonl import read_jsonl

DEMO_COLLECTION = "crossrank-demo"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="index a bundled sample corpus and show how reranking reorders results"
    )
    common.add_store_args(p)
    common.add_model_args(p)
    p.add_argument("--top-n", type=int, default=5)
    p.add_argument("--candidates", type=common.positive_int, default=30, help="first-stage candidates (default 30)")
    p.add_argument("--query", action="append", help="your own query (repeatable) instead of the examples")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Index the demo corpus if needed, then print before/after columns for each query (or JSON)."""
    corpus = demo_data.corpus_path()
    rows = read_jsonl(corpus)
    queries = args.query or demo_data.queries()
    topics = {str((row.get("metadata") or {}).get("topic", "")) for row in rows}
    pipe = common.pipeline(args, create=True, collection=args.collection or DEMO_COLLECTION)
    if pipe.count() != len(rows):
        if not args.json:
            print(f"indexing the demo corpus ({len(rows)} passages) with {common.embedder_label(pipe.embedder)} …")
        pipe.index_paths([corpus], progress=not args.json)
    out = []
    if not args.json:
        print(
            f"\ncrossrank demo — {len(rows)} passages on {len(topics)} topics, with near-misses\n"
            f"stage 1: {common.embedder_label(pipe.embedder)} embeddings in Chroma · stage 2: cross-encoder "
            f"{pipe.reranker.model_name}\n"
        )
    for q in queries:
        res = pipe.search(q, top_n=args.top_n, candidates=args.candidates)
        out.append(res.to_dict())
        if args.json:
            continue
        print(f"▶ {q}")
        found = pipe.retrieve(q, candidates=args.top_n)
        print("  before (vector search)" + " " * 34 + "after (reranked)")
        for i in range(args.top_n):
            left = common.shorten(found[i][0].text, 52) if i < len(found) else ""
            h = res.hits[i] if i < len(res.hits) else None
            right = f"{common.shorten(h.text, 52)}  [{h.score:+.2f}, was #{h.first_stage_rank}]" if h else ""
            print(f"  {i + 1}. {left:<54} {i + 1}. {right}")
        moved = sum(1 for h in res.hits if h.first_stage_rank != h.rank)
        print(
            f"  {moved} of the top {len(res.hits)} changed place · retrieve {res.retrieve_ms:.0f} ms · "
            f"rerank {res.candidates} candidates {res.rerank_ms:.0f} ms ({res.backend})\n"
        )
    if args.json:
        print(
            json.dumps(
                {"model": pipe.reranker.model_name, "embedder": pipe.embedder, "queries": out}, ensure_ascii=False
            )
        )
    else:
        print(f"scores: raw logits of {pipe.reranker.model_name} (higher = more relevant).")
        if "scifact" in pipe.reranker.model_name:
            print(
                "note: this offline model was trained on scientific claims (see its MODEL_CARD.md); it is "
                "competent on the science and health queries and unreliable out of domain."
            )
    return 0
