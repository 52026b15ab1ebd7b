"""``crossrank distill --late-interaction`` over a real embedded Chroma, with tiny random models.

A run trains a ColBERT-style student (sentence-transformers ``MultiVectorEncoder``) from a tiny
bi-encoder on a tiny cross-encoder's scores, leaves the collection alone, and saves a folder that
``MultiVectorEncoder`` loads; its MaxSim is checked against the definition (Khattab & Zaharia
2020: the sum over query tokens of the best dot product with any document token), computed here
in NumPy from the loaded model's token vectors. The in-batch loss is checked against a row-by-row
reference, an interrupted run resumes to the same weights, and bad inputs are clean errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.errors import InvalidArgumentError
from crossrank.training.testing import make_tiny_bi_encoder, tiny_corpus, tiny_queries

pytestmark = pytest.mark.integration  # a real Chroma database

NAME = "tiny-docs"
SHAPE = {"dim": 8, "query_length": 12, "document_length": 48}


@pytest.fixture(scope="module")
def tiny_bi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bi_encoder(tmp_path_factory.mktemp("tiny-bi"))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_bi: Path) -> Path:
    """A Chroma folder with collection NAME: the tiny corpus embedded by ``tiny_bi`` (no test changes it)."""
    from crossrank.retrieval.indexing import Chunk
    from crossrank.retrieval.pipeline import Pipeline

    path = tmp_path_factory.mktemp("late-db") / "db"
    pipe = Pipeline(NAME, db=path, embedder=tiny_bi, create=True)
    pipe.add_chunks([Chunk(d, t, {"source": "corpus.jsonl"}) for d, t in tiny_corpus().items()])
    return path


@pytest.fixture(scope="module")
def queries_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "queries.jsonl"
    path.write_text("\n".join(json.dumps({"query": q, "positive_ids": [d]}) for q, d in tiny_queries()) + "\n")
    return path


def _config(db: Path, out: Path, teacher: Path, queries: Path | None, **kw: Any) -> Any:
    from crossrank.training.late import LateDistillConfig

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
        "device": "cpu",
        "progress": False,
        **SHAPE,
    }
    settings.update(kw)
    return LateDistillConfig(**settings)


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    """MaxSim by its definition: for every query token the best dot product with a document token, summed."""
    return float(sum(max(float(np.dot(qt, dt)) for dt in d) for qt in q))


def _collections(db: Path) -> dict[str, int]:
    from crossrank.retrieval.chroma import open_client

    return {c.name: c.count() for c in open_client(db).list_collections()}


def test_late_distill_trains_a_student_that_loads_and_scores_by_maxsim(
    db: Path, tmp_path: Path, tiny_model: Path, tiny_bi: Path, queries_file: Path
) -> None:
    from sentence_transformers import MultiVectorEncoder

    from crossrank.training.evaluation import HeldOut, measure
    from crossrank.training.late import distill_late
    from crossrank.training.runstate import WORK

    out = tmp_path / "late"
    kw = {"epochs": 6, "evaluations": 3, "precision": "fp32"}  # fp32: the check below recomputes MaxSim exactly
    report = distill_late(_config(db, out, tiny_model, queries_file, **kw))
    assert report.student == str(tiny_bi), "the default backbone is the collection's own embedder"
    assert report.queries == {"train": 18, "held_out": 6} and report.swap is None
    assert sum(report.losses[-3:]) < sum(report.losses[:3]), f"loss did not fall: {report.losses}"
    assert set(report.after) == {"ndcg@10", "mrr@10", "teacher_ndcg@10"}
    assert [e["step"] for e in report.evaluations] == [report.steps // 3 * (i + 1) for i in range(3)]
    assert any(all(e[k] == pytest.approx(v) for k, v in report.after.items()) for e in report.evaluations)
    assert _collections(db) == {NAME: 32}, "a late-interaction run leaves the collection alone"
    card = (out / "MODEL_CARD.md").read_text()
    assert "late-interaction" in card and "the batch's other documents as negatives" in card
    assert '"late_interaction": true' in card and "Held-out evaluations: step" in card

    model = MultiVectorEncoder(str(out), device="cpu")
    q = model.encode_query(["is there an effect of coffee and sleep quality"], convert_to_numpy=True)[0]
    assert q.shape == (12, 8), "queries are [MASK]-expanded to query_length tokens of dim floats"
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    docs = model.encode_document(["coffee, sleep; and the study.", " ".join(["coffee"] * 200)], convert_to_numpy=True)
    assert docs[0].shape == (7, 8), "[CLS] coffee sleep and the study [SEP]: punctuation is not stored"
    assert docs[1].shape == (48, 8), "documents are cut at document_length tokens"
    scores = model.similarity(q, list(docs)).numpy()[0]
    assert scores == pytest.approx([_maxsim(q, d) for d in docs], rel=1e-5)

    # The saved model is the best checkpoint: its held-out metrics, from MaxSim computed here, are the report's.
    work = out / WORK
    held = json.loads((work / "queries.json").read_text())["held_out"]
    cands = json.loads((work / "candidates.json").read_text())
    teacher = json.loads((work / "teacher.json").read_text())["scores"]
    texts = tiny_corpus()
    samples = [
        HeldOut(h["text"], cands[h["qid"]], [texts[d] for d in cands[h["qid"]]], h["positives"], teacher[h["qid"]])
        for h in held
    ]
    ranked = []
    for s in samples:
        qv = model.encode_query([s.query], convert_to_numpy=True)[0]
        ranked.append([_maxsim(qv, d) for d in model.encode_document(s.texts, convert_to_numpy=True)])
    assert measure(samples, ranked) == pytest.approx(report.after, abs=1e-6)

    again = distill_late(_config(db, out, tiny_model, queries_file, **kw))  # finished: a no-op
    assert again.steps == report.steps and again.after == report.after


def test_late_distill_resumes_after_an_interrupt_to_the_same_model(
    db: Path, tmp_path: Path, tiny_model: Path, queries_file: Path
) -> None:
    from safetensors.numpy import load_file
    from transformers import TrainerCallback

    from crossrank.training.late import distill_late

    class Interrupt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                raise KeyboardInterrupt

    kw = {"max_steps": 6, "evaluations": 3, "pseudo_queries": 0, "loss": "kl", "precision": "fp32"}
    whole = distill_late(_config(db, tmp_path / "whole", tiny_model, queries_file, **kw))
    with pytest.raises(KeyboardInterrupt):
        distill_late(_config(db, tmp_path / "cut", tiny_model, queries_file, **kw), callbacks=[Interrupt()])
    resumed = distill_late(_config(db, tmp_path / "cut", tiny_model, queries_file, **kw))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    for part in ("model.safetensors", "1_Dense/model.safetensors"):
        a = load_file(str(tmp_path / "whole" / part))
        b = load_file(str(tmp_path / "cut" / part))
        assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a), f"resumed {part} differs from the uninterrupted one"
    assert resumed.after == pytest.approx(whole.after)


def _features(model: Any, queries: list[str], columns: list[list[str]]) -> list[dict[str, Any]]:
    """Tokenized loss inputs as the trainer's collator makes them: the query column, then document columns."""
    out = [{**model.preprocess(queries, task="query"), "task": "query"}]
    out += [{**model.preprocess(col, task="document"), "task": "document"} for col in columns]
    return out


def _naive_in_batch_kl(model: Any, queries: list[str], columns: list[list[str]], labels: Any) -> float:
    """Row by row: the row's own documents get the teacher's softmax, other distinct batch documents target 0."""
    import torch

    batch = len(queries)
    docs = [(j, n, columns[n][j]) for j in range(batch) for n in range(len(columns))]
    total = 0.0
    for row in range(batch):
        q = model.encode_query([queries[row]], convert_to_numpy=True)[0]
        teacher = torch.softmax(labels[row], dim=0).tolist()
        own = {columns[n][row] for n in range(len(columns))}
        cols = [(t, teacher[n] if j == row else 0.0) for j, n, t in docs]
        cols = [(t, w) for t, w in cols if w > 0 or t not in own]
        vecs = model.encode_document([t for t, _ in cols], convert_to_numpy=True)
        scores = [_maxsim(q, d) for d in vecs]
        log_z = math.log(sum(math.exp(s) for s in scores))
        total += sum(w * (math.log(w) - (s - log_z)) for (_, w), s in zip(cols, scores) if w > 0)
    return total / batch


def test_multi_vector_in_batch_kl_matches_a_row_by_row_reference(tiny_bi: Path) -> None:
    import torch
    from sentence_transformers.multi_vector_encoder.losses import MultiVectorDistillKLDivLoss

    from crossrank.training.late import LateDistillConfig, build_student
    from crossrank.training.losses import multi_vector_in_batch_kl_loss

    config = LateDistillConfig(collection=NAME, out="unused", queries="q.jsonl", **SHAPE)
    torch.manual_seed(0)
    model = build_student(str(tiny_bi), config, "cpu").eval()  # no dropout: the forward equals encode_*
    docs = list(tiny_corpus().values())
    queries = [q for q, _ in tiny_queries()[:3]]
    columns = [[docs[0], docs[4], docs[8]], [docs[1], docs[5], docs[9]], [docs[2], docs[6], docs[10]]]
    labels = torch.tensor([[2.0, -1.0, 0.5], [1.0, 1.5, -2.0], [0.0, -0.5, 3.0]])
    loss = multi_vector_in_batch_kl_loss(model)
    with torch.no_grad():
        got = float(loss(_features(model, queries, columns), labels))
        assert got == pytest.approx(_naive_in_batch_kl(model, queries, columns, labels), rel=1e-4)
        # One query: nothing else in the batch, so it is exactly sentence-transformers' group-only KL.
        one = [[c[0]] for c in columns]
        group = MultiVectorDistillKLDivLoss(model)
        assert float(loss(_features(model, queries[:1], one), labels[:1])) == pytest.approx(
            float(group(_features(model, queries[:1], one), labels[:1])), rel=1e-5
        )
        # Query 1's first document is also query 0's third (two claims, one abstract): masked in each
        # other's rows, not pushed away. The reference drops it; without the mask they differ.
        shared = [list(c) for c in columns]
        shared[2][0] = shared[0][1]
        got = float(loss(_features(model, queries, shared), labels))
        assert got == pytest.approx(_naive_in_batch_kl(model, queries, shared, labels), rel=1e-4)
    with pytest.raises(InvalidArgumentError):
        multi_vector_in_batch_kl_loss(model, temperature=0)


def test_the_student_keeps_a_multi_vector_folder_and_refuses_another_width(tiny_bi: Path, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import MultiVectorEncoder

    from crossrank.errors import ModelNotFoundError
    from crossrank.late import is_multi_vector_folder
    from crossrank.retrieval.embeddings import resolve_embedder
    from crossrank.training.late import LateDistillConfig, build_student

    config = LateDistillConfig(collection=NAME, out="unused", queries="q.jsonl", **SHAPE)
    assert not is_multi_vector_folder(tiny_bi)
    first = build_student(str(tiny_bi), config, "cpu")
    first.save(str(tmp_path / "mv"))
    assert is_multi_vector_folder(tmp_path / "mv")
    again = build_student(str(tmp_path / "mv"), config, "cpu")  # trained further as it is: the same weights
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert isinstance(again, MultiVectorEncoder) and again.get_embedding_dimension() == 8
    with pytest.raises(InvalidArgumentError, match="--dim 8"):
        build_student(str(tmp_path / "mv"), LateDistillConfig(**{**vars(config), "dim": 16}), "cpu")
    with pytest.raises(ModelNotFoundError):
        resolve_embedder(str(tmp_path / "nothing-here"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_seq_length": 64}, "--query-length"),
        ({"train_document_length": 64}, "caps documents during training only"),
        ({"reembed": True}, "crossrank index --late-interaction"),
        ({"dim": 0}, "dim"),
        ({"negatives": 8}, "negatives"),
    ],
)
def test_bad_late_settings_are_clean_errors(change: dict[str, Any], message: str) -> None:
    from crossrank.training.late import LateDistillConfig

    config = LateDistillConfig(collection=NAME, out="unused", queries="q.jsonl", candidates=8, **{**SHAPE, **change})
    with pytest.raises(InvalidArgumentError, match=message):
        config.check()


def test_late_distill_command_line(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path, tiny_model: Path, queries_file: Path
) -> None:
    from crossrank.cli import main

    base = ["distill", "--collection", NAME, "--db", str(db), "--teacher", str(tiny_model)]
    base += ["--teacher-backend", "torch", "--queries", str(queries_file), "--candidates", "8", "--device", "cpu"]
    shape = ["--dim", "8", "--query-length", "12", "--document-length", "48", "--train-document-length", "32"]
    shape += ["--projection-lr", "1e-2"]
    out = tmp_path / "cli"
    args = [*base, "--out", str(out), "--late-interaction", *shape, "--first-stage", "hybrid", "--loss", "margin-mse"]
    assert main([*args, "--max-steps", "2", "--evaluations", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 2 and report["swap"] is None and report["settings"]["late_interaction"] is True
    assert report["settings"]["train_document_length"] == 32 and len(report["evaluations"]) == 1
    card = (out / "MODEL_CARD.md").read_text()
    assert "MultiVectorMarginMSELoss" in card and "(the projection: 0.01)" in card
    assert _collections(db) == {NAME: 32}

    for bad, says in [
        ([*base, "--out", str(tmp_path / "x"), "--dim", "64"], "--dim: options of --late-interaction"),
        ([*base, "--out", str(tmp_path / "x"), "--late-interaction", "--scale", "10"], "--scale"),
        ([*base, "--out", str(tmp_path / "x"), "--late-interaction", "--max-seq-length", "64"], "--document-length"),
        ([*base, "--out", str(tmp_path / "x"), "--late-interaction", "--no-reembed"], "re-embeds nothing"),
    ]:
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
