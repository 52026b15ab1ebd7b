"""The ``crossrank`` command: index, query, demo, eval.

Errors are one line on stderr that says what to do, with exit status 2; ``--json`` prints
machine-readable results on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from crossrank.errors import CrossrankError

DEMO_COLLECTION = "crossrank-demo"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _movement(old: int, new: int) -> str:
    d = old - new
    return "  =" if d == 0 else (f"↑{d:>2}" if d > 0 else f"↓{-d:>2}")


def _source(meta: dict[str, Any], fallback: str) -> str:
    src = meta.get("source")
    if isinstance(src, str) and src:
        name = Path(src).name
        return f"{name}#{meta.get('chunk', 0)}" if "chunk" in meta and not name.endswith(".jsonl") else name
    return str(meta.get("topic") or fallback)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", default=None, help="Chroma collection name (default: crossrank)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db", default=None, help="embedded Chroma folder (default: $CROSSRANK_DB or the user data dir)")
    g.add_argument("--chroma-url", default=None, help="use a Chroma server, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--embedder", default=None, help="bi-encoder id or folder (default: $CROSSRANK_EMBEDDER or all-MiniLM-L6-v2)"
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="cross-encoder id or folder (default: $CROSSRANK_MODEL or ms-marco-MiniLM-L6-v2)"
    )
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "openvino", "torch"])
    p.add_argument("--quantize", default="auto", choices=["auto", "int8", "bf16", "fp32"])
    p.add_argument(
        "--max-length", type=int, default=None, help="tokens per pair (default: the model's declared maximum)"
    )
    p.add_argument("--long-documents", default="truncate", choices=["truncate", "windows"])
    p.add_argument("--normalize", default="none", choices=["none", "sigmoid", "softmax", "minmax"])


def _reranker_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "backend": args.backend,
        "quantize": args.quantize,
        "max_length": args.max_length,
        "long_documents": args.long_documents,
        "normalize": args.normalize,
    }


def _model(args: argparse.Namespace) -> str:
    from crossrank.model_files import DEFAULT_MODEL

    return args.model or os.environ.get("CROSSRANK_MODEL") or DEFAULT_MODEL


def _pipeline(
    args: argparse.Namespace, *, create: bool, collection: str | None = None, hybrid: bool = False, **extra: Any
) -> Any:
    from crossrank.retrieval.pipeline import Pipeline

    kwargs = _reranker_kwargs(args) if hasattr(args, "backend") else {}
    kwargs.update(extra)
    return Pipeline(
        collection or args.collection or "crossrank",
        db=args.db,
        chroma_url=args.chroma_url,
        embedder=args.embedder,
        reranker=_model(args) if hasattr(args, "model") else None,
        create=create,
        hybrid=hybrid,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------- index
def cmd_index(args: argparse.Namespace) -> int:
    from crossrank.retrieval.pipeline import Pipeline

    pipe = Pipeline(
        args.collection or "crossrank", db=args.db, chroma_url=args.chroma_url, embedder=args.embedder, create=True
    )
    overlap = args.overlap if args.overlap is not None else args.chunk_size // 5
    rep = pipe.index_paths(
        args.paths, chunk_size=args.chunk_size, overlap=overlap, progress=not args.json and not args.quiet
    )
    out = {
        "files": rep.files,
        "chunks": rep.chunks,
        "removed_stale": rep.removed,
        "collection": rep.collection,
        "total_in_collection": rep.count,
        "seconds": round(rep.seconds, 2),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"indexed {rep.chunks} chunks from {rep.files} files into '{rep.collection}' "
            f"({rep.count} in collection, {rep.removed} stale chunks removed) in {rep.seconds:.1f}s"
        )
    return 0


# ---------------------------------------------------------------------------------------- query
def _print_results(res: Any, *, snippet: int = 70) -> None:
    print(f"{'new':>3} {'old':>4} {'move':>4} {'score':>7} {'dist':>6}  {'source':<24} text")
    for h in res.hits:
        dist = f"{h.distance:.3f}" if h.distance is not None else "   -"
        print(
            f"{h.rank:>3} {h.first_stage_rank:>4} {_movement(h.first_stage_rank, h.rank):>4} {h.score:>7.3f} "
            f"{dist:>6}  {_shorten(_source(h.metadata, h.id), 24):<24} {_shorten(h.text, snippet)}"
        )
    print(
        f"stage 1 (Chroma, {res.candidates} candidates): {res.retrieve_ms:.0f} ms · "
        f"stage 2 (rerank, {res.backend}): {res.rerank_ms:.0f} ms · model: {res.model}"
    )
    print(
        "score: cross-encoder relevance ("
        + ("raw logit" if res.normalize == "none" else res.normalize)
        + ", higher is better); dist: Chroma cosine distance (lower is closer), not relevance"
    )


def cmd_query(args: argparse.Namespace) -> int:
    where = json.loads(args.where) if args.where else None
    where_doc = json.loads(args.where_document) if args.where_document else None
    pipe = _pipeline(args, create=False, hybrid=args.hybrid)
    res = pipe.search(
        args.text,
        top_n=args.top_n,
        candidates=args.candidates,
        where=where,
        where_document=where_doc,
        threshold=args.threshold,
    )
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False))
    else:
        _print_results(res)
    return 0


# ---------------------------------------------------------------------------------------- demo
def demo_files() -> tuple[Path, list[str]]:
    data = resources.files("crossrank") / "data"
    corpus = Path(str(data / "demo_corpus.jsonl"))
    queries = json.loads((data / "demo_queries.json").read_text(encoding="utf-8"))
    return corpus, queries


def cmd_demo(args: argparse.Namespace) -> int:
    corpus, queries = demo_files()
    if args.query:
        queries = args.query
    n_docs = sum(1 for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip())
    pipe = _pipeline(args, create=True, collection=args.collection or DEMO_COLLECTION)
    if pipe.count() != n_docs:
        if not args.json:
            print(f"indexing the demo corpus ({n_docs} passages) with {_embedder_label(pipe.embedder)} …")
        pipe.index_paths([corpus], progress=not args.json)
    out = []
    if not args.json:
        print(
            f"\ncrossrank demo — {n_docs} passages on {len(set(_topics(corpus)))} topics, with near-misses\n"
            f"stage 1: {_embedder_label(pipe.embedder)} embeddings in Chroma · stage 2: cross-encoder "
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
            left = _shorten(found[i][0].text, 52) if i < len(found) else ""
            h = res.hits[i] if i < len(res.hits) else None
            right = f"{_shorten(h.text, 52)}  [{h.score:+.2f}, was #{h.first_stage_rank}]" if h else ""
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


def _embedder_label(spec: str) -> str:
    from crossrank.retrieval.embeddings import offline_minilm_path

    local = offline_minilm_path()
    return "all-MiniLM-L6-v2 (bundled copy)" if local is not None and spec == str(local) else spec


def _topics(corpus: Path) -> list[str]:
    return [json.loads(line).get("metadata", {}).get("topic", "") for line in corpus.read_text().splitlines() if line]


# ---------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from crossrank.cli.eval import run_eval

    report = run_eval(
        args.dataset,
        limit=args.limit,
        candidates=args.candidates,
        first_stage=args.first_stage,
        model=_model(args),
        embedder=args.embedder,
        db=args.db,
        chroma_url=args.chroma_url,
        collection=args.collection,
        split=args.split,
        fusion=args.fusion,
        progress=not args.json,
        **_reranker_kwargs(args),
    )
    if args.json:
        print(json.dumps(report))
    else:
        from crossrank.cli.eval import format_report

        print(format_report(report))
    return 0


# ---------------------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from crossrank.cli.bench import METHODS, run

    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    unknown = set(methods) - set(METHODS)
    if unknown:
        from crossrank.errors import InvalidArgumentError

        raise InvalidArgumentError(f"unknown --methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    res = run(
        _model(args),
        Path(args.dataset),
        quick=args.quick,
        repeats=args.repeats,
        methods=methods,
        fidelity_queries=args.fidelity_queries,
    )
    print(json.dumps({k: v for k, v in res.items() if k != "table"}) if args.json else res["table"])
    return 0


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossrank", description="Cross-encoder reranking over Chroma.")
    p.add_argument("--version", action="version", version=f"crossrank {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    pi = sub.add_parser("index", help="index .txt/.md/.jsonl files into a Chroma collection")
    pi.add_argument("paths", nargs="+")
    _add_store_args(pi)
    pi.add_argument("--chunk-size", type=int, default=1000, help="characters per chunk (default 1000)")
    pi.add_argument(
        "--overlap", type=int, default=None, help="characters shared by neighbouring chunks (default: a fifth)"
    )
    pi.add_argument("--json", action="store_true")
    pi.add_argument("--quiet", action="store_true")
    pi.set_defaults(func=cmd_index)

    pq = sub.add_parser("query", help="two-stage search: Chroma recall, then rerank")
    pq.add_argument("text")
    _add_store_args(pq)
    _add_model_args(pq)
    pq.add_argument("--top-n", type=int, default=10)
    pq.add_argument("--candidates", type=int, default=100)
    pq.add_argument("--threshold", type=float, default=None)
    pq.add_argument("--hybrid", action="store_true", help="fuse BM25 with the dense first stage (reciprocal rank)")
    pq.add_argument("--where", default=None, help='metadata filter as JSON, e.g. \'{"source": "a.md"}\'')
    pq.add_argument("--where-document", default=None, help='document filter as JSON, e.g. \'{"$contains": "aspirin"}\'')
    pq.add_argument("--json", action="store_true")
    pq.set_defaults(func=cmd_query)

    pd = sub.add_parser("demo", help="index a bundled sample corpus and show how reranking reorders results")
    _add_store_args(pd)
    _add_model_args(pd)
    pd.add_argument("--top-n", type=int, default=5)
    pd.add_argument("--candidates", type=int, default=30)
    pd.add_argument("--query", action="append", help="your own query (repeatable) instead of the examples")
    pd.add_argument("--json", action="store_true")
    pd.set_defaults(func=cmd_demo)

    pe = sub.add_parser("eval", help="evaluate first stage vs reranked on a BEIR dataset folder")
    pe.add_argument("dataset")
    _add_store_args(pe)
    _add_model_args(pe)
    pe.add_argument("--limit", type=int, default=None, help="evaluate only the first N queries")
    pe.add_argument("--candidates", type=int, default=100)
    pe.add_argument("--first-stage", default="dense", choices=["dense", "bm25", "hybrid"])
    pe.add_argument("--fusion", default="none", choices=["none", "rrf"])
    pe.add_argument("--split", default="test")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(func=cmd_eval)

    pb = sub.add_parser("bench", help="benchmark scoring paths side by side (speed, cold start, RSS, fidelity)")
    pb.add_argument("--model", default=None, help="cross-encoder folder (default: $CROSSRANK_MODEL)")
    pb.add_argument("--dataset", required=True, help="BEIR folder for passages and fidelity (e.g. beir-scifact)")
    pb.add_argument("--quick", action="store_true", help="headline workload only (100 candidates × 200 tokens)")
    pb.add_argument("--repeats", type=int, default=5)
    pb.add_argument(
        "--methods", default=None, help="comma list from st,torch,onnx-fp32,onnx-int8,openvino-bf16,openvino-int8"
    )
    pb.add_argument("--fidelity-queries", type=int, default=50)
    pb.add_argument("--json", action="store_true")
    pb.set_defaults(func=cmd_bench)
    return p


def _version() -> str:
    from crossrank import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    t = time.perf_counter()
    try:
        return int(args.func(args))
    except CrossrankError as exc:
        print(f"crossrank: error: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"crossrank: error: --where/--where-document is not valid JSON ({exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"crossrank: interrupted after {time.perf_counter() - t:.1f}s", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
