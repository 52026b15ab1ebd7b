"""What each fine-tuning choice does: ``crossrank finetune`` variants on SciFact, each measured on the test claims.

    # once, where the Chroma cache of the corpus lives: the test claims' first-stage lists
    python benchmarks/finetune_variants.py lists --dataset ../shared/data/beir-scifact \
        --db runs/training/db --out runs/variants/lists.json
    # then, on any machine (a GPU is used when torch sees one): train the variants and measure them
    python benchmarks/finetune_variants.py run --dataset ../shared/data/beir-scifact \
        --base <all-MiniLM-L6-v2 folder> --lists runs/variants/lists.json --work runs/variants \
        --candidates-from runs/training/reranker \
        --variants "recipe;loss=bce;negatives=1;negatives=7;epochs=2;max_length=128"

Every variant is the recipe of ``benchmarks/training_table.py``'s finetune run (listwise, 3 hard
negatives from the dense and BM25 top-30, 3 groups per positive, 1 epoch, batch 4, lr 5e-5, the
length chosen from the data) with the settings the variant names changed, trained on the 809
train claims only and measured on the 300 test claims: the dense top-30 reranked at 256 tokens
(nDCG@10), as the training table measures it. Variants that keep the candidate settings reuse the
mined lists of a finished run (``--candidates-from``), so a machine without the Chroma cache (a
GPU machine) trains on exactly the same negatives.

With ``--teacher`` the variants are distillations (``crossrank finetune --teacher``): ``layers=2``
cuts the teacher to its first two layers, and ``--cascade`` adds the cascade measurement: the
variant prunes each claim's BM25 top-100 to k, the teacher orders those (nDCG@10 per k), beside
the teacher alone on the same lists. Speed is not measured here (train on a GPU, time on the CPU
you serve from: ``benchmarks/cascade_curve.py --first-model``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from crossrank import Reranker
from crossrank.cpuinfo import describe
from crossrank.retrieval.beir import BeirDataset, evaluate, load_beir
from crossrank.training.common import describe_device, training_device
from crossrank.training.finetune import FinetuneConfig, finetune
from crossrank.training.runstate import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_curve import cascade_order  # sibling scripts: one cascade order, one recipe
from training_table import FULL

RECIPE: dict[str, Any] = dict(FULL["finetune"])
"""The recipe of ``training_table.py``'s finetune run (the README's training table)."""
MINING = ("candidates", "mine_from", "collection", "embedder")
"""Settings that change the mined lists (every train claim's, whatever the split): a variant changing
one of them mines its own."""
KEEPS = (10, 20, 30, 50)


def parse_variants(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """``"recipe;loss=bce;a:negatives=7,epochs=2"`` -> [(name, overrides)]; values are JSON or bare strings."""
    out = []
    for item in (s.strip() for s in spec.split(";")):
        if not item:
            continue
        name, _, body = item.rpartition(":") if ":" in item else ("", "", item)
        overrides: dict[str, Any] = {}
        if body != "recipe":
            for kv in body.split(","):
                key, _, value = kv.partition("=")
                if not key or not value:
                    raise SystemExit(f"--variants: {kv!r} is not KEY=VALUE")
                try:
                    overrides[key.strip()] = json.loads(value)
                except ValueError:
                    overrides[key.strip()] = value.strip()
        out.append((name or body, overrides))
    return out


def write_lists(args: argparse.Namespace) -> int:
    """The test claims' dense and BM25 top-100 (ids), from the Chroma cache the training table built."""
    from crossrank.retrieval.beir import dense_pipeline, first_stage_runs

    ds = load_beir(args.dataset)
    qs = ds.test_queries()
    runs, _ = first_stage_runs(ds, qs, ["dense", "bm25"], candidates=100, dense=dense_pipeline(ds, db=args.db))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"queries": [q for q, _ in qs], **runs}))
    for name, run in runs.items():
        print(f"{name}: {len(run)} claims, first stage alone {evaluate(run, ds.qrels)['ndcg@10']:.4f} nDCG@10")
    return 0


def scores(rr: Reranker, ds: BeirDataset, lists: dict[str, list[str]], k: int) -> dict[str, np.ndarray]:
    """The model's scores of each claim's first ``k`` candidates."""
    return {
        q: np.asarray(rr.score(ds.queries[q], [ds.doc_text(d) for d in ids[:k]]), dtype=np.float64)
        for q, ids in lists.items()
    }


def ordered(lists: dict[str, list[str]], s: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Each list sorted by score, ties in first-stage order."""
    return {q: [lists[q][i] for i in sorted(range(len(v)), key=lambda i: (-v[i], i))] for q, v in s.items()}


def cascade(lists: dict[str, list[str]], prune: dict[str, np.ndarray], full: dict[str, np.ndarray], k: int) -> Any:
    """The prune model's top ``k`` reordered by the full model, the rest in prune order (as ``Cascade``)."""
    return {q: [lists[q][i] for i in cascade_order(p, full[q], k)] for q, p in prune.items()}


def seed_candidates(config: FinetuneConfig, source: Path | None) -> bool:
    """Copy a finished run's mined lists into this run's folder (same mining settings only)."""
    if source is None:
        return False
    src = source / ".train" / "candidates.json"
    old = json.loads((source / ".train" / "settings.json").read_text())["settings"]
    now = config.settings()
    if not src.is_file() or any(str(old.get(k)) != str(now.get(k)) for k in MINING):
        return False
    run = RunDir(config.out, now)
    dest = run.work / "candidates.json"
    if not dest.is_file():
        shutil.copyfile(src, dest)
    return True


def run_variants(args: argparse.Namespace) -> int:
    """Train every variant (resumable), measure it on the test claims, print the table."""
    ds = load_beir(args.dataset)
    saved = json.loads(Path(args.lists).read_text())
    claims = saved["queries"][: args.queries or None]
    dense30 = {q: saved["dense"][q][:30] for q in claims}
    bm25 = {q: saved["bm25"][q] for q in claims}
    device = training_device("auto")
    results: list[dict[str, Any]] = []
    out_json = Path(args.json) if args.json else args.work / "variants.json"
    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    header = {
        "hardware": describe_device(device),
        "cpu": describe(),
        "first_stage_dense30": evaluate(dense30, ds.qrels),
    }
    reference: dict[str, Any] = {}
    if args.teacher:
        teacher = Reranker(args.teacher, max_length=256)
        t_dense = scores(teacher, ds, dense30, 30)
        reference["teacher_dense30"] = evaluate(ordered(dense30, t_dense), ds.qrels)
        if args.cascade:
            t_bm25 = scores(teacher, ds, bm25, 100)
            reference["teacher_bm25_100"] = evaluate(ordered(bm25, t_bm25), ds.qrels)
            reference["bm25_alone"] = evaluate(bm25, ds.qrels)
        del teacher
    print(json.dumps({**header, **{k: v["ndcg@10"] for k, v in reference.items()}}), flush=True)
    for name, overrides in parse_variants(args.variants):
        if args.budget_min and (time.perf_counter() - t_start) / 60 > args.budget_min:
            results.append({"variant": name, "skipped": f"budget of {args.budget_min} min spent"})
            continue
        settings = {**RECIPE, **overrides}
        config = FinetuneConfig(
            train=args.dataset,
            out=args.work / name.replace("=", "-").replace(",", "_"),
            base=args.base,
            teacher=args.teacher,
            progress=not args.quiet,
            **settings,
        )
        reused = seed_candidates(config, args.candidates_from)
        try:
            report = finetune(config)
        except Exception as exc:  # one variant failing must not lose the others' numbers
            results.append({"variant": name, "error": f"{type(exc).__name__}: {exc}"})
            out_json.write_text(json.dumps({**header, "reference": reference, "variants": results}, indent=1))
            continue
        rr = Reranker(report.out, max_length=256)
        row: dict[str, Any] = {
            "variant": name,
            "overrides": overrides,
            "reused_candidates": reused,
            "steps": report.steps,
            "max_length": report.max_length,
            "train_minutes": report.seconds / 60,
            "loss_first_last": [report.losses[0], report.losses[-1]] if report.losses else None,
            "held_out": report.after,
            "test_dense30": evaluate(ordered(dense30, scores(rr, ds, dense30, 30)), ds.qrels),
        }
        if args.teacher and args.cascade:
            own = Reranker(report.out)
            p = scores(own, ds, bm25, 100)
            row["alone_bm25_100"] = evaluate(ordered(bm25, p), ds.qrels)
            row["cascade"] = {k: evaluate(cascade(bm25, p, t_bm25, k), ds.qrels)["ndcg@10"] for k in KEEPS}
        results.append(row)
        out_json.write_text(json.dumps({**header, "reference": reference, "variants": results}, indent=1))
        print(
            json.dumps(
                {k: row[k] for k in ("variant", "steps", "train_minutes")}
                | {"test": row["test_dense30"]["ndcg@10"], "cascade": row.get("cascade")}
            ),
            flush=True,
        )
        if args.drop_models:
            shutil.rmtree(report.out, ignore_errors=True)
    print(table(header, reference, results))
    return 0


def table(header: dict[str, Any], reference: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The Markdown table: one row per variant, Δ against the first (the recipe)."""
    base = next((r for r in results if "test_dense30" in r), None)
    lines = [
        f"Fine-tuning variants on SciFact · trained on: {header['hardware']}",
        f"test claims: dense top-30 alone {header['first_stage_dense30']['ndcg@10']:.4f} nDCG@10"
        + "".join(f" · {k} {v['ndcg@10']:.4f}" for k, v in reference.items()),
        "",
        "| variant | steps | max len | train min | held-out nDCG@10 | test nDCG@10 (dense top-30 @256) | Δ vs first |"
        + (" cascade k=" + "/".join(map(str, KEEPS)) + " |" if any("cascade" in r for r in results) else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---|" if any("cascade" in r for r in results) else ""),
    ]
    for r in results:
        if "test_dense30" not in r:
            lines.append(f"| {r['variant']} | {r.get('error') or r.get('skipped')} |")
            continue
        t = r["test_dense30"]["ndcg@10"]
        d = t - base["test_dense30"]["ndcg@10"] if base else 0.0
        casc = " " + " / ".join(f"{r['cascade'][k]:.4f}" for k in KEEPS) + " |" if "cascade" in r else ""
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['max_length']} | {r['train_minutes']:.1f} | "
            f"{r['held_out'].get('ndcg@10', float('nan')):.4f} | {t:.4f} | {d:+.4f} |{casc}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    li = sub.add_parser("lists", help="write the test claims' dense and BM25 top-100")
    li.add_argument("--dataset", required=True)
    li.add_argument("--db", required=True, help="the Chroma folder holding the embedded corpus")
    li.add_argument("--out", required=True)
    li.set_defaults(func=write_lists)
    r = sub.add_parser("run", help="train and measure the variants")
    r.add_argument("--dataset", required=True)
    r.add_argument("--lists", required=True, help="the file `lists` wrote")
    r.add_argument("--base", default=None, help="start model (default: the teacher, else crossrank's default)")
    r.add_argument("--teacher", default=None, help="distil from this cross-encoder (soft labels)")
    r.add_argument("--work", type=Path, default=Path("runs/variants"))
    r.add_argument("--candidates-from", type=Path, default=None, help="a finished run whose mined lists to reuse")
    r.add_argument("--variants", default="recipe", help="';'-separated: recipe, KEY=VALUE[,KEY=VALUE], NAME:...")
    r.add_argument("--cascade", action="store_true", help="with --teacher: measure each variant as a cascade pruner")
    r.add_argument("--budget-min", type=float, default=0.0, help="start no variant after this many minutes")
    r.add_argument("--drop-models", action="store_true", help="delete each trained model after measuring it")
    r.add_argument("--queries", type=int, default=0, help="measure on the first N test claims (0: all 300)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--json", default=None, help="write every number here (default: WORK/variants.json)")
    r.set_defaults(func=run_variants)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
