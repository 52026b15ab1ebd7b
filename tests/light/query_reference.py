"""The full install's ``crossrank query`` answers for the light-install check (``.ci/run``; issue #27).

Run with the full install: indexes SciFact abstracts into a new Chroma database with
sentence-transformers (the bundled all-MiniLM-L6-v2, recorded as the collection's embedder), then
asks ``crossrank query --json`` (its entry point, in this process) the first test claims,
reranking with the exported cross-encoder on ONNX Runtime fp32 (the path both installs run), and
writes the answers to JSON.
``tests/light/test_light_query.py``, in the torch-free venv, queries the same database with the
exported embedder (``crossrank export`` of the bi-encoder) and must get the same ids, distances and
scores.

    python tests/light/query_reference.py --export DIR --dataset BEIR_DIR --db DIR --out FILE
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from pathlib import Path

COLLECTION = "scifact-light"


def query_args(export: str, db: str, text: str) -> list[str]:
    """The ``crossrank query`` arguments both installs run (the light one adds ``--embedder``)."""
    return [
        "query",
        text,
        "--db",
        db,
        "--collection",
        COLLECTION,
        "--model",
        export,
        "--backend",
        "onnx",
        "--quantize",
        "fp32",
        "--top-n",
        "5",
        "--candidates",
        "20",
        "--json",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", required=True, help="the exported cross-encoder folder")
    p.add_argument("--dataset", required=True, help="BEIR SciFact folder")
    p.add_argument("--db", required=True, help="a new Chroma folder to index into")
    p.add_argument("--out", required=True)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--docs", type=int, default=300, help="abstracts indexed besides the claims' relevant ones")
    args = p.parse_args(argv)

    # The reference embeds with sentence-transformers itself, never with a cached ONNX export of it.
    os.environ["CROSSRANK_EMBEDDER_EXPORT"] = "0"
    from crossrank.cli import main
    from crossrank.retrieval.beir import load_beir
    from crossrank.retrieval.embeddings import offline_minilm_path
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline

    ds = load_beir(Path(args.dataset))
    claims = list(ds.test_queries(args.queries))
    ids = list(dict.fromkeys([d for qid, _ in claims for d in ds.qrels[qid]] + list(ds.corpus)[: args.docs]))
    pipe = Pipeline(COLLECTION, db=args.db, embedder=offline_minilm_path(), create=True)
    pipe.add_chunks([Chunk(id=d, text=ds.doc_text(d), metadata={"source": d}) for d in ids])
    answers = []
    for _, text in claims:
        # The command's own entry point, in this one process: the same code as `crossrank query`
        # without paying the interpreter's and torch's start-up once per claim.
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(query_args(args.export, args.db, text))
        if code != 0:
            raise SystemExit(f"crossrank query failed ({code}) for {text!r}")
        result = json.loads(out.getvalue())
        if result["embedder_runtime"] != "sentence-transformers":
            raise SystemExit(f"the reference must embed with sentence-transformers, not {result['embedder_runtime']}")
        answers.append({"text": text, "result": result})
    Path(args.out).write_text(
        json.dumps({"export": args.export, "db": args.db, "indexed": len(ids), "answers": answers})
    )
    print(f"query reference: {len(ids)} abstracts indexed, {len(answers)} claims asked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
