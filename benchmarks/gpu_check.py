"""crossrank on a CUDA GPU: every family runs, rankings match fp32, the speed, and concurrent callers.

    python benchmarks/gpu_check.py --model ../shared/models/crossrank-minilm-l6-scifact \
        --dataset ../shared/data/beir-scifact [--lists runs/variants/lists.json] [--json gpu.json]

What it checks, on the first visible GPU (``backend="auto"`` must choose torch there):

1. **families**: a tiny random model of every architecture family crossrank serves (and the
   causal-LM rerankers' templates), scored on the GPU by ``auto`` (fp16) and by torch fp32, against
   torch fp32 on the CPU: the largest score difference and whether the top 5 agree.
2. **fidelity**: the real model on the SciFact test claims' BM25 top-100 (``--lists`` from
   ``benchmarks/finetune_variants.py lists``, else BM25 here): nDCG@10 of ``auto`` (fp16) and of
   fp32 on the GPU, and their mean top-10 overlap.
3. **speed**: ``crossrank bench``'s workloads (100 and 20 candidates × 200 tokens, a 1,000-pair
   batch; ``--workloads``): sentence-transformers ``CrossEncoder.predict`` on the GPU (fp32, then
   fp16), crossrank ``auto`` at its default batch and at each of ``--batch-sizes``, the torch call
   pipeline's variants (:mod:`crossrank.backends.torch_pipeline`: length buckets on — the default
   on CUDA — or off, and CUDA graphs through ``torch.compile(mode="reduce-overhead")``), and the
   host's tokenization alone, medians of ``--repeats`` after a warm-up. Documents repeat from call
   to call, as in RAG, so crossrank's token cache is warm; the **breakdown** gives its tokenize /
   model / total ms per call, the token cache's hits, and the issue's targets (100 × 200 ≤ 10 ms
   and ≥ 7× sentence-transformers fp16; 1,000 × 200 ≥ 20,000 pairs/s) as met or not.
4. **concurrency**: 8 threads and 8 asyncio tasks reranking at once on one ``Reranker`` give the
   orders a lone caller gets.

Nothing here runs without a GPU: it exits with a message. Servers are not started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from crossrank import Reranker
from crossrank.backends.torch_pipeline import BUCKETS_ENV, COMPILE_ENV
from crossrank.cli.bench import passages
from crossrank.cpuinfo import describe
from crossrank.retrieval.beir import evaluate, load_beir
from crossrank.scoring.engine import clear_engines

QUERY = "how do statins lower the risk of heart disease"
DOCS = [
    "statins lower ldl cholesterol and reduce cardiovascular events",
    "pythons are large constricting snakes",
    "aspirin lowers the risk of heart attack in some adults",
    "the stock market fell sharply on tuesday",
    "cholesterol synthesis is inhibited by hmg-coa reductase inhibitors",
    "",
    "heart disease risk factors include smoking and hypertension " * 4,
    "coffee and sleep",
]
DEVICE = "cuda"  # --device cpu: a dry run of the script itself on a machine without a GPU
CAUSAL = {"qwen3": "qwen3-reranker", "qwen2": "mxbai-rerank-v2", "gemma": "bge-reranker-v2-gemma"}
# The torch call pipeline's settings, each on an engine of its own (settings are read when one loads).
PIPELINE_VARIANTS: dict[str, dict[str, str]] = {
    "crossrank buckets off": {BUCKETS_ENV: "off", COMPILE_ENV: "off"},
    "crossrank CUDA graphs": {BUCKETS_ENV: "on", COMPILE_ENV: "reduce-overhead"},
}
DEFAULT_NAME = "crossrank default"
ST16 = "sentence-transformers fp16"
TARGET_MS_100 = 10.0
TARGET_RATIO_100 = 7.0
TARGET_PAIRS_1000 = 20_000.0


def families(root: Path) -> list[dict[str, Any]]:
    """Tiny models of every family: GPU auto / GPU fp32 against CPU fp32."""
    from crossrank.testing import FAMILIES, REMOTE_CODE_FAMILY, make_tiny_model
    from crossrank.testing_causal import make_tiny_causal_reranker

    rows: list[dict[str, Any]] = []
    specs: list[tuple[str, Path, dict[str, Any]]] = []
    for fam in (*FAMILIES, REMOTE_CODE_FAMILY):
        opts: dict[str, Any] = {"trust_remote_code": True} if fam == REMOTE_CODE_FAMILY else {}
        specs.append((fam, make_tiny_model(root / fam, fam), opts))
    for fam, template in CAUSAL.items():
        specs.append((f"causal {fam}", make_tiny_causal_reranker(root / f"causal-{fam}", fam), {"template": template}))
    for name, path, opts in specs:
        try:
            cpu: np.ndarray = np.asarray(
                Reranker(path, backend="torch", device="cpu", quantize="fp32", **opts).score(QUERY, DOCS)
            )
            auto_rr = Reranker(path, **opts)
            auto = np.asarray(auto_rr.score(QUERY, DOCS))
            fp32 = np.asarray(
                Reranker(path, backend="torch", device=DEVICE, quantize="fp32", **opts).score(QUERY, DOCS)
            )
        except Exception as exc:
            rows.append({"family": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        spread = float(np.ptp(cpu)) or 1.0
        rows.append(
            {
                "family": name,
                "auto_backend": auto_rr.backend_name,
                "fp32_max_abs": float(np.max(np.abs(fp32 - cpu))),
                "auto_max_abs": float(np.max(np.abs(auto - cpu))),
                "auto_max_rel_to_spread": float(np.max(np.abs(auto - cpu))) / spread,
                "top5_same_auto": list(np.argsort(-auto, kind="stable")[:5])
                == list(np.argsort(-cpu, kind="stable")[:5]),
            }
        )
    return rows


def fidelity(model: str, dataset: str, lists_path: str | None, limit: int) -> dict[str, Any]:
    """nDCG@10 of auto (fp16) and fp32 on the GPU over the test claims' BM25 top-100, and top-10 overlap."""
    ds = load_beir(dataset)
    qs = ds.test_queries(limit or None)
    if lists_path:
        saved = json.loads(Path(lists_path).read_text())
        lists = {q: saved["bm25"][q] for q, _ in qs}
    else:
        from crossrank.retrieval.beir import first_stage_runs

        lists = first_stage_runs(ds, qs, ["bm25"], candidates=100)[0]["bm25"]
    out: dict[str, Any] = {"claims": len(qs)}
    orders: dict[str, dict[str, list[str]]] = {}
    variants: list[tuple[str, dict[str, Any]]] = [
        ("auto", {}),
        ("fp32", {"backend": "torch", "device": DEVICE, "quantize": "fp32"}),
    ]
    for name, opts in variants:
        rr = Reranker(model, **opts)
        t0 = time.perf_counter()
        run = {}
        for q, text in qs:
            s = rr.score(text, [ds.doc_text(d) for d in lists[q]])
            run[q] = [lists[q][i] for i in sorted(range(len(s)), key=lambda i: (-s[i], i))]
        out[name] = {
            "backend": rr.backend_name,
            "ndcg@10": evaluate(run, ds.qrels)["ndcg@10"],
            "seconds": time.perf_counter() - t0,
        }
        orders[name] = run
    out["top10_overlap"] = statistics.mean(
        len(set(orders["auto"][q][:10]) & set(orders["fp32"][q][:10])) / 10 for q, _ in qs
    )
    out["ndcg_delta"] = out["auto"]["ndcg@10"] - out["fp32"]["ndcg@10"]
    return out


def _median_ms(fn: Any, repeats: int) -> float:
    import torch

    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _variant(model: str, env: dict[str, str], **options: Any) -> Reranker:
    """A Reranker on an engine of its own, loaded under ``env`` (the pipeline settings are read at load)."""
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        clear_engines()  # a new engine; Rerankers made before keep theirs
        return Reranker(model, device=DEVICE, **options).warmup()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def speed(model: str, dataset: str, repeats: int, batch_sizes: list[int], workloads: list[int]) -> dict[str, Any]:
    """ms per call for each workload and method, on the GPU (crossrank also at each of ``batch_sizes``)."""
    import torch
    from sentence_transformers import CrossEncoder

    corpus = Path(dataset) / "corpus.jsonl"
    docs = passages(model, corpus, 200, max(workloads))
    methods: dict[str, Any] = {}
    st32 = CrossEncoder(model, device=DEVICE)
    methods["sentence-transformers fp32"] = lambda d: st32.predict([(QUERY, x) for x in d], show_progress_bar=False)
    st16 = CrossEncoder(model, device=DEVICE, model_kwargs={"dtype": torch.float16})
    methods[ST16] = lambda d: st16.predict([(QUERY, x) for x in d], show_progress_bar=False)
    rr = _variant(model, {})
    methods[DEFAULT_NAME] = lambda d: rr.score(QUERY, d)
    for name, env in PIPELINE_VARIANTS.items():
        other = _variant(model, env)
        methods[name] = lambda d, o=other: o.score(QUERY, d)
    for bs in batch_sizes:  # what the default batch on CUDA should be: measured, not guessed
        other = Reranker(model, device=DEVICE, batch_size=bs)
        methods[f"crossrank batch {bs}"] = lambda d, o=other: o.score(QUERY, d)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    methods["tokenization alone (host)"] = lambda d: tok.encode_batch([(QUERY, x) for x in d])
    out: dict[str, Any] = {"backend": rr.backend_name, "batch": rr.batch_size, "ms": {}, "breakdown": {}}
    for n in workloads:
        batch = docs[:n]
        out["ms"][f"{n}x200"] = {name: _median_ms(lambda f=f, b=batch: f(b), repeats) for name, f in methods.items()}
        out["breakdown"][f"{n}x200"] = breakdown(rr, batch, repeats)
    return out


def breakdown(rr: Reranker, docs: list[str], repeats: int) -> dict[str, float]:
    """Medians of one warm call's phases (documents repeat, so their token ids come from the cache)."""
    rr.rerank(QUERY, docs)
    runs = [rr.rerank(QUERY, docs).stats for _ in range(repeats)]
    return {
        "tokenize_ms": statistics.median(s.tokenize_ms for s in runs),
        "model_ms": statistics.median(s.model_ms for s in runs),
        "total_ms": statistics.median(s.total_ms for s in runs),
        "token_cache_hit_rate": statistics.median(
            s.token_cache_hits / max(1, s.token_cache_hits + s.token_cache_misses) for s in runs
        ),
    }


def targets(sp: dict[str, Any]) -> list[str]:
    """The issue's GPU targets, each with the measured value and whether it is met."""
    lines = []
    ms = sp.get("ms", {})
    if "100x200" in ms:
        row = ms["100x200"]
        cr, st = row[DEFAULT_NAME], row[ST16]
        lines.append(f"100 × 200: {cr:.1f} ms per call (target ≤ {TARGET_MS_100:.0f}): {_met(cr <= TARGET_MS_100)}")
        lines.append(
            f"100 × 200: {st / cr:.2f}× sentence-transformers fp16 (target ≥ {TARGET_RATIO_100:.0f}×): "
            f"{_met(st / cr >= TARGET_RATIO_100)}"
        )
    if "1000x200" in ms:
        rate = 1000 / (ms["1000x200"][DEFAULT_NAME] / 1000)
        lines.append(
            f"1,000 × 200: {rate:,.0f} pairs/s (target ≥ {TARGET_PAIRS_1000:,.0f}): {_met(rate >= TARGET_PAIRS_1000)}"
        )
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def concurrency(model: str, dataset: str) -> dict[str, Any]:
    """8 threads and 8 asyncio tasks on one Reranker: the same orders as one caller alone."""
    ds = load_beir(dataset)
    qs = ds.test_queries(16)
    ids = list(ds.corpus)[:60]
    texts = [ds.doc_text(d) for d in ids]
    rr = Reranker(model)
    alone = {q: rr.rerank(text, texts, top_n=10) for q, text in qs}

    def same(q: str, got: Any) -> bool:
        return [r.index for r in got] == [r.index for r in alone[q]]

    with ThreadPoolExecutor(8) as pool:
        threads = list(pool.map(lambda qt: same(qt[0], rr.rerank(qt[1], texts, top_n=10)), qs * 4))

    async def many() -> list[bool]:
        got = await asyncio.gather(*(rr.arerank(text, texts, top_n=10) for _, text in qs * 2))
        return [same(q, g) for (q, _), g in zip(qs * 2, got, strict=True)]

    tasks = asyncio.run(many())
    return {"threads_same": sum(threads), "threads": len(threads), "tasks_same": sum(tasks), "tasks": len(tasks)}


def report(res: dict[str, Any]) -> str:
    lines = [f"GPU: {res['gpu']} · host CPU: {res['cpu']}", "", "families (8 texts; CPU torch fp32 is the reference):"]
    lines += ["| family | auto chose | max |Δ| GPU fp32 | max |Δ| auto | auto top-5 same |", "|---|---|---:|---:|---|"]
    for r in res.get("families", []):
        if "error" in r:
            lines.append(f"| {r['family']} | error: {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['family']} | {r['auto_backend']} | {r['fp32_max_abs']:.2e} | {r['auto_max_abs']:.2e} "
                f"({r['auto_max_rel_to_spread']:.1%} of spread) | {r['top5_same_auto']} |"
            )
    f = res.get("fidelity")
    if f:
        lines += [
            "",
            f"fidelity, SciFact {f['claims']} test claims × BM25 top-100: auto ({f['auto']['backend']}) nDCG@10 "
            f"{f['auto']['ndcg@10']:.4f} in {f['auto']['seconds']:.1f} s · fp32 {f['fp32']['ndcg@10']:.4f} in "
            f"{f['fp32']['seconds']:.1f} s · Δ {f['ndcg_delta']:+.4f} · top-10 overlap {f['top10_overlap']:.3f}",
        ]
    sp = res.get("speed")
    if sp and sp.get("ms"):
        names = list(next(iter(sp["ms"].values())))
        lines += [
            "",
            f"speed: crossrank default = auto ({sp['backend']}, batch {sp['batch']}, the device's default "
            "pipeline settings), documents repeated from call to call (warm token cache)",
            "",
            "| ms per call (median) | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for w, row in sp["ms"].items():
            lines.append(f"| {w} | " + " | ".join(f"{row[n]:.1f}" for n in names) + " |")
        lines += [
            "",
            "| crossrank default, per call (median) | tokenize ms | model ms | total ms | tokenize share | "
            "token cache hits |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for w, b in sp["breakdown"].items():
            lines.append(
                f"| {w} | {b['tokenize_ms']:.2f} | {b['model_ms']:.2f} | {b['total_ms']:.2f} | "
                f"{b['tokenize_ms'] / b['total_ms']:.1%} | {b['token_cache_hit_rate']:.0%} |"
            )
        lines += ["", *targets(sp)]
    c = res.get("concurrency")
    if c:
        lines += [
            "",
            f"concurrency: threads {c['threads_same']}/{c['threads']} same order, asyncio tasks "
            f"{c['tasks_same']}/{c['tasks']}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--lists", default=None, help="first-stage lists of the test claims (finetune_variants.py lists)")
    ap.add_argument("--queries", type=int, default=0, help="fidelity on the first N test claims (0: all)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch-sizes", default="64,128,256", help="crossrank's speed also at these batch sizes")
    ap.add_argument("--workloads", default="100,20,1000", help="candidates per call (× 200 tokens) to time")
    ap.add_argument("--parts", default="families,fidelity,speed,concurrency")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing to check", file=sys.stderr)
        return 2
    res: dict[str, Any] = {
        "gpu": f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
        if DEVICE == "cuda"
        else "none (a dry run on the CPU)",
        "cpu": describe(),
    }
    parts = args.parts.split(",")
    steps = {
        "families": lambda: families(Path(tempfile.mkdtemp(prefix="gpu-check-"))),
        "fidelity": lambda: fidelity(args.model, args.dataset, args.lists, args.queries),
        "speed": lambda: speed(
            args.model,
            args.dataset,
            args.repeats,
            [int(b) for b in args.batch_sizes.split(",") if b],
            [int(n) for n in args.workloads.split(",") if n],
        ),
        "concurrency": lambda: concurrency(args.model, args.dataset),
    }
    for name in parts:
        t0 = time.perf_counter()
        try:
            res[name] = steps[name]()
        except Exception as exc:  # report and go on: one broken part must not hide the others
            res[name + "_error"] = f"{type(exc).__name__}: {exc}"
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    print(report(res))
    for k, v in res.items():
        if k.endswith("_error"):
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
