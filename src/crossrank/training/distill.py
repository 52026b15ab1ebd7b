"""``crossrank distill``: teach a collection's bi-encoder to order candidates the way a cross-encoder does.

The pipeline, in stages that a re-run with the same ``--out`` skips once done (see
:mod:`crossrank.training.runstate`):

1. **queries**: given queries (JSONL, or a BEIR folder's train split) and/or pseudo-queries cut
   from the collection's own documents; a seeded share is held out for evaluation.
2. **candidates**: each query's top-k from the collection's first stage
   (:func:`crossrank.retrieval.first_stage.first_stage`: dense, bm25 or hybrid), plus its known
   positives.
3. **teacher**: the cross-encoder's scores for every candidate, on crossrank's fast backend, cached
   on disk (:mod:`crossrank.training.teacher`).
4. **train**: the student (default: the embedder that built the collection) on groups of
   (query, teacher's best candidate, ``negatives`` other candidates) with the teacher's scores as
   labels, by ``SentenceTransformerTrainer`` and a distillation loss: ``kl`` (listwise: KL
   divergence from the teacher's softmax over the group), ``kl-in-batch`` (the same, with every
   other document in the batch as a further negative: :mod:`crossrank.training.losses`) or
   ``margin-mse`` (the student's score margins regress onto the teacher's). Held-out evaluation
   at every checkpoint; the best checkpoint is the output; resumable.
5. **re-embed**: a new collection built with the student, verified, then swapped in under the old
   name; the old collection is kept (renamed) until the user deletes it
   (:func:`crossrank.training.collection.reembed`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import DatasetError, InvalidArgumentError
from crossrank.inputs import check_positive_int
from crossrank.training.common import (
    ScaledCosine,
    begin_run,
    check_fraction,
    describe_device,
    evaluate_before,
    fit,
    losses_from,
    optimizer_options,
    quiet,
    schedule,
    training_arguments,
    training_device,
    training_precision,
)
from crossrank.training.queries import PSEUDO_KINDS, TrainQuery

DISTILL_LOSSES: tuple[str, ...] = ("kl", "kl-in-batch", "margin-mse")


@dataclass
class DistillConfig:
    """Everything ``crossrank distill`` takes. Only ``collection`` and ``out`` are required.

    ``teacher`` defaults to crossrank's default reranker; ``student`` to the embedder that built the
    collection (recorded in its metadata, else ``embedder``, else all-MiniLM-L6-v2). ``queries`` is
    a JSONL file or a BEIR folder (train split); ``pseudo_queries`` adds that many spans of the
    collection's documents as queries. ``max_steps`` caps the run (quick checks, tests).
    """

    collection: str
    out: str | Path
    teacher: str | None = None
    student: str | None = None
    embedder: str | None = None
    db: str | None = None
    chroma_url: str | None = None
    queries: str | Path | None = None
    pseudo_queries: int = 0
    pseudo_kinds: Sequence[str] = PSEUDO_KINDS
    first_stage: str = "dense"
    candidates: int = 20
    negatives: int = 3
    groups_per_query: int = 1
    loss: str = "kl-in-batch"
    scale: float = 20.0
    temperature: float = 1.0
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup: float = 0.1
    max_seq_length: int | None = None
    eval_fraction: float = 0.05
    evaluations: int = 4
    seed: int = 42
    precision: str = "auto"
    device: str = "auto"
    teacher_backend: str = "auto"
    teacher_max_length: int | None = None
    reembed: bool = True
    swap: bool = True
    keep_checkpoints: bool = False
    restart: bool = False
    progress: bool = True

    def check(self) -> None:
        """Validate the options that can be checked before anything loads."""
        from crossrank.retrieval.first_stage import SOURCES

        if self.loss not in DISTILL_LOSSES:
            raise InvalidArgumentError(f"loss {self.loss!r} is not supported; choose from {', '.join(DISTILL_LOSSES)}")
        if self.first_stage not in SOURCES:
            raise InvalidArgumentError(f"first stage {self.first_stage!r}: choose from {', '.join(SOURCES)}")
        for name in ("candidates", "negatives", "groups_per_query", "batch_size", "evaluations"):
            check_positive_int(name, getattr(self, name))
        if self.negatives >= self.candidates:
            raise InvalidArgumentError(
                f"negatives ({self.negatives}) must be fewer than candidates ({self.candidates}): each group takes "
                "the teacher's best candidate and negatives from the rest"
            )
        if self.max_steps is not None:
            check_positive_int("max_steps", self.max_steps)
        check_fraction("eval_fraction", self.eval_fraction)
        if self.pseudo_queries < 0:
            raise InvalidArgumentError(f"pseudo_queries must be >= 0, got {self.pseudo_queries}")
        if self.queries is None and not self.pseudo_queries:
            raise InvalidArgumentError(
                "no training queries: pass --queries (JSONL or a BEIR folder) and/or --pseudo-queries N"
            )
        if not self.epochs > 0 or not self.learning_rate > 0 or not self.temperature > 0:
            raise InvalidArgumentError("epochs, learning rate and temperature must be > 0")

    def settings(self) -> dict[str, Any]:
        """The options that decide the trained model (a run folder refuses others)."""
        skip = {"out", "reembed", "swap", "keep_checkpoints", "restart", "progress", "db", "chroma_url", "device"}
        d = {k: v for k, v in asdict(self).items() if k not in skip}
        d["queries"] = str(Path(self.queries).expanduser().resolve()) if self.queries is not None else None
        d["pseudo_kinds"] = list(self.pseudo_kinds)
        return d


@dataclass
class DistillReport:
    """What a distillation run did and measured (``to_dict`` is the ``--json`` output)."""

    out: str
    student: str
    teacher: dict[str, Any]
    collection: str
    queries: dict[str, int]
    loss: str
    steps: int
    losses: list[float]
    before: dict[str, float]
    after: dict[str, float]
    seconds: float
    resumed_from: str | None = None
    swap: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # held-out metrics at each checkpoint

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_run(
        cls,
        run: Any,
        config: DistillConfig,
        done: dict[str, Any],
        *,
        seconds: float,
        swap: dict[str, Any] | None = None,
    ) -> DistillReport:
        """The report of a run from its ``trained`` record (a fresh one, or one read back)."""
        return cls(
            out=str(run.out),
            student=done["student"],
            teacher=done["teacher"],
            collection=config.collection,
            queries=done["queries"],
            loss=config.loss,
            steps=done["steps"],
            losses=done["losses"],
            before=done["before"],
            after=done["after"],
            seconds=seconds,
            resumed_from=done.get("resumed_from"),
            swap=swap,
            settings=config.settings(),
            evaluations=done.get("evaluations", []),
        )


def _groups(
    queries: Sequence[TrainQuery],
    cands: dict[str, list[str]],
    scores: dict[str, list[float]],
    texts: dict[str, str],
    *,
    negatives: int,
    per_query: int,
    rng: random.Random,
) -> dict[str, list[Any]]:
    """Training columns: query, positive (the teacher's best), negative_1..n, label (the teacher's scores)."""
    cols: dict[str, list[Any]] = {"query": [], "positive": [], **{f"negative_{i + 1}": [] for i in range(negatives)}}
    labels: list[list[float]] = []
    for q in queries:
        ids, sc = cands[q.qid], scores[q.qid]
        if len(ids) < negatives + 1:
            continue
        order = sorted(range(len(ids)), key=lambda i: -sc[i])
        best, rest = order[0], order[1:]
        for _ in range(per_query):
            picked = rng.sample(rest, negatives)
            cols["query"].append(q.text)
            cols["positive"].append(texts[ids[best]])
            for i, j in enumerate(picked):
                cols[f"negative_{i + 1}"].append(texts[ids[j]])
            labels.append([sc[best], *(sc[j] for j in picked)])
    return {**cols, "label": labels}


@dataclass
class DistillData:
    """What a student trains on: the query split, each query's candidates, the teacher's scores, the texts.

    Built by :func:`prepare_data` (stages 1-3, each cached in the run folder); the bi-encoder
    student here and the late-interaction student (:mod:`crossrank.training.late`) share it.
    ``embedder`` is the one that built the collection (it queries the dense first stage).
    """

    train: list[TrainQuery]
    held_out: list[TrainQuery]
    candidates: dict[str, list[str]]
    scores: dict[str, list[float]]
    texts: dict[str, str]
    teacher: dict[str, Any]
    embedder: str

    def columns(self, config: DistillConfig) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """Training and held-out groups (seeded): query, the teacher's best, ``negatives`` others, their labels."""
        rng = random.Random(config.seed)
        train_cols = _groups(
            self.train,
            self.candidates,
            self.scores,
            self.texts,
            negatives=config.negatives,
            per_query=config.groups_per_query,
            rng=rng,
        )
        eval_cols = _groups(
            self.held_out, self.candidates, self.scores, self.texts, negatives=config.negatives, per_query=1, rng=rng
        )
        if not train_cols["query"] or not eval_cols["query"]:
            raise DatasetError(
                f"too few candidates per query for {config.negatives} negatives: lower --negatives or raise "
                "--candidates"
            )
        return train_cols, eval_cols

    def held_out_samples(self) -> list[Any]:
        """The held-out queries with all their candidates, known positives and teacher scores."""
        from crossrank.training.evaluation import HeldOut

        return [
            HeldOut(
                q.text,
                self.candidates[q.qid],
                [self.texts[d] for d in self.candidates[q.qid]],
                dict(q.positives),
                self.scores[q.qid],
            )
            for q in self.held_out
        ]

    def summary(self) -> dict[str, Any]:
        """The teacher and the split sizes, for the run's record and the report."""
        return {"teacher": self.teacher, "queries": {"train": len(self.train), "held_out": len(self.held_out)}}


def prepare_data(run: Any, config: DistillConfig, client: Any) -> DistillData:
    """Stages 1-3 of a distillation: queries and their split, first-stage candidates, teacher scores.

    Raises:
        EmbedderMismatchError: ``config.embedder`` is not the embedder that built the collection.
        CollectionNotFoundError, DatasetError: no such collection, or an empty one.
    """
    from crossrank.model_files import default_model
    from crossrank.retrieval.embedder_record import check_embedder, recorded_embedder
    from crossrank.retrieval.embeddings import resolve_embedder
    from crossrank.training.collection import get_existing, snapshot

    source = get_existing(client, config.collection)
    recorded, _ = recorded_embedder(source)
    if config.embedder is not None:
        spec = resolve_embedder(config.embedder)
        check_embedder(source, spec)
    else:
        spec = resolve_embedder(recorded) if recorded else resolve_embedder(None)
    docs = snapshot(source).as_docs()
    if not docs:
        raise DatasetError(f"collection {config.collection!r} is empty: index documents first")
    texts = {d: t for d, (t, _) in docs.items()}
    train_q, held_q = _split(run, config, docs)
    cands = _candidates(run, config, spec, train_q + held_q, docs)
    scores, teacher_info = _teacher(run, config, config.teacher or default_model(), train_q + held_q, cands, texts)
    return DistillData(train_q, held_q, cands, scores, texts, teacher_info, spec)


def train_student(
    run: Any,
    config: DistillConfig,
    data: DistillData,
    *,
    model: Any,
    loss: Any,
    kind: str,
    trainer_class: Any,
    args_class: Any,
    callbacks: Sequence[Any],
    **extra_args: Any,
) -> dict[str, Any]:
    """Train ``model`` on ``data``'s groups with ``loss`` (resuming from a checkpoint); the best goes to ``out``.

    The loop both students share: held-out evaluation of ``kind`` (see
    :class:`~crossrank.training.evaluation.HeldOutEvaluator`) before training and at every
    checkpoint, the best checkpoint kept. ``extra_args`` go to ``args_class``. Returns the run's
    record: before / after metrics, steps, losses, every evaluation and where it resumed from.
    """
    from datasets import Dataset

    from crossrank.training.common import eval_history
    from crossrank.training.evaluation import HeldOutEvaluator

    train_cols, eval_cols = data.columns(config)
    evaluator = HeldOutEvaluator(data.held_out_samples(), kind, batch_size=config.batch_size)
    before = evaluate_before(run, evaluator, model)
    plan = schedule(len(train_cols["query"]), config.batch_size, config.epochs, config.max_steps, config.evaluations)
    args = training_arguments(
        args_class,
        str(run.checkpoints),
        batch_size=config.batch_size,
        plan=plan,
        metric=evaluator.trainer_metric,
        **optimizer_options(config),
        **extra_args,
    )
    trainer = quiet(
        trainer_class(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(train_cols),
            eval_dataset=Dataset.from_dict(eval_cols),
            loss=loss,
            evaluator=evaluator,
            callbacks=list(callbacks),
        )
    )
    after, history, resume = fit(run, trainer)
    model.save_pretrained(str(run.out))
    return {
        "before": before,
        "after": after,
        "steps": int(trainer.state.global_step),
        "losses": losses_from(history),
        "evaluations": eval_history(history, "eval_heldout_"),
        "resumed_from": resume,
    }


def distill(config: DistillConfig, *, callbacks: Sequence[Any] = ()) -> DistillReport:
    """Run (or resume) a distillation; see the module docstring. ``callbacks`` go to the trainer.

    Raises:
        EmbedderMismatchError: ``embedder`` is not the embedder that built the collection.
        CollectionNotFoundError, DatasetError, InvalidArgumentError: bad inputs.
        BackendUnavailableError: the ``crossrank[train]`` extra is missing.
    """
    from crossrank.retrieval.chroma import open_client
    from crossrank.retrieval.embeddings import embedding_function, resolve_embedder
    from crossrank.training.collection import reembed

    run, t0 = begin_run(config)
    client = open_client(config.db, config.chroma_url)
    done = run.stage("trained")

    if done is None:  # a finished run never reopens the source: after a swap it holds the student's vectors
        data = prepare_data(run, config, client)
        student_spec = resolve_embedder(config.student) if config.student else data.embedder
        done = {"student": student_spec, **_train(run, config, student_spec, data, callbacks), **data.summary()}
        run.save_stage("trained", done)
        _model_card(run, config, student_spec, done)
        if not config.keep_checkpoints:
            run.drop_checkpoints()

    swap = run.stage("swap")
    if config.reembed and swap is None:
        student_dir = str(Path(config.out).expanduser().resolve())
        rep = reembed(
            client,
            config.collection,
            embedding_function(student_dir, device=training_device(config.device)),  # the GPU re-embeds too
            student_dir,
            swap=config.swap,
            progress=config.progress,
            staging=f"distilled-{run.key[:8]}",
        )
        swap = rep.to_dict()
        run.save_stage("swap", swap)
    return DistillReport.from_run(run, config, done, seconds=time.perf_counter() - t0, swap=swap)


def _split(
    run: Any, config: DistillConfig, docs: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[list[TrainQuery], list[TrainQuery]]:
    """The run's queries, split into train and held-out (computed once, then read back)."""
    from crossrank.training.queries import load_queries, pseudo_queries, split_heldout

    saved = run.stage("queries")
    if saved is not None:
        return [TrainQuery.from_dict(q) for q in saved["train"]], [TrainQuery.from_dict(q) for q in saved["held_out"]]
    queries: list[TrainQuery] = []
    if config.queries is not None:
        queries += load_queries(config.queries)
    if config.pseudo_queries:
        queries += pseudo_queries(docs, config.pseudo_queries, kinds=config.pseudo_kinds, seed=config.seed)
    train, held = split_heldout(queries, config.eval_fraction, seed=config.seed)
    run.save_stage("queries", {"train": [q.to_dict() for q in train], "held_out": [q.to_dict() for q in held]})
    return train, held


def _candidates(
    run: Any,
    config: DistillConfig,
    embedder: str,
    queries: Sequence[TrainQuery],
    docs: dict[str, tuple[str, dict[str, Any]]],
) -> dict[str, list[str]]:
    """Each query's first-stage candidates from the collection, plus its known positives (cached in the run)."""
    saved = run.stage("candidates")
    if saved is not None:
        return {str(k): [str(i) for i in v] for k, v in saved.items()}
    from crossrank.retrieval.pipeline import Pipeline
    from crossrank.training.candidates import bm25_over, mine, with_positives

    dense = None
    if config.first_stage in ("dense", "hybrid"):
        pipe = Pipeline(config.collection, db=config.db, chroma_url=config.chroma_url, embedder=embedder)
        dense = pipe.dense_ids
    bm25 = bm25_over(list(docs), [t for t, _ in docs.values()]) if config.first_stage != "dense" else None
    found = mine(
        queries, config.first_stage, candidates=config.candidates, dense=dense, bm25=bm25, progress=config.progress
    )
    out = {q.qid: with_positives(found[q.qid], q.positives, docs.__contains__) for q in queries}
    run.save_stage("candidates", out)
    return out


def _teacher(
    run: Any,
    config: DistillConfig,
    teacher: str,
    queries: Sequence[TrainQuery],
    cands: dict[str, list[str]],
    texts: dict[str, str],
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """The teacher's score for every candidate of every query (stage file first, then the disk cache)."""
    saved = run.stage("teacher")
    if saved is not None:
        return {str(k): [float(x) for x in v] for k, v in saved["scores"].items()}, saved["info"]
    from crossrank.training.teacher import Teacher

    t = Teacher(teacher, run.cache_dir, backend=config.teacher_backend, max_length=config.teacher_max_length)
    try:
        scores = t.score_lists(
            [(q.qid, q.text, [texts[d] for d in cands[q.qid]]) for q in queries], progress=config.progress
        )
    finally:
        t.cache.close()
    info = t.describe()
    run.save_stage("teacher", {"scores": scores, "info": info})
    return scores, info


def _train(
    run: Any, config: DistillConfig, student: str, data: DistillData, callbacks: Sequence[Any]
) -> dict[str, Any]:
    """Train the bi-encoder student (resuming from the last checkpoint if any); the best model goes to ``out``."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss, MarginMSELoss

    from crossrank.training.losses import in_batch_kl_loss

    data.columns(config)  # too few candidates: fail before the model loads
    model = SentenceTransformer(student, device=training_device(config.device))
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    similarity = ScaledCosine(config.scale)
    loss: Any
    if config.loss == "kl":
        loss = DistillKLDivLoss(model, similarity_fct=similarity, temperature=config.temperature)
    elif config.loss == "kl-in-batch":
        loss = in_batch_kl_loss(model, scale=config.scale, temperature=config.temperature)
    else:
        loss = MarginMSELoss(model, similarity_fct=similarity)
    return train_student(
        run,
        config,
        data,
        model=model,
        loss=loss,
        kind="bi-encoder",
        trainer_class=SentenceTransformerTrainer,
        args_class=Args,
        callbacks=callbacks,
    )


def _model_card(run: Any, config: DistillConfig, student: str, done: dict[str, Any]) -> None:
    """MODEL_CARD.md beside the student: data, loss, settings and the held-out table."""
    from crossrank.training.modelcard import write_card

    teacher = done["teacher"]
    write_card(
        run.out / "MODEL_CARD.md",
        title=f"{run.out.name}: a bi-encoder distilled from {Path(teacher['model']).name}",
        what=(
            f"A sentence-transformers bi-encoder, initialised from `{student}` and trained to order the first-stage "
            f"candidates of collection `{config.collection}` the way the cross-encoder `{teacher['model']}` does."
        ),
        data=card_data(config, done),
        training=[
            "Loss: "
            + {
                "kl": "DistillKLDivLoss (listwise KL from the teacher softmax)",
                "kl-in-batch": "listwise KL from the teacher softmax, the batch's other documents as negatives",
            }.get(config.loss, "MarginMSELoss")
            + f" over groups of 1 + {config.negatives} candidates, student similarity {config.scale} × cosine"
            + (f", temperature {config.temperature}" if config.loss != "margin-mse" else "")
            + ".",
            f"SentenceTransformerTrainer: {done['steps']} steps of {config.batch_size} groups, learning rate "
            f"{config.learning_rate}, warmup {config.warmup}, seed {config.seed}; best held-out checkpoint kept."
            f" Precision: {training_precision(config.precision, training_device(config.device))}"
            f" (asked: {config.precision}).",
        ],
        before=done["before"],
        after=done["after"],
        settings=config.settings(),
        hardware=describe_device(training_device(config.device)),
        notes=[
            "Queries embedded by this model only match documents embedded by this model: the re-embedded collection "
            "records it in its metadata (`crossrank:embedder`).",
        ],
    )


def card_data(config: DistillConfig, done: dict[str, Any]) -> list[str]:
    """The model card's data lines: the queries, the candidates and the teacher's scores."""
    q = done["queries"]
    teacher = done["teacher"]
    return [
        f"Queries: {q['train']} for training, {q['held_out']} held out "
        f"({'given: ' + str(config.queries) if config.queries else 'no given queries'}; "
        f"{config.pseudo_queries} pseudo-queries cut from the collection, kinds {', '.join(config.pseudo_kinds)}).",
        f"Candidates: the collection's {config.first_stage} top-{config.candidates} per query, plus known positives.",
        f"Teacher scores: {teacher['model']} on {teacher['backend']} at {teacher['max_length']} tokens "
        f"({teacher['pairs_scored']} pairs scored, {teacher['pairs_from_cache']} from the cache).",
    ]
