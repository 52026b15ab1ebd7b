"""``crossrank finetune`` and the training building blocks, on tiny random models (no Chroma, seconds each).

The data, split, cache and resume rules are checked directly; fine-tuning runs end to end on a
JSONL file of pairs (negatives mined in memory by dense and BM25 first stages), and its output
must load and score on every backend.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.errors import BackendUnavailableError, DatasetError, InvalidArgumentError
from crossrank.training.testing import make_tiny_bi_encoder, tiny_corpus, tiny_queries

# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_bi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bi_encoder(tmp_path_factory.mktemp("tiny-bi"))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 queries (3 phrasings per topic), each with its relevant document as the positive."""
    docs = tiny_corpus()
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = []
    for query, doc in tiny_queries():
        topic = doc.split("-")[0]
        for j, form in enumerate((query, query.replace("is there an effect of", "evidence on"), f"{query}?")):
            row: dict[str, Any] = {"query": form, "positive": docs[f"{topic}-{j}"]}
            if j == 0:
                row["negatives"] = [docs[f"d{(int(topic[1:]) + 1) % 8}-0"]]
            rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _config(pairs: Path, out: Path, base: Path, embedder: Path, **kw: Any) -> Any:
    from crossrank.training.finetune import FinetuneConfig

    settings: dict[str, Any] = {
        "train": pairs,
        "out": out,
        "base": str(base),
        "embedder": str(embedder),
        "candidates": 8,
        "negatives": 3,
        "batch_size": 4,
        "learning_rate": 2e-3,
        "eval_fraction": 0.25,
        "teacher_backend": "torch",
        "progress": False,
    }
    settings.update(kw)
    return FinetuneConfig(**settings)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ---------------------------------------------------------------------------------------- data


def test_queries_from_jsonl_and_only_the_beir_train_split(tmp_path: Path) -> None:
    from crossrank.training.queries import load_queries

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) for i in range(4))
    )
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) for i in range(4)))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t2\nq1\td2\t0\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t1\n")
    got = load_queries(beir)
    assert [(q.qid, q.positives) for q in got] == [("q0", {"d0": 1}), ("q1", {"d1": 2})]  # never q3 (test)
    (beir / "qrels" / "train.tsv").unlink()
    with pytest.raises(DatasetError, match="train split only"):
        load_queries(beir)

    f = tmp_path / "q.jsonl"
    f.write_text('{"query": "a  question", "positive_ids": ["d1"]}\n{"text": "another", "_id": "x"}\n')
    got = load_queries(f)
    assert [(q.qid, q.text, q.positives) for q in got] == [("q1", "a question", {"d1": 1}), ("x", "another", {})]
    f.write_text('{"nothing": 1}\n')
    with pytest.raises(DatasetError, match="1 has no string 'query'"):
        load_queries(f)


def test_pseudo_queries_are_spans_of_their_documents_and_seeded() -> None:
    from crossrank.training.queries import pseudo_queries

    docs = {
        d: (text, {"title": f"A title about {text.split('.')[0].lower()}"} if d.endswith("0") else {})
        for d, text in tiny_corpus().items()
    }
    got = pseudo_queries(docs, 12, seed=3)
    assert len(got) == 12 and got == pseudo_queries(docs, 12, seed=3)
    assert got != pseudo_queries(docs, 12, seed=4)
    for q in got:
        (doc,) = q.positives
        text, meta = docs[doc]
        assert q.text in text or q.text == meta.get("title"), q
        assert q.origin.startswith("pseudo:")
    assert {q.origin for q in got} >= {"pseudo:sentence", "pseudo:first-sentence"}
    only = pseudo_queries(docs, 5, kinds=["first-sentence"])
    assert all(docs[next(iter(q.positives))][0].startswith(q.text) for q in only)
    with pytest.raises(InvalidArgumentError, match="choose from"):
        pseudo_queries(docs, 5, kinds=["summary"])
    no_titles = {d: (text, {}) for d, (text, _) in docs.items()}  # e.g. a BEIR collection: the title is in the text
    with pytest.raises(DatasetError, match="no pseudo-query of kind title.*'title' metadata field"):
        pseudo_queries(no_titles, 5, kinds=["title"])


def test_held_out_split_is_seeded_and_per_origin() -> None:
    from crossrank.training.queries import TrainQuery, split_heldout

    given = [TrainQuery(f"g{i}", f"given {i}") for i in range(20)]
    pseudo = [TrainQuery(f"p{i}", f"pseudo {i}", {"d": 1}, "pseudo:title") for i in range(10)]
    train, held = split_heldout(given + pseudo, 0.2, seed=1)
    assert (train, held) == split_heldout(list(reversed(given + pseudo)), 0.2, seed=1)
    assert sum(q.qid.startswith("g") for q in held) == 4 and sum(q.qid.startswith("p") for q in held) == 2
    assert not {q.qid for q in train} & {q.qid for q in held}
    with pytest.raises(DatasetError, match="at least 2"):
        split_heldout(given[:1], 0.2)


def _naive_in_batch_kl(embs: list[Any], labels: Any, scale: float) -> float:
    """Row by row in plain Python: own group = teacher softmax, other distinct documents = target 0."""
    import torch

    batch, groups = labels.shape
    docs = [(k, i, embs[k + 1][i]) for k in range(groups) for i in range(batch)]
    total = 0.0
    for row in range(batch):
        q = torch.nn.functional.normalize(embs[0][row], dim=0)
        own = [embs[k + 1][row] for k in range(groups)]
        teacher = torch.softmax(labels[row], dim=0).tolist()
        cols = [(d, teacher[k] if i == row else 0.0) for k, i, d in docs]
        cols = [(d, t) for d, t in cols if t > 0 or not any(torch.equal(d, o) for o in own)]
        scores = [scale * float(q @ torch.nn.functional.normalize(d, dim=0)) for d, _ in cols]
        log_z = math.log(sum(math.exp(s) for s in scores))
        total += sum(t * (math.log(t) - (s - log_z)) for (_, t), s in zip(cols, scores) if t > 0)
    return total / batch


def test_in_batch_kl_matches_a_row_by_row_reference_and_masks_shared_documents(tiny_bi: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    from crossrank.training.common import ScaledCosine
    from crossrank.training.losses import in_batch_kl_loss

    model = SentenceTransformer(str(tiny_bi), device="cpu")
    loss = in_batch_kl_loss(model, scale=20.0)
    gen = torch.Generator().manual_seed(0)
    embs = [torch.randn(4, 16, generator=gen) for _ in range(4)]  # query, best, 2 negatives; 4 queries
    labels = torch.randn(4, 3, generator=gen) * 3
    got = float(loss.compute_loss_from_embeddings(embs, labels))
    assert math.isclose(got, _naive_in_batch_kl(embs, labels, 20.0), rel_tol=1e-4)
    # One query: nothing else in the batch, so it is exactly sentence-transformers' group-only KL.
    one = [e[:1] for e in embs]
    group = DistillKLDivLoss(model, similarity_fct=ScaledCosine(20.0))
    assert math.isclose(
        float(loss.compute_loss_from_embeddings(one, labels[:1])),
        float(group.compute_loss_from_embeddings(one, labels[:1])),
        rel_tol=1e-5,
    )
    # Query 1's best document is also query 0's second negative (two claims, one abstract): masked
    # in each other's rows, not pushed away. The reference drops it; without the mask they differ.
    shared = [e.clone() for e in embs]
    shared[3][0] = shared[1][1]
    shared[0][1] = shared[1][1] * 3  # query 1 points at that document
    got = float(loss.compute_loss_from_embeddings(shared, labels))
    assert math.isclose(got, _naive_in_batch_kl(shared, labels, 20.0), rel_tol=1e-4)
    grads = [e.clone().requires_grad_(True) for e in embs]
    loss.compute_loss_from_embeddings(grads, labels).backward()
    assert all(g.grad is not None and bool(torch.isfinite(g.grad).all()) for g in grads)
    with pytest.raises(InvalidArgumentError):
        in_batch_kl_loss(model, scale=0)


def test_hard_negatives_never_include_a_positive() -> None:
    import random

    from crossrank.training.candidates import hard_negatives, with_positives

    lists = [["p", "a", "b", "c"], ["b", "p", "d", "e"]]
    rng = random.Random(0)
    for _ in range(20):
        negs = hard_negatives(lists, {"p"}, 3, rng)
        assert len(negs) == 3 and "p" not in negs and len(set(negs)) == 3
    assert hard_negatives(lists, {"p"}, 10, rng) == ["b", "a", "d", "c", "e"]  # short union: all, interleaved
    assert with_positives(["a", "b"], {"z": 1, "b": 1, "gone": 1, "no": 0}, {"a", "b", "z"}.__contains__) == [
        "a",
        "b",
        "z",
    ]


def test_teacher_scores_are_cached_on_disk(tmp_path: Path, tiny_model: Path) -> None:
    from crossrank import Reranker
    from crossrank.training.teacher import Teacher

    items = [("q1", "aspirin heart", ["aspirin heart attack", "coffee sleep"]), ("q2", "coffee", ["coffee sleep"])]
    first = Teacher(str(tiny_model), tmp_path, backend="torch")
    scores = first.score_lists(items, progress=False)
    assert first.scored == 3 and first.cached == 0
    expect = Reranker(tiny_model, backend="torch").score("aspirin heart", items[0][2])
    assert np.allclose(scores["q1"], expect, atol=1e-5)
    first.cache.close()
    again = Teacher(str(tiny_model), tmp_path, backend="torch")
    assert again.score_lists(items, progress=False) == scores
    assert again.scored == 0 and again.cached == 3, "a re-run must never re-score a pair"
    again.cache.close()


def test_run_folder_refuses_other_settings_unless_restarted(tmp_path: Path) -> None:
    from crossrank.training.runstate import RunDir

    run = RunDir(tmp_path / "out", {"lr": 1e-3, "loss": "kl"})
    run.save_stage("queries", {"n": 1})
    (run.cache_dir).mkdir()
    (run.cache_dir / "keep.sqlite").write_text("x")
    assert RunDir(tmp_path / "out", {"lr": 1e-3, "loss": "kl"}).stage("queries") == {"n": 1}
    with pytest.raises(InvalidArgumentError, match=r"changed: lr.*--restart"):
        RunDir(tmp_path / "out", {"lr": 2e-3, "loss": "kl"})
    fresh = RunDir(tmp_path / "out", {"lr": 2e-3, "loss": "kl"}, restart=True)
    assert fresh.stage("queries") is None and (fresh.cache_dir / "keep.sqlite").is_file()


def test_missing_training_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank.training.common import require_training

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"crossrank\[train\]"):
        require_training()


def test_training_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank import cpuinfo
    from crossrank.training.common import training_arguments, training_precision

    amx = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
    monkeypatch.setattr(cpuinfo, "cpu_flags", lambda: amx)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("CROSSRANK_MAX_CPU_ISA", raising=False)
    assert training_precision("auto") == "bf16"
    monkeypatch.setenv("CROSSRANK_MAX_CPU_ISA", "AVX512_CORE_VNNI")  # an emulated VNNI machine: no bf16
    assert training_precision("auto") == "fp32"
    assert training_precision("bf16") == "bf16", "an explicit request is kept"
    with pytest.raises(InvalidArgumentError, match="fp16.*auto, fp32, bf16"):
        training_precision("fp16")
    from sentence_transformers import SentenceTransformerTrainingArguments as Args

    from crossrank.training.common import Schedule

    plan = Schedule(4, 2, 1)
    common = {"batch_size": 2, "learning_rate": 1e-4, "warmup": 0.1, "seed": 1, "plan": plan, "metric": "m"}
    assert training_arguments(Args, "/tmp/x", progress=False, precision="bf16", **common).bf16
    assert not training_arguments(Args, "/tmp/x", progress=False, precision="fp32", **common).bf16


def test_training_device_takes_the_gpu_only_where_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments as Args

    from crossrank.training.common import Schedule, training_arguments, training_device, training_precision

    assert training_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") == "cpu"
    with pytest.raises(InvalidArgumentError, match="'cuda'.*sees no CUDA GPU.*--device auto or cpu"):
        training_device("cuda")
    with pytest.raises(InvalidArgumentError, match="'gpu'.*auto, cpu, cuda.*CUDA_VISIBLE_DEVICES"):
        training_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device("auto") == "cuda" and training_device("cuda") == "cuda"
    # on a GPU, auto precision follows the GPU's bf16 support, not the CPU's flags
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert training_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert training_precision("auto", "cuda") == "bf16"
    common = {"batch_size": 2, "learning_rate": 1e-4, "warmup": 0.1, "seed": 1, "plan": Schedule(4, 2, 1)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_arguments(Args, "/tmp/x", progress=False, metric="m", device="cpu", **common).use_cpu


def test_max_length_is_chosen_from_the_data(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from crossrank.training.finetune import choose_max_length

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    warned: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("transformers").addHandler(handler)  # transformers' loggers don't propagate
    try:
        short = [("aspirin", "aspirin heart")] * 50
        assert choose_max_length(tok, short, cap=256, limit=512) == 64  # floor
        long = [("aspirin", "the heart " * 100)] * 50
        assert choose_max_length(tok, long, cap=256, limit=512) == 224  # 203 tokens -> rounded up to 32
        assert choose_max_length(tok, long, cap=128, limit=512) == 128
        assert choose_max_length(tok, long, cap=256, limit=96) == 96
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    # measuring lengths past the model's (128 here) must not print the tokenizer's "indexing errors" warning
    assert not [m for m in warned if "Token indices sequence length" in m]


def test_finetune_config_checks() -> None:
    from crossrank.training.finetune import FinetuneConfig

    with pytest.raises(InvalidArgumentError, match="not available without --teacher"):
        FinetuneConfig("x", "y", loss="mse").check()
    with pytest.raises(InvalidArgumentError, match="not available with --teacher"):
        FinetuneConfig("x", "y", loss="bce", teacher="t").check()
    with pytest.raises(InvalidArgumentError, match="not supported"):
        FinetuneConfig("x", "y", mine_from=["sparse"]).check()
    assert FinetuneConfig("x", "y", teacher="t").resolved_loss == "margin-mse"


# ---------------------------------------------------------------------------------------- finetune


def test_finetune_trains_and_every_backend_serves_the_output(
    tmp_path: Path, pairs_file: Path, tiny_model: Path, tiny_bi: Path
) -> None:
    from sentence_transformers import CrossEncoder

    from crossrank import Reranker
    from crossrank.training.finetune import finetune

    out = tmp_path / "ft"
    report = finetune(_config(pairs_file, out, tiny_model, tiny_bi, epochs=8))
    assert report.loss == "listwise" and report.steps >= 20
    assert report.data["groups"] == 18 and report.data["held_out_queries"] == 6
    losses = report.losses
    assert _mean(losses[-4:]) < _mean(losses[:4]), f"loss did not fall: {losses}"
    assert set(report.after) == {"ndcg@10", "mrr@10"} and set(report.first_stage) == {"ndcg@10", "mrr@10"}
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == report.max_length
    card = (out / "MODEL_CARD.md").read_text()
    assert "ListNetLoss" in card and "| after training (best checkpoint) |" in card and "pairs.jsonl" in card
    assert not (out / ".train" / "checkpoints").exists() and not (out / ".train" / "base").exists()

    docs = list(tiny_corpus().values())[:6]
    reference = CrossEncoder(str(out), device="cpu").predict([("aspirin heart", d) for d in docs])
    for backend, quantize in [("torch", "auto"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "int8")]:
        rr = Reranker(out, backend=backend, quantize=quantize)
        assert rr.max_length == report.max_length
        got = rr.score("aspirin heart", docs)
        assert all(math.isfinite(s) for s in got)
        if quantize in ("auto", "fp32"):
            assert np.allclose(got, reference, atol=1e-4), (backend, got, reference)
        else:
            assert np.corrcoef(got, reference)[0, 1] > 0.9, (backend, got, reference)

    again = finetune(_config(pairs_file, out, tiny_model, tiny_bi, epochs=8))  # finished: nothing re-runs
    assert again.steps == report.steps and again.after == report.after and again.seconds < report.seconds


@pytest.mark.parametrize(("loss", "teacher"), [("bce", False), ("margin-mse", True), ("mse", True), ("listwise", True)])
def test_finetune_losses_and_distilling_a_teacher_into_fewer_layers(
    tmp_path: Path, pairs_file: Path, tiny_model: Path, tiny_bi: Path, loss: str, teacher: bool
) -> None:
    from crossrank import Reranker
    from crossrank.training.finetune import finetune

    out = tmp_path / loss
    extra = {"teacher": str(tiny_model), "layers": 1} if teacher else {}
    report = finetune(_config(pairs_file, out, tiny_bi, tiny_bi, loss=loss, max_steps=4, evaluations=2, **extra))
    assert report.loss == loss and report.steps == 4 and len(report.losses) >= 2
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == (1 if teacher else 2)
    if teacher:
        assert report.teacher is not None and report.teacher["pairs_scored"] > 0
        assert "teacher_ndcg@10" in report.after and "distilled from" in (out / "MODEL_CARD.md").read_text()
    assert len(Reranker(out, backend="torch").score("aspirin", ["aspirin heart", "solar panels"])) == 2


def test_finetune_resumes_after_an_interrupt_to_the_same_model(
    tmp_path: Path, pairs_file: Path, tiny_model: Path, tiny_bi: Path
) -> None:
    from safetensors.numpy import load_file
    from transformers import TrainerCallback

    from crossrank.training.finetune import finetune

    class Interrupt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:  # after the checkpoint of step 2
                raise KeyboardInterrupt

    settings = {"max_steps": 6, "evaluations": 3}
    whole = finetune(_config(pairs_file, tmp_path / "whole", tiny_model, tiny_bi, **settings))
    with pytest.raises(KeyboardInterrupt):
        finetune(_config(pairs_file, tmp_path / "cut", tiny_model, tiny_bi, **settings), callbacks=[Interrupt()])
    assert (tmp_path / "cut" / ".train" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = finetune(_config(pairs_file, tmp_path / "cut", tiny_model, tiny_bi, **settings))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.steps == whole.steps == 6
    a, b = (
        load_file(str(tmp_path / "whole" / "model.safetensors")),
        load_file(str(tmp_path / "cut" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a), "resumed run differs from the uninterrupted one"
    assert resumed.after == pytest.approx(whole.after)


def test_finetune_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pairs_file: Path, tiny_model: Path, tiny_bi: Path
) -> None:
    from crossrank.cli import main

    base = ["finetune", "--train", str(pairs_file), "--base", str(tiny_model), "--embedder", str(tiny_bi)]
    args = [*base, "--out", str(tmp_path / "cli"), "--max-steps", "2", "--evaluations", "1", "--candidates", "8"]
    assert main([*args, "--teacher-backend", "torch", "--device", "cpu", "--json"]) == 0
    out, _ = capsys.readouterr()
    report = json.loads(out)  # stdout is the JSON report and nothing else
    assert report["steps"] == 2 and report["loss"] == "listwise" and report["out"] == str(tmp_path / "cli")
    from crossrank.cpuinfo import describe

    assert f"Trained on: {describe()}." in (tmp_path / "cli" / "MODEL_CARD.md").read_text()
    import torch

    if not torch.cuda.is_available():  # asking for a GPU that is not there: an error before anything loads
        assert main([*base, "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        _, err = capsys.readouterr()
        assert "sees no CUDA GPU" in err and not (tmp_path / "gpu").exists()
    assert main([*args, "--lr", "1e-4"]) == 2  # other settings, same folder
    _, err = capsys.readouterr()
    assert "--restart" in err and err.count("\n") == 1
    assert main([*base, "--out", str(tmp_path / "x"), "--teacher", str(tiny_model), "--loss", "bce"]) == 2
    _, err = capsys.readouterr()
    assert "not available with --teacher" in err
