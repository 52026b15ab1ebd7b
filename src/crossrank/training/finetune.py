"""``crossrank finetune``: train a cross-encoder on your (query, positive) pairs, or distil one into a smaller one.

Stages (skipped on a re-run with the same ``--out`` once done, see :mod:`crossrank.training.runstate`):

1. **data**: a BEIR folder's train split (queries, qrels, corpus) or a JSONL file of
   ``{"query", "positive" (text or list), "negatives" (optional list)}``; a seeded share of the
   queries is held out.
2. **negatives**: each query's top-k from the first stage (dense and BM25 by default, each through
   :func:`crossrank.retrieval.first_stage.first_stage`), known positives excluded; each group is
   (query, a positive, ``negatives`` drawn from those lists after any negatives the file gives).
3. **teacher** (``--teacher``): the teacher's scores for every pair become soft labels: that is
   cross-encoder distillation (``margin-mse``, ``mse`` or ``listwise`` KL). Without a teacher the
   labels are the qrels: ``listwise`` (softmax cross-entropy over the group, sentence-transformers'
   ``ListNetLoss`` with the positive as the whole target) or ``bce`` (pointwise, positives weighted
   by the number of negatives).
4. **train**: ``CrossEncoderTrainer`` from ``--base`` (a cross-encoder, or a bi-encoder/BERT
   folder that gets a fresh 1-logit head), optionally cut to its first ``--layers`` layers; the max
   length is chosen from the data (the 90th percentile of the pairs' token counts, rounded up to
   32, capped); held-out reranking nDCG@10 at every checkpoint, best kept, resumable.
5. **output**: a normal cross-encoder folder (config, tokenizer with ``model_max_length`` set to
   the trained length, weights, MODEL_CARD.md) that ``Reranker(out)`` loads on every backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import DatasetError, InvalidArgumentError
from crossrank.inputs import check_positive_int
from crossrank.training.common import (
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
from crossrank.training.queries import TrainQuery

LABEL_LOSSES: tuple[str, ...] = ("listwise", "bce")
"""Losses on the data's own labels (no teacher)."""
TEACHER_LOSSES: tuple[str, ...] = ("margin-mse", "mse", "listwise")
"""Losses on a teacher's scores (``--teacher``)."""
LENGTH_PERCENTILE = 90
DEFAULT_LENGTH_CAP = 256


@dataclass
class FinetuneConfig:
    """Everything ``crossrank finetune`` takes. Only ``train`` and ``out`` are required.

    ``base`` defaults to the teacher when there is one (so ``layers`` cuts the teacher itself), else
    to crossrank's default reranker. ``loss`` defaults to ``listwise``, or ``margin-mse`` with a
    teacher. ``collection`` mines negatives from a Chroma collection instead of the data's own pool
    (a BEIR corpus is embedded into Chroma once and reused; a JSONL file's texts are searched in
    memory). ``max_length`` overrides the length chosen from the data.
    """

    train: str | Path
    out: str | Path
    base: str | None = None
    teacher: str | None = None
    loss: str | None = None
    layers: int | None = None
    collection: str | None = None
    embedder: str | None = None
    db: str | None = None
    chroma_url: str | None = None
    mine_from: Sequence[str] = ("dense", "bm25")
    candidates: int = 30
    negatives: int = 3
    groups_per_positive: int = 1
    max_length: int | None = None
    max_length_cap: int = DEFAULT_LENGTH_CAP
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 4
    learning_rate: float = 5e-5
    warmup: float = 0.1
    eval_fraction: float = 0.1
    evaluations: int = 4
    seed: int = 42
    precision: str = "auto"
    device: str = "auto"
    teacher_backend: str = "auto"
    teacher_max_length: int | None = None
    keep_checkpoints: bool = False
    restart: bool = False
    progress: bool = True

    @property
    def resolved_loss(self) -> str:
        """The loss that runs: the one asked for, else ``listwise`` / ``margin-mse`` (with a teacher)."""
        return self.loss or ("margin-mse" if self.teacher else "listwise")

    def check(self) -> None:
        """Validate what can be checked before anything loads."""
        from crossrank.training.candidates import check_sources

        allowed = TEACHER_LOSSES if self.teacher else LABEL_LOSSES
        if self.resolved_loss not in allowed:
            how = "with --teacher" if self.teacher else "without --teacher"
            raise InvalidArgumentError(
                f"loss {self.resolved_loss!r} is not available {how}; choose from {', '.join(allowed)}"
            )
        check_sources(self.mine_from)
        for name in ("candidates", "negatives", "groups_per_positive", "batch_size", "evaluations", "max_length_cap"):
            check_positive_int(name, getattr(self, name))
        for name in ("layers", "max_steps", "max_length"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_fraction("eval_fraction", self.eval_fraction)
        if not self.epochs > 0 or not self.learning_rate > 0:
            raise InvalidArgumentError("epochs and learning rate must be > 0")

    def settings(self) -> dict[str, Any]:
        """The options that decide the trained model (a run folder refuses others)."""
        skip = {"out", "keep_checkpoints", "restart", "progress", "db", "chroma_url", "device"}
        d = {k: v for k, v in asdict(self).items() if k not in skip}
        d["train"] = str(Path(self.train).expanduser().resolve())
        d["mine_from"] = list(self.mine_from)
        d["loss"] = self.resolved_loss
        return d


@dataclass
class FinetuneReport:
    """What a fine-tuning run did and measured (``to_dict`` is the ``--json`` output)."""

    out: str
    base: str
    teacher: dict[str, Any] | None
    loss: str
    layers: int | None
    max_length: int
    data: dict[str, Any]
    steps: int
    losses: list[float]
    first_stage: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    seconds: float
    resumed_from: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------- data
def text_id(text: str) -> str:
    """A stable id for a text given inline (JSONL pairs): a hash of its whitespace-normalised form."""
    return "t" + hashlib.sha1(" ".join(text.split()).encode()).hexdigest()[:15]


@dataclass
class PairData:
    """Training data in one shape: queries with positives (ids), texts by id, negatives the data gives."""

    queries: list[TrainQuery]
    texts: dict[str, str]
    given_negatives: dict[str, list[str]]
    kind: str  # "beir" | "jsonl"
    beir: Any = None  # the BeirDataset when kind == "beir"


def load_pairs(path: str | Path) -> PairData:
    """A BEIR folder (train split: never its test queries) or a JSONL file of query / positive[/negatives]."""
    from crossrank.jsonl import iter_jsonl
    from crossrank.training.queries import load_queries

    p = Path(path).expanduser()
    if p.is_dir():
        from crossrank.retrieval.beir import load_beir

        queries = load_queries(p)  # the train split, with its positives
        ds = load_beir(p, "train")
        return PairData(queries, {d: ds.doc_text(d) for d in ds.corpus}, {}, "beir", ds)
    if not p.is_file():
        raise DatasetError(f"{p}: no such file or folder (pass a BEIR folder or a JSONL file of pairs)")
    texts: dict[str, str] = {}
    merged: dict[str, tuple[str, dict[str, int], list[str]]] = {}
    for n, row in iter_jsonl(p):
        query = row.get("query")
        pos = row.get("positive", row.get("positives"))
        if not isinstance(query, str) or not query.strip():
            raise DatasetError(f"{p}:{n} has no string 'query' field")
        positives = [pos] if isinstance(pos, str) else pos
        if not isinstance(positives, list) or not positives or not all(isinstance(t, str) for t in positives):
            raise DatasetError(f"{p}:{n} needs 'positive': a text or a list of texts")
        negatives = row.get("negatives") or []
        if not isinstance(negatives, list) or not all(isinstance(t, str) for t in negatives):
            raise DatasetError(f"{p}:{n}: 'negatives' must be a list of texts")
        key = " ".join(query.split())
        _, rels, negs = merged.setdefault(key, (str(row.get("_id", row.get("id", f"q{n}"))), {}, []))
        for t in positives:
            texts[text_id(t)] = t
            rels[text_id(t)] = 1
        for t in negatives:
            texts[text_id(t)] = t
            negs.append(text_id(t))
    if not merged:
        raise DatasetError(f"{p} holds no pairs")
    queries = [TrainQuery(qid, text, rels) for text, (qid, rels, _) in merged.items()]
    given = {qid: [d for d in dict.fromkeys(negs) if d not in rels] for qid, rels, negs in merged.values()}
    return PairData(queries, texts, given, "jsonl")


def choose_max_length(tokenizer: Any, pairs: Sequence[tuple[str, str]], *, cap: int, limit: int) -> int:
    """The trained length: the pairs' 90th-percentile token count, rounded up to 32, within [64, cap, limit]."""
    import numpy as np

    sample = list(pairs)
    if len(sample) > 2000:
        sample = random.Random(0).sample(sample, 2000)
    # Untruncated on purpose (we measure); verbose=False keeps the tokenizer from warning that these
    # lengths exceed the model's, which they may: the cap below handles it.
    enc = tokenizer([q for q, _ in sample], [d for _, d in sample], truncation=False, verbose=False)
    lengths = [len(ids) for ids in enc["input_ids"]] or [64]
    want = 32 * math.ceil(float(np.percentile(lengths, LENGTH_PERCENTILE)) / 32)
    return int(max(64, min(want, cap, limit)))


def prepare_base(base: str, layers: int | None, dest: Path) -> Path:
    """The base as a 1-logit ``*ForSequenceClassification`` folder in ``dest``, cut to ``layers`` if asked.

    A bi-encoder or plain encoder (all-MiniLM-L6-v2) gets a fresh classification head; a
    cross-encoder keeps its own. Cutting keeps the first ``layers`` transformer layers (embeddings
    and head untouched): the usual start for distilling a reranker into a faster one.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from crossrank.errors import ModelLoadError

    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, ignore_mismatched_sizes=True)
    except Exception as exc:
        raise ModelLoadError(f"could not load the base model {base!r} ({type(exc).__name__}: {exc})") from exc
    if layers is not None:
        encoder = getattr(model.base_model, "encoder", None)
        stack = getattr(encoder, "layer", None)
        if encoder is None or not isinstance(stack, torch.nn.ModuleList):
            raise InvalidArgumentError(
                f"--layers: cannot find the transformer layers of {base!r} ({type(model).__name__})"
            )
        if layers > len(stack):
            raise InvalidArgumentError(f"--layers {layers}: {base!r} has only {len(stack)} layers")
        encoder.layer = torch.nn.ModuleList(list(stack)[:layers])
        model.config.num_hidden_layers = layers
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


# ----------------------------------------------------------------------------------------------- run
def finetune(config: FinetuneConfig, *, callbacks: Sequence[Any] = ()) -> FinetuneReport:
    """Run (or resume) fine-tuning; see the module docstring. ``callbacks`` go to the trainer.

    Raises:
        DatasetError, InvalidArgumentError, ModelLoadError: bad inputs.
        BackendUnavailableError: the ``crossrank[train]`` extra is missing.
    """
    from crossrank.model_files import default_model
    from crossrank.training.queries import split_heldout

    run, t0 = begin_run(config)
    base = config.base or config.teacher or default_model()
    done = run.stage("trained")
    if done is None:
        data = load_pairs(config.train)
        saved = run.stage("queries")
        if saved is None:
            train_q, held_q = split_heldout(data.queries, config.eval_fraction, seed=config.seed)
            run.save_stage("queries", {"train": [q.qid for q in train_q], "held_out": [q.qid for q in held_q]})
        else:
            by_id = {q.qid: q for q in data.queries}
            train_q = [by_id[q] for q in saved["train"]]
            held_q = [by_id[q] for q in saved["held_out"]]
        lists = _mine(run, config, data, train_q + held_q)
        groups = _build_groups(config, data, train_q, lists)
        held = _held_out(config, data, held_q, lists)
        teacher_info = None
        if config.teacher:
            teacher_info = _teacher_labels(run, config, groups, held, data)
        done = _train(run, config, base, data, groups, held, callbacks)
        done["teacher"] = teacher_info
        done["data"] = {
            "source": str(config.train),
            "kind": data.kind,
            "train_queries": len(train_q),
            "held_out_queries": len(held_q),
            "groups": len(groups),
            "negatives_per_group": config.negatives,
            "mined_from": list(config.mine_from),
        }
        run.save_stage("trained", done)
        _model_card(run, config, base, done)
        if not config.keep_checkpoints:
            run.drop_checkpoints()
            shutil.rmtree(run.work / "base", ignore_errors=True)  # the prepared base: a full model copy
    return FinetuneReport(
        out=str(run.out),
        base=base,
        teacher=done["teacher"],
        loss=config.resolved_loss,
        layers=config.layers,
        max_length=done["max_length"],
        data=done["data"],
        steps=done["steps"],
        losses=done["losses"],
        first_stage=done["first_stage"],
        before=done["before"],
        after=done["after"],
        seconds=time.perf_counter() - t0,
        resumed_from=done.get("resumed_from"),
        settings=config.settings(),
    )


def _mine(run: Any, config: FinetuneConfig, data: PairData, queries: Sequence[TrainQuery]) -> dict[str, Any]:
    """Every query's candidate list from each ``mine_from`` first stage (cached in the run folder).

    With ``collection``, the collection's documents join the data's texts (every run, also when the
    lists are read back: groups and held-out lists need the texts of the ids they hold).
    """
    from crossrank.training.candidates import InMemoryDense, bm25_over, mine

    snap = None
    if config.collection:
        from crossrank.retrieval.chroma import open_client
        from crossrank.training.collection import get_existing, snapshot

        snap = snapshot(get_existing(open_client(config.db, config.chroma_url), config.collection))
        data.texts.update(zip(snap.ids, snap.texts))
    saved = run.stage("candidates")
    if saved is not None:
        return dict(saved)
    dense: Any = None
    bm25: Any = None
    need_dense = any(s in ("dense", "hybrid") for s in config.mine_from)
    need_bm25 = any(s in ("bm25", "hybrid") for s in config.mine_from)
    if snap is not None:
        from crossrank.retrieval.pipeline import Pipeline

        if need_dense:
            assert config.collection is not None
            pipe = Pipeline(config.collection, db=config.db, chroma_url=config.chroma_url, embedder=config.embedder)
            dense = pipe.dense_ids
        bm25 = bm25_over(snap.ids, snap.texts) if need_bm25 else None
    elif data.kind == "beir":
        from crossrank.retrieval.beir import dense_pipeline

        if need_dense:
            store = {"db": config.db, "chroma_url": config.chroma_url}
            dense = dense_pipeline(data.beir, embedder=config.embedder, progress=config.progress, **store).dense_ids
        bm25 = data.beir.bm25 if need_bm25 else None
    else:
        from crossrank.retrieval.embeddings import resolve_embedder

        ids = list(data.texts)
        if need_dense:
            dense = InMemoryDense(
                resolve_embedder(config.embedder),
                ids,
                [data.texts[i] for i in ids],
                progress=config.progress,
                device=training_device(config.device),
            )
        bm25 = bm25_over(ids, [data.texts[i] for i in ids]) if need_bm25 else None
    out = {
        source: mine(queries, source, candidates=config.candidates, dense=dense, bm25=bm25, progress=config.progress)
        for source in config.mine_from
    }
    run.save_stage("candidates", out)
    return out


@dataclass
class _Group:
    query: str
    ids: list[str]  # the positive first, then the negatives
    labels: list[float] = field(default_factory=list)  # teacher scores, when distilling


def _build_groups(
    config: FinetuneConfig, data: PairData, queries: Sequence[TrainQuery], lists: dict[str, Any]
) -> list[_Group]:
    """(query, positive, negatives) groups: the data's own negatives first, then draws from the mined lists."""
    from crossrank.training.candidates import hard_negatives

    rng = random.Random(config.seed)
    groups: list[_Group] = []
    for q in queries:
        positives = [d for d, r in sorted(q.positives.items()) if r > 0 and d in data.texts]
        norm = {" ".join(data.texts[d].split()) for d in positives}
        exclude = set(q.positives)
        mined = [[d for d in lists[s][q.qid] if " ".join(data.texts.get(d, "").split()) not in norm] for s in lists]
        for pos in positives:
            for _ in range(config.groups_per_positive):
                given = list(data.given_negatives.get(q.qid, []))
                if len(given) > config.negatives:
                    given = rng.sample(given, config.negatives)
                more = hard_negatives(mined, exclude | set(given), config.negatives - len(given), rng)
                negs = given + [d for d in more if d in data.texts]
                if len(negs) == config.negatives:
                    groups.append(_Group(q.text, [pos, *negs]))
    if not groups:
        raise DatasetError(
            f"no training group has {config.negatives} negatives: lower --negatives or raise --candidates"
        )
    return groups


def _held_out(
    config: FinetuneConfig, data: PairData, queries: Sequence[TrainQuery], lists: dict[str, Any]
) -> list[Any]:
    """Held-out samples: each query's first ``mine_from`` list, as the reranker would receive it."""
    from crossrank.training.evaluation import HeldOut

    first = config.mine_from[0]
    out = []
    for q in queries:
        ids = [d for d in lists[first][q.qid] if d in data.texts]
        if ids:
            out.append(HeldOut(q.text, ids, [data.texts[d] for d in ids], dict(q.positives)))
    if not out:
        raise DatasetError("no held-out query has candidates: raise --eval-fraction or check the data")
    return out


def _teacher_labels(
    run: Any, config: FinetuneConfig, groups: list[_Group], held: list[Any], data: PairData
) -> dict[str, Any]:
    """The teacher's scores: soft labels of every group, and the held-out lists' teacher agreement."""
    saved = run.stage("teacher")
    if saved is None:
        from crossrank.training.teacher import Teacher

        assert config.teacher is not None
        t = Teacher(config.teacher, run.cache_dir, backend=config.teacher_backend, max_length=config.teacher_max_length)
        try:
            items = [(str(i), g.query, [data.texts[d] for d in g.ids]) for i, g in enumerate(groups)]
            items += [(f"held-{i}", h.query, h.texts) for i, h in enumerate(held)]
            scores = t.score_lists(items, progress=config.progress)
        finally:
            t.cache.close()
        saved = {"scores": scores, "info": t.describe()}
        run.save_stage("teacher", saved)
    for i, g in enumerate(groups):
        g.labels = [float(x) for x in saved["scores"][str(i)]]
    for i, h in enumerate(held):
        held[i] = type(h)(h.query, h.ids, h.texts, h.positives, [float(x) for x in saved["scores"][f"held-{i}"]])
    return dict(saved["info"])


def _dataset(loss: str, groups: Sequence[_Group], texts: dict[str, str]) -> dict[str, list[Any]]:
    """The columns each loss reads, in the order sentence-transformers expects them."""
    if loss == "listwise":
        labels = [g.labels or [0.0] + [float("-inf")] * (len(g.ids) - 1) for g in groups]
        docs = [[texts[d] for d in g.ids] for g in groups]
        return {"query": [g.query for g in groups], "docs": docs, "labels": labels}
    if loss in ("bce", "mse"):
        cols: dict[str, list[Any]] = {"query": [], "doc": [], "label": []}
        for g in groups:
            for j, d in enumerate(g.ids):
                cols["query"].append(g.query)
                cols["doc"].append(texts[d])
                cols["label"].append(g.labels[j] if g.labels else float(j == 0))
        return cols
    n = len(groups[0].ids) - 1  # margin-mse
    cols = {"query": [g.query for g in groups], "positive": [texts[g.ids[0]] for g in groups]}
    for i in range(n):
        cols[f"negative_{i + 1}"] = [texts[g.ids[i + 1]] for g in groups]
    cols["label"] = [g.labels for g in groups]
    return cols


def _train(
    run: Any,
    config: FinetuneConfig,
    base: str,
    data: PairData,
    groups: list[_Group],
    held: list[Any],
    callbacks: Sequence[Any],
) -> dict[str, Any]:
    """Prepare the base, train with the chosen loss (resuming if possible), save the best model to ``out``."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    from sentence_transformers.cross_encoder import losses as ce_losses
    from transformers import AutoTokenizer

    from crossrank.training.evaluation import HeldOutEvaluator, first_stage_metrics

    loss_name = config.resolved_loss
    device = training_device(config.device)
    base_dir = run.work / "base"
    prep = run.stage("base")
    if prep is None:
        prepare_base(base, config.layers, base_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        limit = int(getattr(tokenizer, "model_max_length", 512) or 512)
        cfg = json.loads((base_dir / "config.json").read_text())
        limit = min(limit, int(cfg.get("max_position_embeddings") or 512))
        pairs = [(g.query, data.texts[d]) for g in groups for d in g.ids]
        length = config.max_length or choose_max_length(tokenizer, pairs, cap=config.max_length_cap, limit=limit)
        prep = {"max_length": length}
        run.save_stage("base", prep)
    length = int(prep["max_length"])
    model = CrossEncoder(
        str(base_dir), num_labels=1, max_length=length, activation_fn=torch.nn.Identity(), device=device
    )
    evaluator = HeldOutEvaluator(held, "cross-encoder", batch_size=32)
    before = evaluate_before(run, evaluator, model)
    group_size = config.negatives + 1
    if loss_name == "listwise":
        loss: Any = ce_losses.ListNetLoss(model, mini_batch_size=config.batch_size * group_size)
    elif loss_name == "bce":
        loss = ce_losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(config.negatives)))
    elif loss_name == "mse":
        loss = ce_losses.MSELoss(model)
    else:
        loss = ce_losses.MarginMSELoss(model)
    pointwise = loss_name in ("bce", "mse")
    batch = config.batch_size * group_size if pointwise else config.batch_size  # same pairs per step either way
    train_ds = Dataset.from_dict(_dataset(loss_name, groups, data.texts))
    plan = schedule(len(train_ds), batch, config.epochs, config.max_steps, config.evaluations)
    args = training_arguments(
        Args,
        str(run.checkpoints),
        batch_size=batch,
        plan=plan,
        metric=evaluator.trainer_metric,
        **optimizer_options(config),
    )
    trainer = quiet(
        CrossEncoderTrainer(
            model=model, args=args, train_dataset=train_ds, loss=loss, evaluator=evaluator, callbacks=list(callbacks)
        )
    )
    after, history, resume = fit(run, trainer)
    model.save_pretrained(str(run.out))
    _declare_length(run.out, length)
    return {
        "max_length": length,
        "steps": int(trainer.state.global_step),
        "losses": losses_from(history),
        "first_stage": first_stage_metrics(held),
        "before": before,
        "after": after,
        "resumed_from": resume,
    }


def _declare_length(out: Path, length: int) -> None:
    """Set ``model_max_length`` in tokenizer_config.json: crossrank scores at the trained length by default."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    cfg["model_max_length"] = length
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def _model_card(run: Any, config: FinetuneConfig, base: str, done: dict[str, Any]) -> None:
    """MODEL_CARD.md beside the weights: data, loss, settings and the held-out table."""
    from crossrank.training.modelcard import write_card

    d = done["data"]
    teacher = done.get("teacher")
    loss = config.resolved_loss
    how = {
        "listwise": "ListNetLoss: "
        + (
            "KL from the teacher's softmax over the group"
            if teacher
            else "softmax cross-entropy over the group with the positive as target"
        ),
        "bce": "BinaryCrossEntropyLoss on (query, document) pairs, positives weighted by the negatives per group",
        "mse": "MSELoss: the student's logit regresses onto the teacher's, pair by pair",
        "margin-mse": "MarginMSELoss: the student's (positive - negative) margins regress onto the teacher's",
    }[loss]
    write_card(
        run.out / "MODEL_CARD.md",
        title=f"{run.out.name}: a cross-encoder reranker fine-tuned by crossrank",
        what=(
            f"A `*ForSequenceClassification` cross-encoder (1 raw logit, higher = more relevant) trained from `{base}`"
            + (f" cut to its first {config.layers} layers" if config.layers else "")
            + (f", distilled from `{teacher['model']}`" if teacher else "")
            + f". Maximum length: {done['max_length']} tokens (declared in tokenizer_config.json)."
        ),
        data=[
            f"Training data: {d['source']} ({d['kind']}{', train split only' if d['kind'] == 'beir' else ''}): "
            f"{d['train_queries']} queries for training, {d['held_out_queries']} held out.",
            f"Groups: {d['groups']} of (query, positive, {d['negatives_per_group']} negatives); negatives "
            f"{'from the data, then ' if d['kind'] == 'jsonl' else ''}drawn from the {', '.join(d['mined_from'])} "
            f"top-{config.candidates}, known positives excluded.",
            *(
                [
                    f"Teacher scores: {teacher['model']} on {teacher['backend']} at {teacher['max_length']} tokens "
                    f"({teacher['pairs_scored']} pairs scored, {teacher['pairs_from_cache']} from the cache)."
                ]
                if teacher
                else []
            ),
        ],
        training=[
            f"Loss: {how}.",
            f"CrossEncoderTrainer: {done['steps']} steps of {config.batch_size} groups, learning rate "
            f"{config.learning_rate}, warmup {config.warmup}, max length {done['max_length']} "
            f"(the {LENGTH_PERCENTILE}th percentile of the training pairs' tokens, rounded up to 32, capped at "
            f"{config.max_length_cap}, unless set), seed {config.seed}; best held-out checkpoint kept."
            f" Precision: {training_precision(config.precision, training_device(config.device))}"
            f" (asked: {config.precision}).",
        ],
        first_stage=done["first_stage"],
        before=done["before"],
        after=done["after"],
        settings=config.settings(),
        hardware=describe_device(training_device(config.device)),
        notes=[
            f"Held-out rows rerank each held-out query's {config.mine_from[0]} top-{config.candidates}.",
            'Serve it with `Reranker("<this folder>")` or `crossrank query --model <this folder>`.',
        ],
    )
