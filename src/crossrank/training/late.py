"""``crossrank distill --late-interaction``: distil the cross-encoder into a late-interaction (ColBERT-style) student.

Stages 1-3 are ``distill``'s own (:func:`crossrank.training.distill.prepare_data`): the same
queries (JSONL, a BEIR folder's train split, pseudo-queries) split the same way, each query's
first-stage candidates from the collection, and the teacher's scores, cached on disk. Stage 4
trains a sentence-transformers ``MultiVectorEncoder`` (``MultiVectorEncoderTrainer``):

* **the student**: a bi-encoder backbone (default: the collection's embedder, all-MiniLM-L6-v2 for
  collections crossrank built) with its pooling dropped and a fresh ``dim``-wide token projection;
  queries padded with ``[MASK]`` to ``query_length`` tokens (ColBERT's query expansion),
  punctuation left out of document vectors (as ColBERT and PyLate do). A folder that is already
  multi-vector (sentence-transformers, PyLate, Stanford ColBERT) is trained further as it is.
* **the loss**, on MaxSim scores: ``kl-in-batch`` (listwise KL from the teacher's softmax over each
  query's group, every other document of the batch a further negative:
  :func:`crossrank.training.losses.multi_vector_in_batch_kl_loss`), ``kl`` (the group only,
  sentence-transformers' ``MultiVectorDistillKLDivLoss``) or ``margin-mse``
  (``MultiVectorMarginMSELoss``).
* **held-out evaluation** at every checkpoint: each held-out query's candidates reranked by MaxSim
  (:class:`~crossrank.training.evaluation.HeldOutEvaluator`); the best checkpoint is the output.

Why a flag on ``distill`` and not a command of its own: everything up to the student is the same
run (queries, candidates, teacher cache, resumable run folder), and so are the options that
choose it. What differs is the student and the end: the output is a ``MultiVectorEncoder`` folder
(its ``save`` format, sentence-transformers 6) with a MODEL_CARD.md, and the collection is left as
it is (a late-interaction model does not replace the collection's embedder; its document vectors
are stored beside the collection by ``crossrank index --late-interaction DIR``).
"""

from __future__ import annotations

import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import BackendUnavailableError, InvalidArgumentError, ModelLoadError
from crossrank.inputs import check_positive_int
from crossrank.training.common import begin_run, describe_device, training_device, training_precision
from crossrank.training.distill import DistillConfig, DistillData, DistillReport


@dataclass
class LateDistillConfig(DistillConfig):
    """Everything ``crossrank distill --late-interaction`` takes: :class:`DistillConfig` plus the student's shape.

    ``dim``: width of each token vector (a fresh projection; an already multi-vector student
    keeps its own and must match). ``query_length``: query tokens, ``[MASK]``-padded to exactly
    that many when ``query_expansion``. ``document_length``: document tokens the saved model
    encodes; ``train_document_length`` caps them during training only (faster steps; the model
    still encodes ``document_length`` tokens when indexing). ``projection_learning_rate``: the
    token projection's own learning rate (a fresh projection starts random, the encoder does not;
    default: ``learning_rate``). ``max_seq_length``, ``scale``,
    ``reembed`` and ``swap`` are the bi-encoder's and do not apply.
    """

    dim: int = 128
    query_length: int = 32
    document_length: int = 256
    train_document_length: int | None = None
    projection_learning_rate: float | None = None
    query_expansion: bool = True
    reembed: bool = False
    swap: bool = False

    def check(self) -> None:
        """Validate the options that can be checked before anything loads."""
        super().check()
        for name in ("dim", "query_length", "document_length"):
            check_positive_int(name, getattr(self, name))
        if self.train_document_length is not None:
            check_positive_int("train_document_length", self.train_document_length)
            if self.train_document_length > self.document_length:
                raise InvalidArgumentError(
                    f"train_document_length ({self.train_document_length}) is longer than document_length "
                    f"({self.document_length}): it caps documents during training only"
                )
        if self.projection_learning_rate is not None and not self.projection_learning_rate > 0:
            raise InvalidArgumentError(f"projection learning rate must be > 0, got {self.projection_learning_rate}")
        if self.max_seq_length is not None:
            raise InvalidArgumentError(
                "max_seq_length is the bi-encoder student's: a late-interaction student takes query_length and "
                "document_length (--query-length, --document-length)"
            )
        if self.reembed or self.swap:
            raise InvalidArgumentError(
                "a late-interaction student re-embeds no collection: store its document vectors beside the "
                "collection with `crossrank index --late-interaction DIR`"
            )

    def settings(self) -> dict[str, Any]:
        """The options that decide the trained model (a run folder refuses others)."""
        d = super().settings()
        del d["scale"]  # the bi-encoder's cosine scale: MaxSim scores are not scaled
        d["late_interaction"] = True
        return d


def require_multi_vector() -> None:
    """Fail early when sentence-transformers has no ``MultiVectorEncoder`` (it arrived in version 6)."""
    try:
        import sentence_transformers.multi_vector_encoder
    except ImportError as exc:
        import sentence_transformers

        raise BackendUnavailableError(
            f"sentence-transformers {sentence_transformers.__version__} has no MultiVectorEncoder (version 6 added "
            "it): pip install -U 'sentence-transformers>=6'"
        ) from exc


def build_student(spec: str, config: LateDistillConfig, device: str) -> Any:
    """The ``MultiVectorEncoder`` to train, shaped by ``config`` (see :class:`LateDistillConfig`).

    Raises:
        ModelLoadError: ``spec`` does not load as a multi-vector model.
        InvalidArgumentError: an already multi-vector student's width is not ``config.dim``.
    """
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from torch import nn

    from crossrank.late import is_multi_vector_folder

    fresh = not is_multi_vector_folder(spec)
    try:
        model = MultiVectorEncoder(spec, device=device)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the student {spec!r} as a multi-vector model ({type(exc).__name__}: {exc}); pass a "
            "sentence-transformers bi-encoder folder or a multi-vector (sentence-transformers, PyLate, ColBERT) one"
        ) from exc
    modules: Any = model._modules
    transformer: Any = model[0]
    if fresh:
        hidden = transformer.get_embedding_dimension()
        projections = [k for k, m in modules.items() if isinstance(m, Dense)]
        if projections and not _has_projection(spec):  # the random one MultiVectorEncoder appended: ours instead
            modules[projections[-1]] = Dense(
                in_features=hidden,
                out_features=config.dim,
                bias=False,
                activation_function=nn.Identity(),
                module_input_name="token_embeddings",
            ).to(model.device)
        for m in modules.values():
            if isinstance(m, MultiVectorMask) and not m.skiplist_words:
                m.skiplist_words = list(string.punctuation)
                m.resolve_with_tokenizer(model.tokenizer)
    width = model.get_embedding_dimension()
    if width != config.dim:
        raise InvalidArgumentError(
            f"the student {spec!r} makes {width}-wide token vectors: pass --dim {width} (or a bi-encoder student, "
            "which gets a fresh projection of --dim)"
        )
    transformer.query_expansion = None  # lengths first: the expansion checks them
    transformer.query_length = config.query_length
    transformer.document_length = config.document_length
    if config.query_expansion:
        transformer.query_expansion = {"strategy": "fixed", "attend": False, "length": config.query_length}
    return model


def _has_projection(folder: str) -> bool:
    """Whether a sentence-transformers folder has a ``Dense`` module of its own (kept: it is trained)."""
    import json

    listing = Path(folder) / "modules.json"
    if not listing.is_file():
        return False
    return any("Dense" in str(m.get("type", "")) for m in json.loads(listing.read_text(encoding="utf-8")))


def distill_late(config: LateDistillConfig, *, callbacks: Sequence[Any] = ()) -> DistillReport:
    """Run (or resume) a late-interaction distillation; see the module docstring. ``callbacks`` go to the trainer.

    Raises:
        EmbedderMismatchError: ``embedder`` is not the embedder that built the collection.
        CollectionNotFoundError, DatasetError, InvalidArgumentError, ModelLoadError: bad inputs.
        BackendUnavailableError: the ``crossrank[train]`` extra, or sentence-transformers >= 6, is missing.
    """
    from crossrank.retrieval.chroma import open_client
    from crossrank.retrieval.embeddings import resolve_embedder
    from crossrank.training.distill import prepare_data

    require_multi_vector()
    run, t0 = begin_run(config)
    done = run.stage("trained")
    if done is None:
        data = prepare_data(run, config, open_client(config.db, config.chroma_url))
        student = resolve_embedder(config.student) if config.student else data.embedder
        done = {"student": student, **_train(run, config, student, data, callbacks), **data.summary()}
        run.save_stage("trained", done)
        _model_card(run, config, student, done)
        if not config.keep_checkpoints:
            run.drop_checkpoints()
    return DistillReport.from_run(run, config, done, seconds=time.perf_counter() - t0)


def _train(
    run: Any, config: LateDistillConfig, student: str, data: DistillData, callbacks: Sequence[Any]
) -> dict[str, Any]:
    """Train the multi-vector student (resuming from the last checkpoint if any); the best model goes to ``out``."""
    from sentence_transformers import MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments
    from sentence_transformers.multi_vector_encoder.losses import (
        MultiVectorDistillKLDivLoss,
        MultiVectorMarginMSELoss,
    )

    from crossrank.training.distill import train_student
    from crossrank.training.losses import multi_vector_in_batch_kl_loss

    data.columns(config)  # too few candidates: fail before the model loads
    model = build_student(student, config, training_device(config.device))
    loss: Any
    if config.loss == "kl":
        loss = MultiVectorDistillKLDivLoss(model, temperature=config.temperature)
    elif config.loss == "kl-in-batch":
        loss = multi_vector_in_batch_kl_loss(model, temperature=config.temperature)
    else:
        loss = MultiVectorMarginMSELoss(model)
    extra: dict[str, Any] = {}
    if config.train_document_length:
        extra["max_length"] = {"document": config.train_document_length}
    if config.projection_learning_rate:
        from sentence_transformers.base.modules.dense import Dense

        keys = [k for k, m in model._modules.items() if isinstance(m, Dense)]
        # Parameter names as the trainer sees them: the loss wraps the model (``model.1.linear.weight``).
        extra["learning_rate_mapping"] = {rf"^(model\.)?{k}\.linear\.": config.projection_learning_rate for k in keys}
    return train_student(
        run,
        config,
        data,
        model=model,
        loss=loss,
        kind="multi-vector",
        trainer_class=MultiVectorEncoderTrainer,
        args_class=MultiVectorEncoderTrainingArguments,
        callbacks=callbacks,
        **extra,
    )


_LOSSES = {
    "kl": "MultiVectorDistillKLDivLoss (listwise KL from the teacher softmax over each group)",
    "kl-in-batch": "listwise KL from the teacher softmax, the batch's other documents as negatives",
    "margin-mse": "MultiVectorMarginMSELoss (the student's MaxSim margins regress onto the teacher's)",
}


def _model_card(run: Any, config: LateDistillConfig, student: str, done: dict[str, Any]) -> None:
    """MODEL_CARD.md beside the student: data, shape, loss, settings and the held-out table per checkpoint."""
    from crossrank.training.distill import card_data
    from crossrank.training.modelcard import write_card

    teacher = done["teacher"]
    device = training_device(config.device)
    history = [
        f"step {e['step']} (epoch {e['epoch']:.2f}): "
        + ", ".join(f"{k} {v:.4f}" for k, v in e.items() if k not in ("step", "epoch"))
        for e in done.get("evaluations", [])
    ]
    write_card(
        run.out / "MODEL_CARD.md",
        title=f"{run.out.name}: a late-interaction model distilled from {Path(teacher['model']).name}",
        what=(
            f"A sentence-transformers `MultiVectorEncoder` (ColBERT-style: one {config.dim}-wide vector per token, "
            f"scored by MaxSim), initialised from `{student}` and trained to order the first-stage candidates of "
            f"collection `{config.collection}` the way the cross-encoder `{teacher['model']}` does. Load it with "
            "`sentence_transformers.MultiVectorEncoder(DIR)`; store its document vectors beside the collection with "
            "`crossrank index --late-interaction DIR`."
        ),
        data=card_data(config, done),
        training=[
            f"Shape: queries {config.query_length} tokens"
            + (" ([MASK]-expanded to exactly that many)" if config.query_expansion else "")
            + f", documents {config.document_length} tokens"
            + (f" (capped at {config.train_document_length} during training)" if config.train_document_length else "")
            + f", {config.dim}-dim token vectors, punctuation left out of document vectors.",
            f"Loss: {_LOSSES[config.loss]}, over groups of 1 + {config.negatives} candidates"
            + (f", temperature {config.temperature}" if config.loss != "margin-mse" else "")
            + ".",
            f"MultiVectorEncoderTrainer: {done['steps']} steps of {config.batch_size} groups, learning rate "
            f"{config.learning_rate}"
            + (f" (the projection: {config.projection_learning_rate})" if config.projection_learning_rate else "")
            + f", warmup {config.warmup}, seed {config.seed}; best held-out checkpoint kept. "
            f"Precision: {training_precision(config.precision, device)} (asked: {config.precision}).",
            *([f"Held-out evaluations: {'; '.join(history)}."] if history else []),
        ],
        before=done["before"],
        after=done["after"],
        settings=config.settings(),
        hardware=describe_device(device),
        notes=[
            "Before training the token projection is random: the 'before' row measures an untrained model.",
            "Scores are MaxSim sums over the query's tokens, not probabilities: compare them within one query.",
        ],
    )
