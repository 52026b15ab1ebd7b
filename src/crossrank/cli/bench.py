"""``crossrank bench``: side-by-side speed, memory and ranking fidelity of the scoring paths.

Methods (one table, alternating order within each repeat, medians):
  (a) st            sentence_transformers.CrossEncoder.predict, torch fp32 — what LangChain's and
                    LlamaIndex's built-in rerankers run
  (b) torch         crossrank, torch backend
  (c) onnx-fp32     crossrank, ONNX Runtime fp32
  (d) onnx-int8     crossrank, ONNX Runtime dynamic int8 (the CPU default without bf16 units)
  (e) openvino-bf16 crossrank, OpenVINO bf16
  (f) openvino-int8 crossrank, OpenVINO static int8 (the CPU default where VNNI and OpenVINO are there)
Cold start and peak RSS are measured in fresh subprocesses, one per method.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

METHODS = ("st", "torch", "onnx-fp32", "onnx-int8", "openvino-bf16", "openvino-int8")


def _passages(model: str, corpus: Path, tokens: int, n: int) -> list[str]:
    """``n`` SciFact abstracts cut to about ``tokens`` tokens each (repeating text when one is too short)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    tok.no_truncation()
    out: list[str] = []
    with corpus.open() as f:
        for line in f:
            row = json.loads(line)
            text = f"{row.get('title', '')} {row['text']}".strip()
            while len(tok.encode(text, add_special_tokens=False).ids) < tokens:
                text = f"{text} {text}"
            enc = tok.encode(text, add_special_tokens=False)
            out.append(text[: enc.offsets[tokens - 1][1]])
            if len(out) == n:
                break
    return out


def _scorer(method: str, model: str) -> Callable[[str, list[str]], list[float]]:
    if method == "st":
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(model, device="cpu")
        return lambda q, docs: [float(x) for x in ce.predict([(q, d) for d in docs], batch_size=32)]
    from crossrank.reranker import Reranker

    kwargs: dict[str, Any] = {
        "torch": {"backend": "torch"},
        "onnx-fp32": {"backend": "onnx", "quantize": "fp32"},
        "onnx-int8": {"backend": "onnx", "quantize": "int8"},
        "openvino-bf16": {"backend": "openvino", "quantize": "bf16"},
        "openvino-int8": {"backend": "openvino", "quantize": "int8"},
    }[method]
    rr = Reranker(model, **kwargs)
    return rr.score


def speed(
    model: str, corpus: Path, workloads: list[tuple[int, int]], methods: tuple[str, ...], repeats: int
) -> list[dict[str, Any]]:
    scorers = {m: _scorer(m, model) for m in methods}
    query = "Vitamin D deficiency is associated with a higher risk of cancer"
    rows = []
    for n, tokens in workloads:
        docs = _passages(model, corpus, tokens, n)
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
from crossrank.cli.bench import _scorer, _passages
from pathlib import Path
fn = _scorer(method, model)
fn("warm up query", ["a first result"])
cold = time.perf_counter() - t0
docs = _passages(model, Path(sys.argv[4]), 200, n)
fn("Vitamin D deficiency is associated with a higher risk of cancer", docs)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec from the parent process.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"cold_start_s": cold, "peak_rss_mb": hwm / 1024}))
"""


def cold_and_memory(model: str, corpus: Path, methods: tuple[str, ...]) -> dict[str, dict[str, float]]:
    out = {}
    for m in methods:
        _scorer(m, model)  # make sure any ONNX export is cached before timing a cold start
        res = subprocess.run(
            [sys.executable, "-c", _PROBE, m, model, "100", str(corpus)], capture_output=True, text=True, check=True
        )
        out[m] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def fidelity(model: str, dataset: Path, methods: tuple[str, ...], queries: int) -> dict[str, dict[str, float]]:
    """Top-10 overlap with (a) and nDCG@10 on BM25 top-100 candidates of the first SciFact test queries."""
    from crossrank.retrieval.beir import evaluate, load_beir
    from crossrank.retrieval.bm25 import BM25Index

    ds = load_beir(dataset)
    ids = list(ds.corpus)
    bm25 = BM25Index(ids, [ds.doc_text(d) for d in ids])
    qs = ds.test_queries(queries)
    cands = {q: [d for d, _ in bm25.search(t, 100)] for q, t in qs}
    runs: dict[str, dict[str, list[str]]] = {}
    for m in methods:
        fn = _scorer(m, model)
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


def run(
    model: str,
    dataset: Path,
    *,
    quick: bool = False,
    repeats: int = 5,
    methods: tuple[str, ...] = METHODS,
    fidelity_queries: int = 50,
) -> dict[str, Any]:
    corpus = dataset / "corpus.jsonl"
    workloads = [(100, 200)]
    if not quick:
        workloads += [(20, 200), (50, 200), (200, 200), (500, 200), (100, 64), (100, 256), (100, 512)]
    rows = speed(model, corpus, workloads, methods, repeats)
    extra = cold_and_memory(model, corpus, methods)
    fid = fidelity(model, dataset, methods, fidelity_queries)
    return {"rows": rows, "cold_memory": extra, "fidelity": fid, "table": table(rows, extra, fid)}
