"""The ranking-quality table: first stages alone and reranked, truncate vs windows, fusion on/off.

    python benchmarks/quality_table.py --model ../shared/models/crossrank-minilm-l6-scifact \
        --dataset ../shared/data/beir-scifact --json quality.json          # all 300 test queries

A thin wrapper over ``crossrank eval`` (:func:`crossrank.cli.eval.run_eval`), which computes the
rows: BM25, dense (Chroma + all-MiniLM-L6-v2) and hybrid (RRF of both) top-100 candidates from
:func:`crossrank.retrieval.first_stage.first_stage`, the same code as ``Pipeline(hybrid=True)``,
each reranked under every setting (max_length × long_documents) with and without fusion, with one
score cache per max_length. This script adds what the README quotes besides the table: nDCG@10 on
the queries whose relevant abstract is longer than 256 tokens, and the calibration of sigmoid
thresholds on the hybrid candidates. Latency is the rerank time per query on the hybrid pass,
where nothing is cached yet; the other first stages give the same number of candidates.

``--reference N`` adds the loses-nothing check on the first N queries' dense top-100:
sentence-transformers ``CrossEncoder.predict`` (fp32) against crossrank's torch backend (the order
must be identical) and the default fast path (nDCG@10 difference).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from crossrank import Reranker
from crossrank.cli.eval import run_eval
from crossrank.results import RankedResults
from crossrank.retrieval.beir import BeirDataset, dense_pipeline, evaluate, first_stage_runs, load_beir, ndcg_at_k

SETTINGS = {  # name: (max_length, long_documents, first stages)
    "256 truncate": (256, "truncate", ("hybrid", "dense", "bm25")),
    "256 windows": (256, "windows", ("hybrid", "dense", "bm25")),
    "512 truncate": (512, "truncate", ("hybrid",)),
    "512 windows": (512, "windows", ("hybrid",)),
}
STAGES = ("hybrid", "dense", "bm25")


def first_stages(
    ds: BeirDataset, queries: list[tuple[str, str]], k: int, db: str | None, stages: tuple[str, ...] = STAGES
) -> dict[str, dict[str, list[str]]]:
    """Each first stage's top-``k`` ids per query, from the one ``first_stage()`` code path."""
    dense = dense_pipeline(ds, db=db) if {"dense", "hybrid"} & set(stages) else None
    return first_stage_runs(ds, queries, stages, candidates=k, dense=dense)[0]


def groups(names: list[str]) -> dict[tuple[int, tuple[str, ...]], list[str]]:
    """The named settings as ``crossrank eval`` runs: {(max_length, first stages): [long_documents, ...]}."""
    out: dict[tuple[int, tuple[str, ...]], list[str]] = {}
    for name in names:
        max_length, mode, stages = SETTINGS[name]
        out.setdefault((max_length, stages), []).append(mode)
    return out


def rerank_group(
    model: str,
    ds: BeirDataset,
    queries: list[tuple[str, str]],
    group: tuple[int, tuple[str, ...]],
    modes: list[str],
    k: int,
    db: str | None,
) -> tuple[list[dict[str, Any]], dict[tuple[Any, ...], dict[str, list[str]]]]:
    """One ``crossrank eval`` run: the group's first stages under ``max_length`` × ``modes`` × fusion none/rrf.

    Returns its rows (``setting`` added, and ``calibration`` on each hybrid row without fusion)
    and every row's per-query ranking keyed by (first stage, max_length, long_documents, fusion).
    """
    max_length, stages = group
    runs: dict[tuple[Any, ...], dict[str, list[str]]] = {}
    calib: dict[tuple[Any, ...], list[tuple[float, bool]]] = {}  # (sigmoid score, relevant), hybrid, no fusion

    def observe(setting: dict[str, Any], qid: str, res: RankedResults) -> None:
        """Keep each row's ranking, and the hybrid candidates' sigmoid scores for calibration."""
        key = (setting["first_stage"], setting["max_length"], setting["long_documents"], setting["fusion"])
        runs.setdefault(key, {})[qid] = [r.id or "" for r in res]
        if setting["first_stage"] == "hybrid" and setting["fusion"] == "none":
            rel = ds.qrels.get(qid, {})
            calib.setdefault(key, []).extend(
                (1 / (1 + math.exp(-r.raw_score)), rel.get(r.id or "", 0) > 0) for r in res
            )

    report = run_eval(
        ds,
        model=model,
        limit=len(queries),
        candidates=k,
        first_stage=stages,
        fusion=["none", "rrf"],
        max_length=max_length,
        long_documents=modes,
        db=db,
        observe=observe,
    )
    rows = report["rows"]
    for row in rows:
        key = (row["first_stage"], row["max_length"], row["long_documents"], row["fusion"])
        row["setting"] = f"{row['max_length']} {row['long_documents']}"
        row["backend"] = report["backend"]
        row["rerank_ms_p50"] = row["rerank_ms"]["p50"]
        if key in calib:
            row["calibration"] = calibration(calib[key])
    return rows, runs


THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def calibration(pairs: list[tuple[float, bool]]) -> list[dict[str, float]]:
    """Precision / recall of "relevant" among the candidates when keeping sigmoid scores >= t."""
    total_rel = sum(r for _, r in pairs) or 1
    out = []
    for t in THRESHOLDS:
        kept = [r for s, r in pairs if s >= t]
        hits = sum(kept)
        out.append(
            {
                "threshold": t,
                "logit": math.log(t / (1 - t)),
                "kept_per_query": len(kept),
                "precision": hits / len(kept) if kept else float("nan"),
                "recall": hits / total_rel,
            }
        )
    return out


def long_doc_subset(ds: BeirDataset, model: str, queries: list[tuple[str, str]], max_length: int) -> list[str]:
    """Queries with a relevant document that does not fit beside the query at ``max_length``."""
    rr = Reranker(model, max_length=max_length)
    out = []
    for qid, text in queries:
        rel = [d for d, g in ds.qrels.get(qid, {}).items() if g > 0 and d in ds.corpus]
        q_tokens = rr.count_tokens([text])[0]
        if any(n + q_tokens + 3 > max_length for n in rr.count_tokens([ds.doc_text(d) for d in rel])):
            out.append(qid)
    return out


def by_score(ids: list[str], scores: list[float]) -> list[str]:
    """Ids from best to worst score; ties keep the first-stage order."""
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], i))]


def reference(
    model: str, ds: BeirDataset, queries: list[tuple[str, str]], dense: dict[str, list[str]]
) -> dict[str, Any]:
    """sentence-transformers vs crossrank torch (same order?) and the fast default on the dense top-100."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(model, device="cpu")
    torch_rr = Reranker(model, backend="torch")
    fast = Reranker(model)
    fast.warmup()  # the backend's full name (e.g. openvino-int8) is known once it is loaded
    runs: dict[str, dict[str, list[str]]] = {"st": {}, "torch": {}, fast.backend_name: {}}
    identical = 0
    max_diff = 0.0
    for qid, text in tqdm(queries, desc="reference (sentence-transformers)", unit="query"):
        ids = dense[qid]
        docs = [ds.doc_text(d) for d in ids]
        st = [float(x) for x in ce.predict([(text, d) for d in docs], batch_size=32)]
        tr = torch_rr.score(text, docs)
        fa = fast.score(text, docs)
        max_diff = max(max_diff, max(abs(a - b) for a, b in zip(st, tr)))
        for name, scores in (("st", st), ("torch", tr), (fast.backend_name, fa)):
            runs[name][qid] = by_score(ids, scores)
        identical += runs["st"][qid] == runs["torch"][qid]
    metrics = {name: evaluate(r, ds.qrels)["ndcg@10"] for name, r in runs.items()}
    overlap = {
        name: statistics.mean(len(set(r[q][:10]) & set(runs["st"][q][:10])) / 10 for q in r) for name, r in runs.items()
    }
    return {
        "queries": len(queries),
        "ndcg@10": metrics,
        "top10_overlap_vs_st": overlap,
        "torch_identical_order": identical,
        "torch_max_abs_diff": max_diff,
    }


FIDELITY = (("onnx", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


def fidelity(
    model: str, ds: BeirDataset, queries: list[tuple[str, str]], dense: dict[str, list[str]]
) -> dict[str, Any]:
    """Every query's dense top-100 through fp32 and each fast variant: the nDCG@10 gap with less noise.

    The fp32 ONNX export matches crossrank's torch backend within 1e-4 (tests), and torch matches
    sentence-transformers' order exactly (``--reference``), so fp32 stands in for the reference here
    at a third of its cost.
    """
    runs: dict[str, dict[str, list[str]]] = {}
    for backend, quantize in FIDELITY:
        rr = Reranker(model, backend=backend, quantize=quantize)
        rr.warmup()
        runs[rr.backend_name] = {}
        for qid, text in tqdm(queries, desc=f"fidelity {rr.backend_name}", unit="query"):
            ids = dense[qid]
            scores = rr.score(text, [ds.doc_text(d) for d in ids])
            runs[rr.backend_name][qid] = by_score(ids, scores)
    ref = runs[next(iter(runs))]
    judged = [q for q in ref if any(g > 0 for g in ds.qrels.get(q, {}).values())]
    per_query = {name: {q: ndcg_at_k(r[q], ds.qrels[q], 10) for q in judged} for name, r in runs.items()}
    out: dict[str, Any] = {"queries": len(queries), "variants": {}}
    base = per_query[next(iter(runs))]
    for name, r in runs.items():
        diffs = [per_query[name][q] - base[q] for q in base]
        out["variants"][name] = {
            "ndcg@10": statistics.mean(per_query[name].values()),
            "diff_vs_fp32": statistics.mean(diffs),
            "diff_stderr": statistics.stdev(diffs) / math.sqrt(len(diffs)),
            "queries_changed": sum(abs(d) > 1e-9 for d in diffs),
            "top10_overlap_vs_fp32": statistics.mean(len(set(r[q][:10]) & set(ref[q][:10])) / 10 for q in r),
        }
    return out


def table(first: dict[str, dict[str, float]], rows: list[dict[str, Any]], subset: dict[str, Any]) -> str:
    """The README's quality table, with the long-document subset column."""
    lines = [
        "| first stage (top-100) | rerank | fusion | nDCG@10 | R@10 | long-doc queries nDCG@10 | rerank ms/query |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for stage in ("bm25", "dense", "hybrid"):
        m = first[stage]
        lines.append(
            f"| {stage} | — | — | {m['ndcg@10']:.4f} | {m['recall@10']:.3f} | {subset['first'][stage]:.4f} | — |"
        )
        for r in (x for x in rows if x["first_stage"] == stage):
            m = r["metrics"]
            lines.append(
                f"| {stage} | {r['setting']} | {r['fusion']} | {m['ndcg@10']:.4f} | {m['recall@10']:.3f} | "
                f"{r['subset_ndcg@10']:.4f} | {r['rerank_ms_p50']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build the table (or only ``--fidelity``), print it, and write ``--json`` if asked."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N test queries (default: all)")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--db", default=None, help="Chroma folder for the embedded corpus (reused between runs)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list from {', '.join(SETTINGS)}")
    ap.add_argument("--reference", type=int, default=0, help="also compare with sentence-transformers on N queries")
    ap.add_argument(
        "--fidelity", action="store_true", help="fp32 vs bf16/int8 on every query's dense top-100 (and nothing else)"
    )
    ap.add_argument("--json", default=None, help="write every number (and the runs) to this file")
    args = ap.parse_args(argv)

    ds = load_beir(args.dataset)
    queries = ds.test_queries(args.limit)
    if args.fidelity:
        dense = first_stages(ds, queries, args.candidates, args.db, ("dense",))["dense"]
        fid = fidelity(args.model, ds, queries, dense)
        print("| dense top-100, truncate | nDCG@10 | vs fp32 (± s.e.) | queries changed | top-10 overlap vs fp32 |")
        print("|---|---:|---:|---:|---:|")
        for name, v in fid["variants"].items():
            print(
                f"| {name} | {v['ndcg@10']:.4f} | {v['diff_vs_fp32']:+.4f} ± {v['diff_stderr']:.4f} | "
                f"{v['queries_changed']} / {fid['queries']} | {v['top10_overlap_vs_fp32']:.3f} |"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(fid, indent=1))
        return 0
    stages = first_stages(ds, queries, args.candidates, args.db)
    first = {s: evaluate(r, ds.qrels) for s, r in stages.items()}
    long_q = long_doc_subset(ds, args.model, queries, 256)
    subset: dict[str, Any] = {
        "max_length": 256,
        "queries": len(long_q),
        "first": {s: evaluate({q: r[q] for q in long_q}, ds.qrels)["ndcg@10"] for s, r in stages.items()},
    }
    rows: list[dict[str, Any]] = []
    for group, modes in groups([n.strip() for n in args.settings.split(",") if n.strip()]).items():
        group_rows, runs = rerank_group(args.model, ds, queries, group, modes, args.candidates, args.db)
        for r in group_rows:
            ranked = runs[(r["first_stage"], r["max_length"], r["long_documents"], r["fusion"])]
            r["subset_ndcg@10"] = evaluate({q: ranked[q] for q in long_q}, ds.qrels)["ndcg@10"]
            rows.append(r)
        print(table(first, rows, subset), flush=True)  # so a later failure loses nothing measured
    out: dict[str, Any] = {
        "queries": len(queries),
        "candidates": args.candidates,
        "first_stage": first,
        "long_doc_subset": subset,
        "rows": rows,
    }
    if args.reference:
        out["reference"] = reference(args.model, ds, queries[: args.reference], stages["dense"])
    out["table"] = table(first, rows, subset)
    for r in rows:
        if "calibration" in r:
            n = len(queries)
            out["table"] += f"\n\ncalibration, {r['setting']}, hybrid top-{args.candidates} (normalize='sigmoid'):\n"
            out["table"] += "| threshold | raw logit | kept per query | precision | recall |\n"
            out["table"] += "|---:|---:|---:|---:|---:|\n"
            out["table"] += "\n".join(
                f"| {c['threshold']} | {c['logit']:+.2f} | {c['kept_per_query'] / n:.2f} | {c['precision']:.3f} | "
                f"{c['recall']:.3f} |"
                for c in r["calibration"]
            )
    print(out["table"])
    print(f"\nlong-doc queries: {len(long_q)} of {len(queries)} have a relevant abstract longer than 256 tokens")
    if "reference" in out:
        print(json.dumps(out["reference"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
