"""``crossrank eval``: first stages alone and reranked on a BEIR dataset, as one quality table.

Several first stages (``--first-stage dense,bm25,hybrid``), rerank settings (``--max-length
256,512``, ``--long-documents truncate,windows``), fusions (``--fusion none,rrf``) and rerank depths
(``--candidates 20,30,100``: the first stage's top k, retrieved as ``Pipeline(candidates=k)``
retrieves it) run in one go: every combination is a row. ``--collection A,B`` puts several
collections' dense and hybrid rows side by side (each queried with the embedder it records:
before and after ``crossrank distill``, say). The candidates come from
:func:`crossrank.retrieval.first_stage.first_stage`, the code ``Pipeline.retrieve`` runs, so the
hybrid rows are the pipeline's hybrid. One reranker per ``max_length`` keeps a score cache for the
whole run: a (query, document) pair scored for one first stage, or for ``fusion=none``, is not
scored again for another first stage or for ``fusion=rrf``. The cache is emptied between depths, so
each depth's ms/query is what reranking that many candidates costs.

The dense first stage runs in a Chroma collection named after the dataset and the embedder, so the
corpus is embedded once and reused on later runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrank.cli import common
from crossrank.inputs import FUSION_CHOICES
from crossrank.retrieval.first_stage import SOURCES

if TYPE_CHECKING:
    from crossrank.results import RankedResults
    from crossrank.retrieval.beir import BeirDataset

Observer = Callable[[dict[str, Any], str, "RankedResults"], None]
"""``observe(setting, qid, result)``: sees every rerank of :func:`run_eval`; ``setting`` holds the
row's ``first_stage``, ``max_length``, ``long_documents`` and ``fusion``."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "eval", help="evaluate first stages alone and reranked on a BEIR dataset folder (one table)"
    )
    p.add_argument("dataset")
    common.add_store_args(p)
    common.add_model_args(p, several=True)
    p.add_argument("--limit", type=common.positive_int, default=None, help="evaluate only the first N queries")
    p.add_argument(
        "--candidates",
        type=common.comma_list(common.positive_int, "positive integers"),
        default=[100],
        help="top-k of each first stage that the reranker sees, comma list (default 100)",
    )
    p.add_argument(
        "--first-stage",
        type=common.comma_list(common.choice(SOURCES)),
        default=["dense"],
        help=f"comma list from {', '.join(SOURCES)} (default: dense)",
    )
    p.add_argument(
        "--fusion",
        type=common.comma_list(common.choice(FUSION_CHOICES)),
        default=["none"],
        help=f"rerank fusion with the first-stage rank, comma list from {', '.join(FUSION_CHOICES)} (default: none)",
    )
    late = common.add_late_args(p)
    late.add_argument(
        "--late-candidates",
        type=common.comma_list(common.positive_int, "positive integers"),
        default=[100],
        help="top-k of each first stage that late interaction reorders, comma list (default 100); the "
        "cross-encoder then reranks late interaction's best --candidates (each depth below it: one row)",
    )
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true", help="print every number as JSON")
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="also draw nDCG@10 against rerank depth (ms/query on a second axis) to FILE (.png or .svg; "
        "needs crossrank[plot])",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table (or the JSON report); ``--plot`` also draws it."""
    from crossrank.cli.plots import check_plot_path, plot_eval

    plot = check_plot_path(args.plot) if getattr(args, "plot", None) else None  # before the long run
    report = run_eval(
        args.dataset,
        limit=args.limit,
        candidates=args.candidates,
        first_stage=args.first_stage,
        fusion=args.fusion,
        max_length=args.max_length,
        long_documents=args.long_documents,
        model=common.model(args),
        embedder=args.embedder,
        db=args.db,
        chroma_url=args.chroma_url,
        collection=args.collection,
        split=args.split,
        progress=not args.json,
        backend=args.backend,
        quantize=args.quantize,
        normalize=args.normalize,
        late=args.late_interaction,
        late_candidates=args.late_candidates,
        late_store=args.late_store,
    )
    print(json.dumps(report) if args.json else format_report(report))
    if plot is not None:
        from crossrank.cpuinfo import describe

        print(f"plot written to {plot_eval(report, plot, cpu=describe())}", file=sys.stderr)
    return 0


def _listed(value: Any) -> list[Any]:
    """A comma string, a single value or a sequence, as a list without duplicates."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return list(dict.fromkeys(value))


def _ms(x: float) -> str:
    """Milliseconds for the table: whole numbers, one decimal below 10."""
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _lat(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    a = np.asarray(seconds, dtype=np.float64) * 1000 if len(seconds) else np.zeros(1)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95))}


def run_eval(
    dataset: str | Path | BeirDataset,
    *,
    model: str,
    limit: int | None = None,
    candidates: int | Sequence[int] = 100,
    first_stage: str | Sequence[str] = "dense",
    fusion: str | Sequence[str] = "none",
    max_length: int | Sequence[int | None] | None = None,
    long_documents: str | Sequence[str] = "truncate",
    embedder: str | None = None,
    db: str | None = None,
    chroma_url: str | None = None,
    collection: str | None = None,
    split: str = "test",
    progress: bool = True,
    observe: Observer | None = None,
    late: str | None = None,
    late_candidates: int | Sequence[int] = 100,
    late_store: str | None = None,
    **reranker_kwargs: Any,
) -> dict[str, Any]:
    """Every first stage alone and under every (max_length, long_documents, fusion) rerank setting.

    ``dataset`` is a BEIR folder or an already loaded ``BeirDataset`` (whose BM25 index is then
    reused). Comma strings or sequences select several values; ``observe`` is called with every
    rerank result (``benchmarks/quality_table.py`` takes its calibration and per-query runs from
    it). Several ``candidates`` (rerank depths) retrieve and rerank at each depth, as a pipeline
    with that ``candidates`` would. Returns a JSON-ready report: ``rows`` (one
    per first stage × depth × setting × fusion, in table order), ``first_stages`` (metrics and latency of
    each first stage alone) and the run's settings; a run of exactly one combination also carries
    the keys of a single-setting report (``first_stage``, ``fusion``, ``metrics``,
    ``latency_ms``, ...), as before. ``late`` (a multi-vector model) adds late interaction's rows
    at each of ``late_candidates`` and the three stages (see :mod:`crossrank.cli.eval_late`), and
    the report's ``late`` entry (the store: size, time to index).
    """
    from tqdm.auto import tqdm

    from crossrank.errors import InvalidArgumentError
    from crossrank.inputs import check_positive_int
    from crossrank.reranker import Reranker
    from crossrank.results import Candidate
    from crossrank.retrieval.beir import BeirDataset, dense_pipeline, evaluate, first_stage_runs, load_beir

    sources = _listed(first_stage)
    fusions = _listed(fusion)
    lengths = _listed(max_length)
    modes = _listed(long_documents)
    for name, values, choices in (("first_stage", sources, SOURCES), ("fusion", fusions, FUSION_CHOICES)):
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise InvalidArgumentError(f"{name}={bad or values!r} is not supported; choose from {', '.join(choices)}")
    depths = sorted(_listed(candidates))
    if not depths:
        raise InvalidArgumentError("candidates needs at least one depth")
    for depth in depths:
        check_positive_int("candidates", depth)
    late_depths = sorted(_listed(late_candidates)) if late else []
    for depth in late_depths:
        check_positive_int("late_candidates", depth)
    retrieved = sorted(set(depths) | set(late_depths))  # every depth some row reads the first stage at
    deepest = retrieved[-1]

    ds = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset, split)
    queries = ds.test_queries(limit)
    # Several collections (``collection="base,distilled"``): their dense and hybrid rows side by side,
    # labelled "dense · NAME", reranked through one score cache; BM25 does not depend on them.
    pipes = []
    if any(s in ("dense", "hybrid") for s in sources) or late:
        for coll in _listed(collection) if collection else [None]:
            pipes.append(
                dense_pipeline(ds, embedder=embedder, db=db, chroma_url=chroma_url, collection=coll, progress=progress)
            )
    # runs_at[depth][source][qid]: each depth's own lists, as a pipeline with candidates=depth retrieves
    # them (a hybrid top 30 fuses two top-30 lists: not the first 30 of a fused top 100).
    runs_at: dict[int, dict[str, dict[str, list[str]]]] = {d: {} for d in retrieved}
    seconds: dict[str, list[float]] = {}
    embedders: dict[str, str] = {}
    for n, p in enumerate(pipes or [None]):
        wanted = [s for s in sources if n == 0 or s != "bm25"]
        for depth in reversed(retrieved):
            got, took_s = first_stage_runs(ds, queries, wanted, candidates=depth, dense=p)
            for s in wanted:
                key = f"{s} · {p.collection_name}" if len(pipes) > 1 and s != "bm25" and p is not None else s
                runs_at[depth][key] = got[s]
                seconds.setdefault(key, took_s[s])  # the deepest retrieval's latency
                if p is not None and s != "bm25":
                    embedders[key] = p.embedder
    runs = runs_at[deepest]
    base_order = {s: i for i, s in enumerate(sources)}
    sources = sorted(runs, key=lambda k: base_order[k.split(" · ")[0]])  # stable: collections keep their order
    first = {s: {"metrics": evaluate(runs[s], ds.qrels), "latency_ms": _lat(seconds[s])} for s in sources}
    pipe = pipes[0] if len(pipes) == 1 else None

    # One reranker (and one score cache) per max_length; long_documents and fusion are per call.
    cache_size = max(1, len(queries) * deepest * len(sources) * len(modes))
    rerankers = {ml: Reranker(model, max_length=ml, cache_size=cache_size, **reranker_kwargs) for ml in lengths}
    rows: list[dict[str, Any]] = []
    for rr, depth in ((rr, d) for rr in rerankers.values() for d in depths):
        rr.warmup()  # load (and export or compile) the model before anything is timed
        if rr.cache is not None:
            rr.cache.clear()  # each depth timed cold: another depth's scores would make it look free
        for mode in modes:
            cold: list[float] = []  # rerank seconds per query on this setting's first first stage
            for i, source in enumerate(sources):
                reranked: dict[str, dict[str, list[str]]] = {f: {} for f in fusions}
                took: list[float] = []
                truncated = long = windows = docs = scored = hits = 0
                desc = f"{source} → {mode} {rr.max_length}" + (f", top {depth}" if len(depths) > 1 else "")
                for qid, text in tqdm(queries, unit="query", desc=desc, disable=not progress):
                    cands = [Candidate(ds.doc_text(d), id=d) for d in runs_at[depth][source][qid]]
                    for j, f in enumerate(fusions):
                        t = time.perf_counter()
                        res = rr.rerank(text, cands, long_documents=mode, fusion=f)
                        if j == 0:
                            took.append(time.perf_counter() - t)
                            truncated += res.stats.truncated
                            docs += res.stats.candidates
                            windows += sum(r.windows for r in res)
                            long += sum(r.truncated or r.windows > 1 for r in res)
                            scored += res.stats.pairs_scored
                            hits += res.stats.cache_hits
                        if observe is not None:
                            setting = {"first_stage": source, "max_length": rr.max_length, "long_documents": mode}
                            observe({**setting, "fusion": f}, qid, res)
                        reranked[f][qid] = [r.id or "" for r in res]
                if i == 0:
                    cold = took
                for f in fusions:
                    rows.append(
                        {
                            "first_stage": source,
                            "candidates": depth,
                            "max_length": rr.max_length,
                            "long_documents": mode,
                            "fusion": f,
                            "metrics": evaluate(reranked[f], ds.qrels),
                            "rerank_ms": _lat(cold),
                            "pass_ms": _lat(took),
                            "pairs_scored": scored,
                            "cache_hits": hits,
                            "truncated_fraction": truncated / docs if docs else 0.0,
                            "long_fraction": long / docs if docs else 0.0,
                            "windows_per_doc": windows / docs if docs else 0.0,
                        }
                    )
    late_info = None
    if late:
        from crossrank.cli.eval_late import late_rows

        late_found, late_info = late_rows(
            ds,
            queries,
            runs_at,
            sources,
            pipe=pipes[0],
            late=late,
            late_depths=late_depths,
            ce_depths=depths,
            reranker=next(iter(rerankers.values())),
            long_documents=modes[0],
            late_store=late_store,
            fusions=fusions,
            db=db,
            chroma_url=chroma_url,
            progress=progress,
            latency=_lat,
        )
        rows += late_found
    order = {s: i for i, s in enumerate(sources)}
    rows.sort(key=lambda r: order[r["first_stage"]])  # stable: settings and fusions keep their order
    rr0 = next(iter(rerankers.values()))
    report: dict[str, Any] = {
        "dataset": str(ds.path),
        "split": split,
        "queries": len(queries),
        "candidates": depths[0] if len(depths) == 1 else depths,
        "model": rr0.model_name,
        "backend": rr0.backend_name,
        "embedder": pipe.embedder if pipe is not None else None,
        "embedders": embedders,
        "first_stages": first,
        "rows": rows,
    }
    if late_info is not None:
        report["late"] = late_info
    if len(rows) == 1:
        row = rows[0]
        report.update(
            {
                "first_stage": row["first_stage"],
                "max_length": row["max_length"],
                "long_documents": row["long_documents"],
                "fusion": row["fusion"],
                "metrics": {"first_stage": first[row["first_stage"]]["metrics"], "reranked": row["metrics"]},
                "latency_ms": {"first_stage": first[row["first_stage"]]["latency_ms"], "rerank": row["rerank_ms"]},
                "truncated_fraction": row["truncated_fraction"],
            }
        )
    return report


def format_report(r: dict[str, Any]) -> str:
    """The report as a Markdown table (first stage | rerank | fusion | nDCG@10 | R@10 | ms/query) and notes."""
    embedder = f" · embedder {common.embedder_label(r['embedder'])}" if r.get("embedder") else ""
    depths = r["candidates"] if isinstance(r["candidates"], list) else [r["candidates"]]

    def top(row: dict[str, Any]) -> str:
        """The row's depth for its labels, when the run has several."""
        return f", top {row['candidates']}" if len(depths) > 1 else ""

    lines = [
        f"{Path(r['dataset']).name} ({r['split']}): {r['queries']} queries · "
        f"top-{'/'.join(map(str, depths))} candidates · "
        f"{Path(r['model']).name} ({r['backend']}){embedder}",
        "",
        "| first stage | rerank | fusion | nDCG@10 | R@10 | ms/query |",
        "|---|---|---|---:|---:|---:|",
    ]
    for stage, first in r["first_stages"].items():
        m = first["metrics"]
        lines.append(
            f"| {stage} | — | — | {m['ndcg@10']:.4f} | {m['recall@10']:.3f} | {_ms(first['latency_ms']['p50'])} |"
        )
        for row in (x for x in r["rows"] if x["first_stage"] == stage):
            m = row["metrics"]
            setting = row.get("label") or f"{row['long_documents']} {row['max_length']}{top(row)}"
            lines.append(
                f"| {stage} | {setting} | {row['fusion']} | "
                f"{m['ndcg@10']:.4f} | "
                f"{m['recall@10']:.3f} | {row['rerank_ms']['p50']:.0f} |"
            )
    if not r.get("embedder") and len(set(r.get("embedders", {}).values())) > 1:
        lines += ["", *(f"{k}: embedder {common.embedder_label(v)}" for k, v in r["embedders"].items())]
    lines += [
        "",
        "ms/query: the first stage's p50 on its own rows; on reranked rows the rerank p50 of that setting, "
        "timed on the first first stage (nothing cached yet; later first stages and rrf reuse cached scores)"
        + (
            "; top k: the reranker saw the first stage's top k (a pipeline with candidates=k)."
            if len(depths) > 1
            else "."
        ),
        "latency per query (p50 / p95): "
        + " · ".join(
            f"{s} {_ms(f['latency_ms']['p50'])} / {_ms(f['latency_ms']['p95'])} ms"
            for s, f in r["first_stages"].items()
        ),
    ]
    seen: set[tuple[Any, ...]] = set()
    if r.get("late"):
        li = r["late"]
        lines.append(
            f"late interaction: {Path(li['model']).name}, {li['dim']}-dim {li['precision']} vectors"
            + (f" pooled by {li['pool_factor']}" if li.get("pool_factor") else "")
            + f", {li['chunks']} documents in {li['store_bytes'] / 1e6:.1f} MB (this run encoded {li['encoded']} "
            f"in {li['seconds']:.1f}s); its rows time encoding the query, reading the candidates' stored vectors "
            "and MaxSim (and the cross-encoder on its top k)"
        )
    for row in r["rows"]:
        if row.get("stage"):
            continue
        key = (row["max_length"], row["long_documents"], row.get("candidates"))
        if key in seen:
            continue
        seen.add(key)
        what = (
            f"{row['windows_per_doc']:.2f} windows per candidate" if row["long_documents"] == "windows" else "truncated"
        )
        lines.append(
            f"rerank {row['long_documents']} {row['max_length']}{top(row)}: p50 {row['rerank_ms']['p50']:.0f} / "
            f"p95 {row['rerank_ms']['p95']:.0f} ms · candidates longer than max_length: "
            f"{100 * row['long_fraction']:.0f}% ({what})"
        )
    return "\n".join(lines)
