"""``crossrank distill`` over a real embedded Chroma in a temporary folder, with tiny random models.

A run trains the collection's own embedder on the teacher's scores, re-embeds the collection and
swaps it in; a failed rebuild leaves the old collection as it was; the collection records its
embedder and a different one is refused; an interrupted run resumes to the same model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.errors import EmbedderMismatchError, VectorStoreError
from crossrank.retrieval.embedder_record import EMBEDDER_KEY
from crossrank.training.testing import make_tiny_bi_encoder, tiny_corpus, tiny_queries

pytestmark = pytest.mark.integration  # a real Chroma database

NAME = "tiny-docs"


@pytest.fixture(scope="module")
def tiny_bi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bi_encoder(tmp_path_factory.mktemp("tiny-bi"))


@pytest.fixture(scope="module")
def other_bi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bi_encoder(tmp_path_factory.mktemp("other-bi"), seed=1)


@pytest.fixture
def db(tmp_path: Path, tiny_bi: Path) -> Path:
    """A Chroma folder with collection NAME: the tiny corpus embedded by ``tiny_bi``."""
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline

    path = tmp_path / "db"
    pipe = Pipeline(NAME, db=path, embedder=tiny_bi, create=True)
    pipe.add_chunks(
        [Chunk(d, t, {"source": "corpus.jsonl", "title": f"{t.split('.')[0]}"}) for d, t in tiny_corpus().items()]
    )
    return path


@pytest.fixture(scope="module")
def queries_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "queries.jsonl"
    path.write_text("\n".join(json.dumps({"query": q, "positive_ids": [d]}) for q, d in tiny_queries()) + "\n")
    return path


def _client(db: Path) -> Any:
    from crossrank.retrieval.chroma import open_client

    return open_client(db)


def _collections(db: Path) -> dict[str, Any]:
    return {c.name: c for c in _client(db).list_collections()}


def _config(db: Path, out: Path, teacher: Path, queries: Path | None, **kw: Any) -> Any:
    from crossrank.training.distill import DistillConfig

    settings: dict[str, Any] = {
        "collection": NAME,
        "out": out,
        "db": str(db),
        "teacher": str(teacher),
        "queries": queries,
        "pseudo_queries": 16,
        "candidates": 8,
        "negatives": 3,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "eval_fraction": 0.25,
        "teacher_backend": "torch",
        "progress": False,
    }
    settings.update(kw)
    return DistillConfig(**settings)


def test_distill_trains_reembeds_and_swaps_keeping_the_old_collection(
    db: Path, tmp_path: Path, tiny_model: Path, tiny_bi: Path, queries_file: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    from crossrank.retrieval.pipeline import Pipeline
    from crossrank.training.distill import distill

    out = tmp_path / "student"
    report = distill(_config(db, out, tiny_model, queries_file, epochs=6))
    assert report.student == str(tiny_bi), "the default student is the collection's own embedder"
    assert report.queries == {"train": 18, "held_out": 6}
    assert sum(report.losses[-3:]) < sum(report.losses[:3]), f"loss did not fall: {report.losses}"
    assert set(report.after) == {"ndcg@10", "mrr@10", "teacher_ndcg@10"}
    assert report.teacher["pairs_scored"] > 0 and report.teacher["backend"] == "torch-fp32"
    vectors = SentenceTransformer(str(out), device="cpu").encode(["aspirin and the heart", "solar panels"])
    assert vectors.shape == (2, 16) and np.isfinite(vectors).all()
    assert "the batch's other documents as negatives" in (out / "MODEL_CARD.md").read_text(), "the default loss"

    swap = report.swap
    assert swap is not None and swap["swapped"] and swap["collection"] == NAME and swap["count"] == 32
    cols = _collections(db)
    assert set(cols) == {NAME, swap["previous"]}
    assert cols[NAME].metadata[EMBEDDER_KEY] == str(out.resolve()) and cols[NAME].count() == 32
    assert cols[swap["previous"]].count() == 32, "the old collection is kept until the user deletes it"
    hits = Pipeline(NAME, db=db, embedder=out).dense_ids("is there an effect of coffee and sleep quality", 4)
    assert len(hits) == 4 and all(h in tiny_corpus() for h in hits)

    again = distill(_config(db, out, tiny_model, queries_file, epochs=6))  # finished: a no-op
    assert again.swap == swap and again.steps == report.steps and set(_collections(db)) == set(cols)


def test_teacher_scores_are_reused_by_a_restarted_run(
    db: Path, tmp_path: Path, tiny_model: Path, queries_file: Path
) -> None:
    from crossrank.training.distill import distill

    out = tmp_path / "student"
    first = distill(_config(db, out, tiny_model, queries_file, max_steps=2, evaluations=1, reembed=False, loss="kl"))
    assert "DistillKLDivLoss" in (out / "MODEL_CARD.md").read_text()
    assert first.swap is None and set(_collections(db)) == {NAME}, "--no-reembed leaves the collection alone"
    again = distill(
        _config(
            db, out, tiny_model, queries_file, max_steps=3, evaluations=1, reembed=False, restart=True, precision="fp32"
        )
    )
    assert again.teacher["pairs_scored"] == 0 and again.teacher["pairs_from_cache"] == first.teacher["pairs_scored"]
    assert again.steps == 3


def test_distill_resumes_after_an_interrupt_to_the_same_model(
    db: Path, tmp_path: Path, tiny_model: Path, queries_file: Path
) -> None:
    from safetensors.numpy import load_file
    from transformers import TrainerCallback

    from crossrank.training.distill import distill

    class Interrupt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                raise KeyboardInterrupt

    kw = {"max_steps": 6, "evaluations": 3, "reembed": False, "pseudo_queries": 0}
    whole = distill(_config(db, tmp_path / "whole", tiny_model, queries_file, **kw))
    with pytest.raises(KeyboardInterrupt):
        distill(_config(db, tmp_path / "cut", tiny_model, queries_file, **kw), callbacks=[Interrupt()])
    resumed = distill(_config(db, tmp_path / "cut", tiny_model, queries_file, **kw))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a), "resumed run differs from the uninterrupted one"
    assert resumed.after == pytest.approx(whole.after)


def test_a_failed_rebuild_keeps_the_old_collection(db: Path, other_bi: Path) -> None:
    from crossrank.retrieval.embeddings import embedding_function
    from crossrank.training.collection import reembed

    client = _client(db)
    before = client.get_collection(NAME)
    meta, count = dict(before.metadata or {}), before.count()

    def boom(new: Any, docs: Any) -> None:
        raise VectorStoreError("probe failed on purpose")

    with pytest.raises(VectorStoreError, match=f"probe failed on purpose; '{NAME}' is unchanged"):
        reembed(client, NAME, embedding_function(other_bi), str(other_bi), progress=False, verify=boom)
    cols = _collections(db)
    assert set(cols) == {NAME}, "the staging collection must be removed"
    assert cols[NAME].count() == count and dict(cols[NAME].metadata or {}) == meta

    rep = reembed(client, NAME, embedding_function(other_bi), str(other_bi), progress=False, swap=False)
    assert not rep.swapped and rep.collection != NAME and set(_collections(db)) == {NAME, rep.collection}
    assert _collections(db)[NAME].count() == count


def test_a_collection_refuses_another_embedder(
    db: Path, tmp_path: Path, tiny_model: Path, tiny_bi: Path, other_bi: Path, queries_file: Path
) -> None:
    from crossrank.retrieval.embedder_record import check_embedder
    from crossrank.retrieval.embeddings import embedding_function
    from crossrank.training.collection import reembed
    from crossrank.training.distill import distill

    client = _client(db)
    check_embedder(client.get_collection(NAME), str(tiny_bi))  # the embedder Chroma recorded: fine
    with pytest.raises(EmbedderMismatchError, match="vectors of two embedders do not mix"):
        check_embedder(client.get_collection(NAME), str(other_bi))
    with pytest.raises(EmbedderMismatchError):
        distill(_config(db, tmp_path / "s", tiny_model, queries_file, embedder=str(other_bi)))

    reembed(client, NAME, embedding_function(other_bi), str(other_bi), progress=False)
    swapped = client.get_collection(NAME)
    assert swapped.metadata[EMBEDDER_KEY] == str(other_bi)
    check_embedder(swapped, str(other_bi))
    with pytest.raises(EmbedderMismatchError, match=str(other_bi)):
        check_embedder(swapped, str(tiny_bi))
    moved = tmp_path / "moved"  # the same model in another folder: matched by content, not by path
    import shutil

    shutil.copytree(other_bi, moved)
    check_embedder(swapped, str(moved))


def test_the_pipeline_refuses_a_mismatched_embedder(db: Path, other_bi: Path) -> None:
    from crossrank.retrieval.pipeline import Pipeline

    with pytest.raises(EmbedderMismatchError, match="vectors of two embedders do not mix"):
        Pipeline(NAME, db=db, embedder=other_bi)
    # Named none: the pipeline queries with the embedder the collection records.
    recorded = Pipeline(NAME, db=db)
    assert recorded.embedder != str(other_bi) and recorded.count() > 0


def test_distill_command_line(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path, tiny_model: Path, queries_file: Path
) -> None:
    from crossrank.cli import main

    args = ["distill", "--collection", NAME, "--db", str(db), "--out", str(tmp_path / "cli")]
    args += ["--teacher", str(tiny_model), "--teacher-backend", "torch", "--queries", str(queries_file)]
    args += ["--pseudo-queries", "8", "--candidates", "8", "--negatives", "3", "--max-steps", "2"]
    args += ["--first-stage", "hybrid", "--loss", "margin-mse"]
    assert main([*args, "--evaluations", "1", "--no-swap", "--json"]) == 0
    out, _ = capsys.readouterr()
    report = json.loads(out)
    assert report["steps"] == 2 and report["swap"]["swapped"] is False
    assert set(_collections(db)) == {NAME, report["swap"]["collection"]}
    assert main(["distill", "--collection", NAME, "--db", str(db), "--out", str(tmp_path / "none")]) == 2
    _, err = capsys.readouterr()
    assert "no training queries" in err and err.count("\n") == 1
    assert (
        main(["distill", "--collection", "missing", "--db", str(db), "--out", str(tmp_path / "m"), "--pseudo-queries"])
        == 2
    )
    _, err = capsys.readouterr()
    assert "does not exist" in err


def test_finetune_on_a_beir_folder_mines_negatives_in_chroma(tmp_path: Path, tiny_model: Path, tiny_bi: Path) -> None:
    """A BEIR folder: train split only, its corpus embedded into Chroma once for the dense negatives."""
    from crossrank import Reranker
    from crossrank.training.finetune import FinetuneConfig, finetune

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = tiny_corpus()
    (beir / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": d, "title": "", "text": t}) for d, t in docs.items())
    )
    queries = tiny_queries()
    (beir / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"q{i}", "text": q}) for i, (q, _) in enumerate(queries))
    )
    train = "".join(f"q{i}\t{d}\t1\n" for i, (_, d) in enumerate(queries[:6]))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + train)
    (beir / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq7\t{queries[7][1]}\t1\n")
    config = FinetuneConfig(
        train=beir,
        out=tmp_path / "ft",
        base=str(tiny_model),
        embedder=str(tiny_bi),
        db=str(tmp_path / "db"),
        candidates=8,
        max_steps=2,
        evaluations=1,
        eval_fraction=0.3,
        progress=False,
    )
    report = finetune(config)
    assert report.data["kind"] == "beir" and report.data["train_queries"] + report.data["held_out_queries"] == 6
    assert len(_collections(tmp_path / "db")) == 1, "the corpus is embedded once, into one cached collection"
    assert "train split only" in (tmp_path / "ft" / "MODEL_CARD.md").read_text()
    assert len(Reranker(tmp_path / "ft", backend="torch").score("coffee", ["coffee and sleep"])) == 1
