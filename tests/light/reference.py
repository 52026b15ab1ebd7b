"""The full install's scores for the light-install check (``.ci/run``; issue #27).

Run with the full install (torch, sentence-transformers): scores the first SciFact test claims'
candidates with the *source* model on the paths the full install has always run (ONNX Runtime fp32
and int8, built into its cache), and with sentence-transformers' ``CrossEncoder.predict`` (the
reference, outside crossrank), and writes them to JSON. ``tests/light/test_light_install.py``, run
in the torch-free venv on the exported folder, must reproduce them: fp32 within 1e-5, int8
identical.

    python tests/light/reference.py --source MODEL --export DIR --dataset BEIR_DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def candidates(dataset: Path, queries: int, others: int) -> list[dict[str, object]]:
    """Each of the first ``queries`` test claims with its relevant abstracts and ``others`` fixed ones."""
    from crossrank.retrieval.beir import load_beir

    ds = load_beir(dataset)
    fixed = list(ds.corpus)[:others]
    out = []
    for qid, text in ds.test_queries(queries):
        ids = list(dict.fromkeys([*ds.qrels[qid], *fixed]))
        out.append({"id": qid, "text": text, "doc_ids": ids, "docs": [ds.doc_text(d) for d in ids]})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="the source model folder (what was exported)")
    p.add_argument("--export", required=True, help="the exported folder (recorded for the light test)")
    p.add_argument("--dataset", required=True, help="BEIR SciFact folder")
    p.add_argument("--out", required=True)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--others", type=int, default=12, help="fixed non-relevant abstracts added to every claim")
    args = p.parse_args(argv)

    from sentence_transformers import CrossEncoder

    from crossrank import Reranker
    from crossrank.backends.onnx_backend import int8_model_variant
    from crossrank.cpuinfo import describe

    qs = candidates(Path(args.dataset), args.queries, args.others)
    scores: dict[str, list[list[float]]] = {}
    for name, kwargs in {"onnx-fp32": {"quantize": "fp32"}, "onnx-int8": {"quantize": "int8"}}.items():
        rr = Reranker(args.source, backend="onnx", **kwargs)
        scores[name] = [rr.score(str(q["text"]), q["docs"]) for q in qs]  # type: ignore[arg-type]
    ce = CrossEncoder(args.source, device="cpu")
    scores["sentence-transformers"] = [
        [float(x) for x in ce.predict([(q["text"], d) for d in q["docs"]], batch_size=32)]  # type: ignore[union-attr]
        for q in qs
    ]
    gap = max(
        abs(a - b) for fa, fb in zip(scores["onnx-fp32"], scores["sentence-transformers"]) for a, b in zip(fa, fb)
    )
    ref = {
        "source": str(Path(args.source).resolve()),
        "export": str(Path(args.export).resolve()),
        "dataset": str(Path(args.dataset).resolve()),
        "cpu": describe(),
        "int8_variant": int8_model_variant(),
        "queries": qs,
        "scores": scores,
        "max_abs_fp32_vs_sentence_transformers": gap,
    }
    Path(args.out).write_text(json.dumps(ref))
    pairs = sum(len(q["docs"]) for q in qs)  # type: ignore[arg-type]
    print(f"reference: {len(qs)} claims, {pairs} pairs; ONNX fp32 vs sentence-transformers max |Δ| {gap:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
