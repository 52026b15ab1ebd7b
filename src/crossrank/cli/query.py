"""``crossrank query``: two-stage search (Chroma recall, then rerank) printed as a table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from crossrank.cli import common
from crossrank.errors import InvalidArgumentError
from crossrank.jsonl import json_object


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``query`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser("query", help="two-stage search: Chroma recall, then rerank")
    p.add_argument("text")
    common.add_store_args(p)
    common.add_model_args(p)
    p.add_argument("--top-n", type=common.positive_int, default=10, help="hits to show (default 10)")
    p.add_argument(
        "--candidates",
        type=int,
        default=100,
        help="first-stage candidates the cross-encoder reranks (default 100); with --late-interaction, how many "
        "of late interaction's best it reranks (0: late interaction alone)",
    )
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--hybrid", action="store_true", help="fuse BM25 with the dense first stage (reciprocal rank)")
    p.add_argument(
        "--where",
        default=None,
        help='metadata filter as JSON, e.g. \'{"source": "/abs/path/a.md"}\' (sources are stored as absolute paths)',
    )
    p.add_argument("--where-document", default=None, help='document filter as JSON, e.g. \'{"$contains": "aspirin"}\'')
    p.add_argument("--json", action="store_true")
    late = common.add_late_args(p)
    late.add_argument(
        "--late-candidates",
        type=common.positive_int,
        default=200,
        help="first-stage candidates late interaction reorders (default 200)",
    )
    g = p.add_argument_group("LLM stage", "let an LLM reorder the cross-encoder's best candidates")
    g.add_argument(
        "--llm",
        default=None,
        metavar="URL",
        help="OpenAI-compatible server (vLLM, llama.cpp, Ollama), e.g. http://127.0.0.1:8080",
    )
    g.add_argument("--llm-model", default=None, help="served model name (default: the server's first model)")
    g.add_argument("--llm-mode", default="listwise", choices=("listwise", "pointwise"))
    g.add_argument("--llm-top-k", type=int, default=10, help="how many of the cross-encoder's best the LLM reorders")
    g.add_argument(
        "--llm-timeout", type=float, default=180.0, help="seconds per LLM request (default 180: time to think first)"
    )
    g.add_argument(
        "--llm-max-tokens",
        type=int,
        default=None,
        help="completion budget per LLM request (default: the answer plus room for a thinking model to reason)",
    )
    g.add_argument(
        "--llm-api-key",
        default=os.environ.get("CROSSRANK_LLM_API_KEY"),
        help="bearer token for the server (default: $CROSSRANK_LLM_API_KEY)",
    )
    p.set_defaults(func=run)
    return p


def _filter(text: str | None) -> dict[str, Any] | None:
    """A ``--where`` / ``--where-document`` value as a dict; bad JSON is a one-line usage error."""
    if not text:
        return None
    return json_object(text, "--where/--where-document", InvalidArgumentError, f"must be a JSON object, got {text!r}")


def _movement(old: int, new: int) -> str:
    d = old - new
    return "  =" if d == 0 else (f"↑{d:>2}" if d > 0 else f"↓{-d:>2}")


def print_results(res: Any, *, snippet: int = 70, embedder_runtime: str | None = None) -> None:
    """The result table: new and old rank, movement, score, distance, source, snippet; then timings."""
    print(f"{'new':>3} {'old':>4} {'move':>4} {'score':>7} {'dist':>6}  {'source':<24} text")
    for h in res.hits:
        dist = f"{h.distance:.3f}" if h.distance is not None else "   -"
        print(
            f"{h.rank:>3} {h.first_stage_rank:>4} {_movement(h.first_stage_rank, h.rank):>4} {h.score:>7.3f} "
            f"{dist:>6}  {common.shorten(common.source_label(h.metadata, h.id), 24):<24} "
            f"{common.shorten(h.text, snippet)}"
        )
    notes = []
    cut = sum(1 for h in res.hits if h.truncated)
    if cut:
        notes.append(
            f"{cut} of these {len(res.hits)} hits were cut to the model's max length (--long-documents windows "
            "scores every part)"
        )
    if not res.hits:
        notes.append(f"no hits ({res.candidates} candidates from stage 1; check --where / --threshold)")
    for note in notes:
        print(f"note: {note}")
    embedded = f", query embedded by {embedder_runtime}" if embedder_runtime else ""
    print(
        f"stage 1 (Chroma, {res.candidates} candidates{embedded}): {res.retrieve_ms:.0f} ms · "
        f"stage 2 (rerank, {res.backend}): {res.rerank_ms:.0f} ms · model: {res.model}"
    )
    print(
        "score: cross-encoder relevance ("
        + ("raw logit" if res.normalize == "none" else res.normalize)
        + ", higher is better); dist: Chroma cosine distance (lower is closer), not relevance"
    )


def run(args: argparse.Namespace) -> int:
    """Search once and print the hits."""
    where = _filter(args.where)
    where_doc = _filter(args.where_document)
    late = common.late_spec(args)
    if args.candidates < (0 if late is not None else 1):
        raise InvalidArgumentError(
            f"--candidates {args.candidates}: must be >= 1 (0, late interaction alone, needs --late-interaction)"
        )
    if late is not None and getattr(args, "llm", None):  # before Chroma is opened
        raise InvalidArgumentError("--late-interaction and --llm cannot be combined yet: pick one extra stage")
    extra = {"late": late, "late_candidates": args.late_candidates, "late_store": args.late_store} if late else {}
    pipe = common.pipeline(args, create=False, hybrid=args.hybrid, **extra)
    if getattr(args, "llm", None):
        return _run_with_llm(args, pipe, where, where_doc)
    res = pipe.search(
        args.text,
        top_n=args.top_n,
        candidates=args.candidates,
        where=where,
        where_document=where_doc,
        threshold=args.threshold,
    )
    if args.json:
        print(json.dumps({**res.to_dict(), "embedder_runtime": pipe.embedder_runtime}, ensure_ascii=False))
    else:
        print_results(res, embedder_runtime=pipe.embedder_runtime)
        if late is not None:
            print(
                f"late interaction ({args.late_interaction}) reordered the first stage's {res.candidates}; "
                + (
                    f"the cross-encoder reranked its best {args.candidates} (their scores are the cross-encoder's, "
                    "the rest late interaction's MaxSim)"
                    if args.candidates
                    else "scores are its MaxSim"
                )
            )
    return 0


def _run_with_llm(args: argparse.Namespace, pipe: Any, where: Any, where_doc: Any) -> int:
    """Three stages: Chroma recall, the cross-encoder over every candidate, the LLM over its top ``--llm-top-k``."""
    from crossrank.cascade import Cascade
    from crossrank.llm import LLMScorer
    from crossrank.reranker import Reranker
    from crossrank.retrieval.pipeline import SearchResults

    if args.llm_top_k < 1:
        raise InvalidArgumentError(f"--llm-top-k must be >= 1, got {args.llm_top_k}")
    scorer = LLMScorer(
        args.llm,
        model=args.llm_model,
        api_key=args.llm_api_key,
        mode=args.llm_mode,
        timeout_s=args.llm_timeout,
        max_completion_tokens=args.llm_max_tokens,
    )
    cascade = Cascade([(pipe.reranker, None), (Reranker(scorer), args.llm_top_k)])
    t0 = time.perf_counter()
    found = pipe.retrieve(args.text, candidates=args.candidates, where=where, where_document=where_doc)
    t1 = time.perf_counter()
    ranked = cascade.rerank(args.text, [c for c, _ in found], top_n=args.top_n, threshold=args.threshold)
    t2 = time.perf_counter()
    res = SearchResults.from_ranked(args.text, found, ranked, t1 - t0, t2 - t1)
    llm = dict(ranked.stats.scorer["stages"][-1]["scorer"]) if len(ranked.stats.scorer["stages"]) > 1 else {}
    if args.json:
        d = res.to_dict()
        for h, r in zip(d["hits"], ranked):
            h["stages"] = [{"name": s.name, "score": s.score, "rank": s.rank} for s in r.stages]
        d["llm"] = llm
        d["embedder_runtime"] = pipe.embedder_runtime
        print(json.dumps(d, ensure_ascii=False))
        return 0
    print_results(res, embedder_runtime=pipe.embedder_runtime)
    failures = llm.get("failures") or []
    failed = len(failures)
    print(
        f"LLM stage ({args.llm_mode}, top {args.llm_top_k}, {llm.get('model', args.llm)}): "
        f"{llm.get('llm_calls', 0)} calls, {llm.get('prompt_tokens', 0)} prompt + "
        f"{llm.get('completion_tokens', 0)} completion tokens"
        + (f", {failed} prompt(s) failed (kept the cross-encoder order there)" if failed else "")
        + (f" - {failures[0]['reason']}" if failed else "")
        + "; scores of the top rows are the LLM's, the rest the cross-encoder's"
    )
    return 0
