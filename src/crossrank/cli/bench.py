"""``crossrank bench``: side-by-side speed, memory and ranking fidelity of the scoring paths.

Methods (one table, alternating order within each repeat, medians):
  (a) st            sentence_transformers.CrossEncoder.predict, torch fp32 — what LangChain's and
                    LlamaIndex's built-in rerankers run
  (b) torch         crossrank, torch backend
  (c) onnx-fp32     crossrank, ONNX Runtime fp32
  (d) onnx-int8     crossrank, ONNX Runtime dynamic int8 (the CPU default without bf16 units)
  (e) openvino-bf16 crossrank, OpenVINO bf16
  (f) openvino-int8 crossrank, OpenVINO static int8 (the CPU default where VNNI and OpenVINO are there)
Cold start and peak RSS are measured in fresh subprocesses, one per method. The crossrank methods
are :data:`crossrank.backends.table.BENCH_METHODS`; "st" is the baseline every ratio is against.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossrank.backends.table import BENCH_METHODS
from crossrank.cli import common
from crossrank.errors import InvalidArgumentError
from crossrank.jsonl import iter_jsonl

METHODS: tuple[str, ...] = ("st", *BENCH_METHODS)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="benchmark scoring paths side by side (speed, cold start, RSS, fidelity)"
    )
    p.add_argument("--model", default=None, help="cross-encoder folder (default: $CROSSRANK_MODEL)")
    p.add_argument("--dataset", required=True, help="BEIR folder for passages and fidelity (e.g. beir-scifact)")
    p.add_argument("--quick", action="store_true", help="headline workload only (100 candidates × 200 tokens)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default=None, help=f"comma list from {','.join(METHODS)}")
    p.add_argument("--fidelity-queries", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; print the Markdown tables (or everything but the table as JSON)."""
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else METHODS
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise InvalidArgumentError(f"unknown --methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    res = benchmark(
        common.model(args),
        Path(args.dataset),
        quick=args.quick,
        repeats=args.repeats,
        methods=methods,
        fidelity_queries=args.fidelity_queries,
    )
    print(json.dumps({k: v for k, v in res.items() if k != "table"}) if args.json else res["table"])
    return 0


def passages(model: str | Path, corpus: Path, tokens: int, n: int) -> list[str]:
    """The first ``n`` documents of a BEIR ``corpus.jsonl`` as "title text", each cut to exactly ``tokens`` tokens.

    Tokens are counted with the model's own ``tokenizer.json`` (no special tokens); a document too
    short is repeated until it is long enough. This is the fixed-size workload of every speed table
    (``crossrank bench``, ``benchmarks/profile_ops.py``), so backends are timed on identical input.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    tok.no_truncation()
    out: list[str] = []
    for _, row in iter_jsonl(corpus):
        text = f"{row.get('title', '')} {row['text']}".strip()
        while len(tok.encode(text, add_special_tokens=False).ids) < tokens:
            text = f"{text} {text}"
        enc = tok.encode(text, add_special_tokens=False)
        out.append(text[: enc.offsets[tokens - 1][1]])
        if len(out) == n:
            break
    return out


def scorer(method: str, model: str) -> Callable[[str, list[str]], list[float]]:
    """``(query, docs) -> scores`` for one method: "st" (sentence-transformers) or a ``BENCH_METHODS`` name."""
    if method == "st":
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(model, device="cpu")
        return lambda q, docs: [float(x) for x in ce.predict([(q, d) for d in docs], batch_size=32)]
    from crossrank.reranker import Reranker

    backend, quantize = BENCH_METHODS[method]
    rr = Reranker(model, backend=backend, quantize=quantize)
    return rr.score


def speed(
    model: str, corpus: Path, workloads: list[tuple[int, int]], methods: tuple[str, ...], repeats: int
) -> list[dict[str, Any]]:
    """Median wall time per method for each (candidates, tokens) workload, methods alternating order."""
    scorers = {m: scorer(m, model) for m in methods}
    query = "Vitamin D deficiency is associated with a higher risk of cancer"
    rows = []
    for n, tokens in workloads:
        docs = passages(model, corpus, tokens, n)
        for fn in scorers.values():  # warm-up: kernels, allocators, lazy loads
            fn(query, docs[:8])
        times: dict[str, list[float]] = {m: [] for m in methods}
        for r in range(repeats):
            order = list(methods) if r % 2 == 0 else list(reversed(methods))
            for m in order:
                t = time.perf_counter()
                scorers[m](query, docs)
                times[m].append(time.perf_counter() - t)
        base = statistics.median(times[methods[0]])
        for m in methods:
            med = statistics.median(times[m])
            rows.append(
                {
                    "candidates": n,
                    "tokens": tokens,
                    "method": m,
                    "ms_per_query": med * 1000,
                    "pairs_per_s": n / med,
                    "speedup_vs_a": base / med,
                }
            )
    return rows


_PROBE = """
import json, sys, time
t0 = time.perf_counter()
method, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
from crossrank.cli.bench import scorer, passages
from pathlib import Path
fn = scorer(method, model)
fn("warm up query", ["a first result"])
cold = time.perf_counter() - t0
docs = passages(model, Path(sys.argv[4]), 200, n)
fn("Vitamin D deficiency is associated with a higher risk of cancer", docs)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec from the parent process.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"cold_start_s": cold, "peak_rss_mb": hwm / 1024}))
"""


def cold_and_memory(model: str, corpus: Path, methods: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Cold start and peak RSS of each method, each in a fresh subprocess."""
    out = {}
    for m in methods:
        scorer(m, model)  # make sure any ONNX export is cached before timing a cold start
        res = subprocess.run(
            [sys.executable, "-c", _PROBE, m, model, "100", str(corpus)], capture_output=True, text=True, check=True
        )
        out[m] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def fidelity(model: str, dataset: Path, methods: tuple[str, ...], queries: int) -> dict[str, dict[str, float]]:
    """Top-10 overlap with (a) and nDCG@10 on BM25 top-100 candidates of the first SciFact test queries."""
    from crossrank.retrieval.beir import evaluate, first_stage_runs, load_beir

    ds = load_beir(dataset)
    qs = ds.test_queries(queries)
    cands = first_stage_runs(ds, qs, ["bm25"], candidates=100)[0]["bm25"]
    runs: dict[str, dict[str, list[str]]] = {}
    for m in methods:
        fn = scorer(m, model)
        runs[m] = {}
        for q, t in qs:
            scores = fn(t, [ds.doc_text(d) for d in cands[q]])
            order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
            runs[m][q] = [cands[q][i] for i in order]
    ref = runs[methods[0]]
    out = {}
    for m in methods:
        overlap = statistics.mean(len(set(runs[m][q][:10]) & set(ref[q][:10])) / 10 for q, _ in qs)
        out[m] = {"top10_overlap": overlap, "ndcg@10": evaluate(runs[m], ds.qrels)["ndcg@10"]}
    return out


def table(rows: list[dict[str, Any]], extra: dict[str, dict[str, float]], fid: dict[str, dict[str, float]]) -> str:
    """The speed table, then the cold start / memory / fidelity table, in Markdown."""
    lines = ["| candidates × tokens | method | ms/query | pairs/s | × vs (a) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['candidates']} × {r['tokens']} | {r['method']} | {r['ms_per_query']:.0f} | "
            f"{r['pairs_per_s']:.0f} | {r['speedup_vs_a']:.2f} |"
        )
    if extra or fid:
        lines += [
            "",
            "| method | cold start (s) | peak RSS (MB) | top-10 overlap vs (a) | nDCG@10 |",
            "|---|---:|---:|---:|---:|",
        ]
        for m in dict.fromkeys([*extra, *fid]):
            e, f = extra.get(m, {}), fid.get(m, {})
            lines.append(
                f"| {m} | {e.get('cold_start_s', float('nan')):.2f} | {e.get('peak_rss_mb', float('nan')):.0f} | "
                f"{f.get('top10_overlap', float('nan')):.3f} | {f.get('ndcg@10', float('nan')):.4f} |"
            )
    return "\n".join(lines)


def benchmark(
    model: str,
    dataset: Path,
    *,
    quick: bool = False,
    repeats: int = 5,
    methods: tuple[str, ...] = METHODS,
    fidelity_queries: int = 50,
) -> dict[str, Any]:
    """Speed, cold start, memory and fidelity of ``methods`` on a BEIR dataset's abstracts."""
    corpus = dataset / "corpus.jsonl"
    workloads = [(100, 200)]
    if not quick:
        workloads += [(20, 200), (50, 200), (200, 200), (500, 200), (100, 64), (100, 256), (100, 512)]
    rows = speed(model, corpus, workloads, methods, repeats)
    extra = cold_and_memory(model, corpus, methods)
    fid = fidelity(model, dataset, methods, fidelity_queries)
    return {"rows": rows, "cold_memory": extra, "fidelity": fid, "table": table(rows, extra, fid)}
