"""``crossrank bench``: side-by-side speed, memory and ranking fidelity of the scoring paths.

Methods (one table, alternating order within each repeat, medians):
  (a) st            sentence_transformers.CrossEncoder.predict, torch fp32 — what LangChain's and
                    LlamaIndex's built-in rerankers run
      auto          crossrank's default: the path measured fastest on this CPU (scoring/tuning.py)
  (b) torch         crossrank, torch backend
  (c) onnx-fp32     crossrank, ONNX Runtime fp32
  (d) onnx-int8     crossrank, ONNX Runtime dynamic int8 (the CPU default without bf16 units)
  (e) openvino-bf16 crossrank, OpenVINO bf16
  (f) openvino-int8 crossrank, OpenVINO static int8 (the CPU default where VNNI and OpenVINO are there)
Cold start and peak RSS are measured in fresh subprocesses, one per method. The crossrank methods
are :data:`crossrank.backends.table.BENCH_METHODS`; "st" is the baseline every ratio is against.

``--roofline`` adds the matmul floor (:mod:`crossrank.cli.bench_roofline`): the model's weight
matmuls alone on the headline shapes, and each method's headline as a fraction of it.

``--peers`` appends the paths a user could pick instead of crossrank (:mod:`crossrank.cli.bench_peers`:
sentence-transformers' ONNX / OpenVINO backends and their int8 exports, FlashRank). They are optional
and never in the default list; one that is missing or fails keeps its rows, with the reason in place
of numbers, and the rest of the benchmark runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crossrank.backends.table import BENCH_METHODS
from crossrank.cli import common
from crossrank.cli.bench_peers import PEER_METHODS, PEERS, PeerUnavailableError, Scorer, peer_scorer
from crossrank.cpuinfo import describe
from crossrank.errors import InvalidArgumentError
from crossrank.jsonl import iter_jsonl

METHODS: tuple[str, ...] = ("st", *BENCH_METHODS)
ALL_METHODS: tuple[str, ...] = (*METHODS, *PEER_METHODS)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="benchmark scoring paths side by side (speed, cold start, RSS, fidelity)"
    )
    p.add_argument("--model", default=None, help="cross-encoder folder (default: $CROSSRANK_MODEL)")
    p.add_argument("--dataset", required=True, help="BEIR folder for passages and fidelity (e.g. beir-scifact)")
    p.add_argument("--quick", action="store_true", help="headline workload only (100 candidates × 200 tokens)")
    p.add_argument(
        "--workloads",
        default=None,
        metavar="NxT,...",
        help="candidates×tokens to time, e.g. 100x200,20x200 (default: all; --quick: 100x200)",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--methods", default=None, help=f"comma list from {','.join(ALL_METHODS)} (default: {','.join(METHODS)})"
    )
    p.add_argument(
        "--peers",
        action="store_true",
        help=f"also run the peer methods a user could pick instead: {','.join(PEER_METHODS)}",
    )
    p.add_argument("--fidelity-queries", type=int, default=50)
    p.add_argument(
        "--roofline",
        action="store_true",
        help="also time the model's weight matmuls alone (int8/bf16/fp32) on the headline shapes and report each "
        "method's headline as a fraction of that floor",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="also draw ms per method and workload (the roofline where measured) to FILE (.png or .svg; "
        "needs crossrank[plot])",
    )
    p.add_argument(
        "--emulate-isa",
        default=None,
        metavar="LEVEL",
        help="run as a narrower CPU (oneDNN level: AVX2, AVX512_CORE_VNNI, ...): OpenVINO, torch and crossrank's "
        "choices follow it; ONNX Runtime cannot (its rows stay the real CPU's)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; print the Markdown tables (or everything but the table as JSON); ``--plot`` draws it."""
    from crossrank.cli.plots import check_plot_path, plot_bench

    plot = check_plot_path(args.plot) if getattr(args, "plot", None) else None  # before the long run
    if args.emulate_isa:
        import os

        from crossrank.cpuinfo import emulation_env

        env = emulation_env(args.emulate_isa)
        if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() != env["ONEDNN_MAX_CPU_ISA"]:
            # The runtimes read these once, at load: the benchmark reruns itself in a process that has them.
            argv = [sys.executable, "-m", "crossrank", *sys.argv[1:]]
            return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else runnable_methods(args)
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        raise InvalidArgumentError(f"unknown --methods {sorted(unknown)}; choose from {', '.join(ALL_METHODS)}")
    if getattr(args, "peers", False):
        methods = tuple(dict.fromkeys([*methods, *PEER_METHODS]))
    from crossrank.model_files import resolve_model_dir
    from crossrank.retrieval.beir import beir_files

    beir_files(args.dataset)  # both checked before any long work, with crossrank's errors, not a peer's traceback
    resolve_model_dir(common.model(args))
    res = benchmark(
        common.model(args),
        Path(args.dataset),
        quick=args.quick,
        workloads=parse_workloads(args.workloads) if getattr(args, "workloads", None) else None,
        repeats=args.repeats,
        methods=methods,
        fidelity_queries=args.fidelity_queries,
    )
    if getattr(args, "roofline", False):
        from crossrank.cli.bench_roofline import matmul_floor, roofline_table

        floor = matmul_floor(common.model(args), repeats=args.repeats)
        headline = {r["method"]: r["ms_per_query"] for r in res["rows"] if (r["candidates"], r["tokens"]) == (100, 200)}
        res["roofline"] = floor
        res["table"] += "\n\n" + roofline_table(floor, headline, "100 candidates × 200 tokens, batches of 16")
    print(json.dumps({k: v for k, v in res.items() if k != "table"}) if args.json else res["table"])
    if plot is not None:
        print(f"plot written to {plot_bench(res, plot)}", file=sys.stderr)
    return 0


def runnable_methods(args: argparse.Namespace) -> tuple[str, ...]:
    """The default methods less those this install cannot run: "st" and "torch" need ``crossrank[torch]``
    (an exported folder from ``crossrank export`` has no torch weights either), "openvino-*" OpenVINO."""
    import importlib.util

    from crossrank.exported import MANIFEST

    def missing(module: str) -> bool:
        return importlib.util.find_spec(module) is None

    exported = (Path(common.model(args)) / MANIFEST).is_file()
    skip = {"st": exported or missing("sentence_transformers"), "torch": exported or missing("torch")}
    return tuple(m for m in METHODS if not skip.get(m, m.startswith("openvino") and missing("openvino")))


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


def scorer(method: str, model: str, corpus: Path | None = None) -> Scorer:
    """``(query, docs) -> scores`` for one method: "st" (sentence-transformers), a ``BENCH_METHODS`` or a peer name.

    ``corpus`` is only read by peers that calibrate on the bench passages (st-openvino-int8). A peer
    that cannot run raises :class:`~crossrank.cli.bench_peers.PeerUnavailableError` with the reason.
    """
    if method in PEERS:
        calibration = (lambda: passages(model, corpus, 200, 300)) if corpus is not None else None
        return peer_scorer(method, model, calibration)
    if method == "st":
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            from crossrank.errors import missing_extra

            raise missing_extra("sentence-transformers (the 'st' baseline)", "torch") from exc

        ce = CrossEncoder(model, device="cpu")
        return lambda q, docs: [float(x) for x in ce.predict([(q, d) for d in docs], batch_size=32)]
    from crossrank.reranker import Reranker

    backend, quantize = BENCH_METHODS[method]
    rr = Reranker(model, backend=backend, quantize=quantize)
    return rr.score


def _peer_failure(exc: BaseException) -> str:
    """The row text for a peer that failed: its unavailability reason, else the error's first line."""
    if isinstance(exc, PeerUnavailableError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"failed: {type(exc).__name__}" + (f": {lines[0][:300]}" if lines else "")


def load_scorers(
    model: str, methods: tuple[str, ...], corpus: Path | None, unavailable: dict[str, str]
) -> dict[str, Scorer]:
    """Scorers of ``methods`` that load and score a warm-up pair; peers that do not go to ``unavailable``.

    A crossrank method or "st" failing is a real error and raises; a peer failing never stops the run.
    """
    scorers: dict[str, Scorer] = {}
    for m in methods:
        if m in unavailable:
            continue
        try:
            fn = scorer(m, model, corpus)
            fn("warm up query", ["a first result"])
        except Exception as exc:
            if m not in PEERS:
                raise
            unavailable[m] = _peer_failure(exc)
            continue
        scorers[m] = fn
    return scorers


def speed(
    model: str,
    corpus: Path,
    workloads: list[tuple[int, int]],
    methods: tuple[str, ...],
    repeats: int,
    unavailable: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Median wall time per method for each (candidates, tokens) workload, methods alternating order.

    ``unavailable`` (method -> reason) receives the peers that cannot load or fail while timed; they
    get no rows and the others go on. The first method that runs is the baseline of ``speedup_vs_a``.
    """
    skipped = unavailable if unavailable is not None else {}
    scorers = load_scorers(model, methods, corpus, skipped)
    query = "Vitamin D deficiency is associated with a higher risk of cancer"
    rows = []
    for n, tokens in workloads:
        docs = passages(model, corpus, tokens, n)
        live = [m for m in scorers if m not in skipped]
        for m in list(live):  # warm-up: kernels, allocators, lazy loads
            if not _timed(scorers, m, query, docs[:8], skipped):
                live.remove(m)
        times: dict[str, list[float]] = {m: [] for m in live}
        for r in range(repeats):
            order = live if r % 2 == 0 else list(reversed(live))
            for m in order:
                if m in skipped:
                    continue
                t = time.perf_counter()
                if _timed(scorers, m, query, docs, skipped):
                    times[m].append(time.perf_counter() - t)
        timed = [m for m in live if m not in skipped and times[m]]
        if not timed:
            continue
        base = statistics.median(times[timed[0]])
        for m in timed:
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


def _timed(scorers: dict[str, Scorer], m: str, query: str, docs: list[str], skipped: dict[str, str]) -> bool:
    """Score once with method ``m``; a peer that raises is moved to ``skipped`` (False), others re-raise."""
    try:
        scorers[m](query, docs)
    except Exception as exc:
        if m not in PEERS:
            raise
        skipped[m] = _peer_failure(exc)
        return False
    return True


_PROBE = """
import json, sys, time
t0 = time.perf_counter()
method, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
from crossrank.cli.bench import scorer, passages
from pathlib import Path
fn = scorer(method, model, Path(sys.argv[4]))
fn("warm up query", ["a first result"])
cold = time.perf_counter() - t0
docs = passages(model, Path(sys.argv[4]), 200, n)
fn("Vitamin D deficiency is associated with a higher risk of cancer", docs)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec from the parent process.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"cold_start_s": cold, "peak_rss_mb": hwm / 1024}))
"""


def cold_and_memory(
    model: str, corpus: Path, methods: tuple[str, ...], unavailable: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Cold start and peak RSS of each method, each in a fresh subprocess.

    Methods already in ``unavailable`` are skipped; a peer whose build or probe fails is added to it.
    """
    skipped = unavailable if unavailable is not None else {}
    out = {}
    for m in methods:
        if m in skipped:
            continue
        try:
            scorer(m, model, corpus)  # make sure any export is cached before timing a cold start
            res = subprocess.run(
                [sys.executable, "-c", _PROBE, m, model, "100", str(corpus)], capture_output=True, text=True, check=True
            )
        except subprocess.CalledProcessError as exc:
            if m not in PEERS:
                raise
            last = (exc.stderr or "").strip().splitlines()[-1:] or [f"exit status {exc.returncode}"]
            skipped[m] = f"failed: cold-start probe: {last[0]}"
            continue
        except Exception as exc:
            if m not in PEERS:
                raise
            skipped[m] = _peer_failure(exc)
            continue
        out[m] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def fidelity(
    model: str, dataset: Path, methods: tuple[str, ...], queries: int, unavailable: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Top-10 overlap with (a) and nDCG@10 on BM25 top-100 candidates of the first SciFact test queries.

    (a) is the first method that runs; methods in ``unavailable`` are skipped and failing peers added to it.
    """
    from crossrank.retrieval.beir import evaluate, first_stage_runs, load_beir

    if queries < 1:  # --fidelity-queries 0: speed only (the BM25 candidates need crossrank[hybrid])
        return {}
    skipped = unavailable if unavailable is not None else {}
    ds = load_beir(dataset)
    qs = ds.test_queries(queries)
    cands = first_stage_runs(ds, qs, ["bm25"], candidates=100)[0]["bm25"]
    runs: dict[str, dict[str, list[str]]] = {}
    for m in methods:
        if m in skipped:
            continue
        try:
            fn = scorer(m, model, dataset / "corpus.jsonl")
            run_m = {}
            for q, t in qs:
                scores = fn(t, [ds.doc_text(d) for d in cands[q]])
                order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
                run_m[q] = [cands[q][i] for i in order]
        except Exception as exc:
            if m not in PEERS:
                raise
            skipped[m] = _peer_failure(exc)
            continue
        runs[m] = run_m
    if not runs:
        return {}
    ref = next(iter(runs.values()))
    out = {}
    for m, run_m in runs.items():
        overlap = statistics.mean(len(set(run_m[q][:10]) & set(ref[q][:10])) / 10 for q, _ in qs)
        out[m] = {"top10_overlap": overlap, "ndcg@10": evaluate(run_m, ds.qrels)["ndcg@10"]}
    return out


def parse_workloads(text: str) -> list[tuple[int, int]]:
    """``"100x200,20x200"`` -> [(100, 200), (20, 200)]: candidates × tokens per passage."""
    out = []
    for item in text.split(","):
        n, _, t = item.strip().lower().partition("x")
        if not (n.isdigit() and t.isdigit() and int(n) > 0 and int(t) > 0):
            raise InvalidArgumentError(f"--workloads item {item!r}: expected CANDIDATESxTOKENS such as 100x200")
        out.append((int(n), int(t)))
    return out


def table(
    rows: list[dict[str, Any]],
    extra: dict[str, dict[str, float]],
    fid: dict[str, dict[str, float]],
    unavailable: dict[str, str] | None = None,
) -> str:
    """The speed table, then the cold start / memory / fidelity table, in Markdown.

    Each method in ``unavailable`` keeps a row in both tables with its reason in place of numbers.
    """
    skipped = unavailable or {}
    lines = ["| candidates × tokens | method | ms/query | pairs/s | × vs (a) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['candidates']} × {r['tokens']} | {r['method']} | {r['ms_per_query']:.0f} | "
            f"{r['pairs_per_s']:.0f} | {r['speedup_vs_a']:.2f} |"
        )
    for m, why in skipped.items():
        lines.append(f"| all | {m} | {_cell(why)} | — | — |")
    if extra or fid or skipped:
        lines += [
            "",
            "| method | cold start (s) | peak RSS (MB) | top-10 overlap vs (a) | nDCG@10 |",
            "|---|---:|---:|---:|---:|",
        ]
        for m in dict.fromkeys([*extra, *fid]):
            if m in skipped:
                continue
            e, f = extra.get(m, {}), fid.get(m, {})
            lines.append(
                f"| {m} | {e.get('cold_start_s', float('nan')):.2f} | {e.get('peak_rss_mb', float('nan')):.0f} | "
                f"{f.get('top10_overlap', float('nan')):.3f} | {f.get('ndcg@10', float('nan')):.4f} |"
            )
        for m, why in skipped.items():
            lines.append(f"| {m} | {_cell(why)} | — | — | — |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """``text`` safe inside one Markdown table cell (no pipes, one line)."""
    return " ".join(text.replace("|", "/").split())


def benchmark(
    model: str,
    dataset: Path,
    *,
    quick: bool = False,
    repeats: int = 5,
    methods: tuple[str, ...] = METHODS,
    fidelity_queries: int = 50,
    workloads: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Speed, cold start, memory and fidelity of ``methods`` on a BEIR dataset's abstracts.

    ``unavailable`` in the result maps each peer that could not run to the reason shown in its rows.
    """
    from crossrank.cli.bench_peers import unavailable_reason

    corpus = dataset / "corpus.jsonl"
    if workloads is None:
        workloads = [(100, 200)]
        if not quick:
            workloads += [(20, 200), (50, 200), (200, 200), (500, 200), (100, 64), (100, 256), (100, 512)]
    unavailable = {m: why for m in methods if m in PEERS and (why := unavailable_reason(m))}
    rows = speed(model, corpus, workloads, methods, repeats, unavailable)
    extra = cold_and_memory(model, corpus, methods, unavailable)
    fid = fidelity(model, dataset, methods, fidelity_queries, unavailable)
    # A peer that failed in a later stage keeps no partial numbers: its row shows why instead.
    rows = [r for r in rows if r["method"] not in unavailable]
    extra = {m: v for m, v in extra.items() if m not in unavailable}
    fid = {m: v for m, v in fid.items() if m not in unavailable}
    return {
        "rows": rows,
        "cold_memory": extra,
        "fidelity": fid,
        "unavailable": unavailable,
        "cpu": describe(),
        "table": f"CPU: {describe()}\n\n" + table(rows, extra, fid, unavailable),
    }
