"""The speed/quality curve of ``Cascade.fast``: prune on a short prefix, rerank the best k in full.

    python benchmarks/cascade_curve.py --model ../shared/models/crossrank-minilm-l6-scifact \
        --dataset ../shared/data/beir-scifact [--first-stage bm25|dense --db DIR] [--json out.json]

Quality: every SciFact test claim's first-stage top-100, scored once by the full model (its own
length, truncated) and once per prune length; each (length, k) point is then exact arithmetic on
those scores (the full model reorders the prune stage's top k). Speed: the real ``Cascade.fast``
objects on the headline workload (100 candidates × 200 tokens, ``crossrank bench``'s passages),
timed alternately with the full model and sentence-transformers in one run, medians. The table
names the CPU; the default point of ``Cascade.fast`` is chosen from it (README).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crossrank import Cascade, Reranker
from crossrank.cli.bench import passages
from crossrank.cpuinfo import describe
from crossrank.retrieval.beir import dense_pipeline, evaluate, first_stage_runs, load_beir


def scores_for(
    rr: Reranker, ds: Any, cands: dict[str, list[str]], queries: list[tuple[str, str]], what: str
) -> dict[str, np.ndarray]:
    out = {}
    for qid, text in tqdm(queries, desc=what, unit="query", leave=False):
        out[qid] = np.asarray(rr.score(text, [ds.doc_text(d) for d in cands[qid]]), dtype=np.float64)
    return out


def cascade_order(prune: np.ndarray, full: np.ndarray, k: int) -> list[int]:
    """The cascade's final order: the prune stage's top ``k`` by full score, then the rest in prune order."""
    by_prune = sorted(range(len(prune)), key=lambda i: (-prune[i], i))
    head = sorted(by_prune[:k], key=lambda i: (-full[i], by_prune.index(i)))
    return head + by_prune[k:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--first-stage", default="bm25", choices=["bm25", "dense", "hybrid"])
    ap.add_argument("--db", default=None, help="Chroma folder for dense/hybrid (built once if missing)")
    ap.add_argument("--lengths", default="32,48,64,96,128")
    ap.add_argument("--keeps", default="10,20,30,50")
    ap.add_argument("--queries", type=int, default=0, help="first N test claims (0: all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--speed-points", default="64:20,64:30,48:20,96:20", help="length:k points timed for speed")
    ap.add_argument("--no-st", action="store_true", help="skip the sentence-transformers baseline")
    ap.add_argument(
        "--first-model",
        default=None,
        help="prune with this (smaller) reranker instead of --model on a prefix; length 0 = its own length",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    ds = load_beir(Path(args.dataset))
    qs = ds.test_queries(args.queries or None)
    dense = None
    if args.first_stage != "bm25":
        dense = dense_pipeline(ds, db=args.db)
    runs, _ = first_stage_runs(ds, qs, [args.first_stage], candidates=100, dense=dense)
    cands = runs[args.first_stage]
    lengths = [int(x) for x in args.lengths.split(",")]
    keeps = [int(x) for x in args.keeps.split(",")]

    full_rr = Reranker(args.model)
    full = scores_for(full_rr, ds, cands, qs, f"full model ({full_rr.max_length} tokens)")
    base = evaluate({q: [cands[q][i] for i in np.argsort(-full[q], kind="stable")] for q, _ in qs}, ds.qrels)
    quality: list[dict[str, Any]] = []
    for length in lengths:
        pruner = Reranker(args.first_model or args.model, max_length=length or None)
        prune = scores_for(pruner, ds, cands, qs, f"prune at {pruner.max_length} tokens")
        alone = evaluate({q: [cands[q][i] for i in np.argsort(-prune[q], kind="stable")] for q, _ in qs}, ds.qrels)
        quality.append({"length": length, "k": 0, "ndcg@10": alone["ndcg@10"]})
        for k in keeps:
            run = {q: [cands[q][i] for i in cascade_order(prune[q], full[q], k)] for q, _ in qs}
            quality.append({"length": length, "k": k, "ndcg@10": evaluate(run, ds.qrels)["ndcg@10"]})

    # Speed: the real objects on the headline workload, alternating, medians.
    docs = passages(args.model, Path(args.dataset) / "corpus.jsonl", 200, 100)
    query = "Vitamin D deficiency is associated with a higher risk of cancer"
    fns: dict[str, Any] = {"full": lambda: full_rr.score(query, docs)}
    for point in args.speed_points.split(","):
        length, k = (int(x) for x in point.split(":"))
        c = Cascade.fast(args.model, first_length=length or None, keep=k, first_model=args.first_model)
        fns[f"cascade {length}:{k}"] = lambda c=c: c.rerank(query, docs)
    if not args.no_st:
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(args.model, device="cpu")
        fns["st"] = lambda: ce.predict([(query, d) for d in docs], batch_size=32)
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {m: [] for m in fns}
    for r in range(args.repeats):
        for m in list(fns) if r % 2 == 0 else list(reversed(fns)):
            t = time.perf_counter()
            fns[m]()
            times[m].append(time.perf_counter() - t)
    ms = {m: statistics.median(v) * 1000 for m, v in times.items()}

    print(f"CPU: {describe()}")
    print(f"backend: {full_rr.backend_name}; first stage: {args.first_stage} top-100; {len(qs)} SciFact test claims")
    print(f"prune model: {args.first_model or args.model} (length 0 = its own)")
    print(f"full model ({full_rr.max_length} tokens): nDCG@10 {base['ndcg@10']:.4f}\n")
    print("| prune length | k | nDCG@10 | Δ vs full |")
    print("|---:|---:|---:|---:|")
    for row in quality:
        keep = str(row["k"] or "– (prune only)")
        print(f"| {row['length']} | {keep} | {row['ndcg@10']:.4f} | {row['ndcg@10'] - base['ndcg@10']:+.4f} |")
    print("\n| method (100 × 200 tokens) | ms/query | × vs full | × vs sentence-transformers |")
    print("|---|---:|---:|---:|")
    for m, v in ms.items():
        vs_st = f"{ms['st'] / v:.2f}" if "st" in ms else "–"
        print(f"| {m} | {v:.0f} | {ms['full'] / v:.2f} | {vs_st} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu": describe(), "full": base, "quality": quality, "ms": ms, "backend": full_rr.backend_name})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
