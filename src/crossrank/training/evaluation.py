"""Held-out evaluation during training: rerank each held-out query's candidates with the model being trained.

One evaluator for both commands. For each held-out query it orders the query's first-stage
candidates by the model (cosine similarity for a bi-encoder student, the logit for a cross-encoder)
and reports

* ``ndcg@10`` / ``mrr@10`` against the known positives (queries that have some), and
* ``teacher_ndcg@10``: nDCG@10 with the teacher's softmax probabilities as graded gains, i.e. how
  well the model reproduces the teacher's ordering (distillation runs; works for pseudo-queries).

The trainer keeps the checkpoint with the best primary metric (``ndcg@10`` when held-out queries
have positives, else ``teacher_ndcg@10``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sentence_transformers.base.evaluation import BaseEvaluator

from crossrank.retrieval.beir import mrr_at_k as mrr
from crossrank.retrieval.beir import ndcg_at_k as ndcg


@dataclass(frozen=True)
class HeldOut:
    """One held-out query: its candidates (ids and texts, first-stage order) and what judges them."""

    query: str
    ids: list[str]
    texts: list[str]
    positives: dict[str, int] = field(default_factory=dict)
    teacher: list[float] | None = None  # raw teacher scores in ``ids`` order


def teacher_gains(ids: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    """The teacher's softmax over a candidate list, as graded gains."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.exp(s - s.max())
    p /= p.sum()
    return {d: float(x) for d, x in zip(ids, p)}


def measure(samples: Sequence[HeldOut], scores: Sequence[Sequence[float]], k: int = 10) -> dict[str, float]:
    """The metrics of ordering each sample's candidates by ``scores`` (one list per sample)."""
    judged: list[tuple[float, float]] = []
    agree: list[float] = []
    for sample, sc in zip(samples, scores):
        order = [sample.ids[i] for i in np.argsort(-np.asarray(sc, dtype=np.float64), kind="stable")]
        if sample.positives:
            rels = {d: float(r) for d, r in sample.positives.items()}
            judged.append((ndcg(order, rels, k), mrr(order, rels, k)))
        if sample.teacher is not None:
            agree.append(ndcg(order, teacher_gains(sample.ids, sample.teacher), k))
    out: dict[str, float] = {}
    if judged:
        out[f"ndcg@{k}"] = float(np.mean([a for a, _ in judged]))
        out[f"mrr@{k}"] = float(np.mean([b for _, b in judged]))
    if agree:
        out[f"teacher_ndcg@{k}"] = float(np.mean(agree))
    return out


def first_stage_metrics(samples: Sequence[HeldOut], k: int = 10) -> dict[str, float]:
    """The metrics of the candidates in their first-stage order (the "before reranking" row)."""
    return measure(samples, [[-float(i) for i in range(len(s.ids))] for s in samples], k)


class HeldOutEvaluator(BaseEvaluator):
    """A sentence-transformers evaluator over :class:`HeldOut` samples, for any of the three model kinds.

    ``kind`` is ``"bi-encoder"`` (a ``SentenceTransformer``: cosine of query and document
    embeddings), ``"cross-encoder"`` (a ``CrossEncoder``: its raw logit per pair) or
    ``"multi-vector"`` (a ``MultiVectorEncoder``: MaxSim of the query's and each document's token
    vectors, by the model's own ``similarity``).
    """

    def __init__(self, samples: Sequence[HeldOut], kind: str, *, name: str = "heldout", batch_size: int = 32) -> None:
        super().__init__()
        self.samples = list(samples)
        self.kind = kind
        self.name = name
        self.batch_size = batch_size
        judged = any(s.positives for s in self.samples)
        self.primary_metric = "ndcg@10" if judged else "teacher_ndcg@10"
        self.greater_is_better = True
        # What the trainer logs it as (``primary_metric`` itself gets the name prefix on first use).
        self.trainer_metric = f"eval_{name}_{self.primary_metric}"

    def scores(self, model: Any) -> list[list[float]]:
        """The model's score for every candidate of every sample."""
        if self.kind == "cross-encoder":
            pairs = [(s.query, t) for s in self.samples for t in s.texts]
            flat = np.asarray(
                model.predict(pairs, batch_size=self.batch_size, activation_fn=_identity(), show_progress_bar=False),
                dtype=np.float64,
            ).reshape(-1)
        elif self.kind == "multi-vector":
            flat = self._maxsim(model)
        else:
            texts = list(dict.fromkeys(t for s in self.samples for t in s.texts))
            docs = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            where = {t: i for i, t in enumerate(texts)}
            queries = model.encode(
                [s.query for s in self.samples],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
            flat = np.concatenate(
                [docs[[where[t] for t in s.texts]] @ q for s, q in zip(self.samples, queries)]
            ).astype(np.float64)
        out: list[list[float]] = []
        at = 0
        for s in self.samples:
            out.append([float(x) for x in flat[at : at + len(s.ids)]])
            at += len(s.ids)
        return out

    def _maxsim(self, model: Any) -> np.ndarray:
        """Every sample's MaxSim scores, flat: each distinct text encoded once, as a document."""
        texts = list(dict.fromkeys(t for s in self.samples for t in s.texts))
        docs = model.encode_document(texts, batch_size=self.batch_size, show_progress_bar=False)
        where = {t: i for i, t in enumerate(texts)}
        queries = model.encode_query([s.query for s in self.samples], batch_size=self.batch_size)
        return np.concatenate(
            [
                model.similarity(q, [docs[where[t]] for t in s.texts]).float().cpu().numpy().reshape(-1)
                for s, q in zip(self.samples, queries)
            ]
        ).astype(np.float64)

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        metrics = measure(self.samples, self.scores(model))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


def _identity() -> Any:
    import torch

    return torch.nn.Identity()
