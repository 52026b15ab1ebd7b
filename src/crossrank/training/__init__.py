"""Training: ``crossrank distill`` (a better first stage or a late-interaction stage) and ``crossrank finetune``.

Ways to turn a user's own collection and queries into better retrieval, all on
sentence-transformers' trainers and all resumable:

* :func:`~crossrank.training.distill.distill` trains the collection's bi-encoder (the student) on
  a cross-encoder teacher's scores over the collection's own first-stage candidates, then
  re-embeds the collection with the student and swaps it in only when it is complete and verified.
* :func:`~crossrank.training.late.distill_late` (``crossrank distill --late-interaction``) trains
  a late-interaction (ColBERT-style) student on the same queries, candidates and teacher scores:
  a middle stage between the first stage and the cross-encoder.
* :func:`~crossrank.training.finetune.finetune` trains a cross-encoder on (query, positive) pairs
  with hard negatives mined from the first stage, or distils a teacher cross-encoder into a
  smaller one; the output is a normal model folder that :class:`crossrank.Reranker` serves.

This area imports the core and :mod:`crossrank.retrieval` (the first stage, Chroma, BEIR); the
training libraries (``datasets``, ``accelerate``) are the ``crossrank[train]`` extra and are
imported only when a run starts.
"""

from __future__ import annotations

from crossrank.errors import EmbedderMismatchError
from crossrank.training.common import keep_freed_memory
from crossrank.training.distill import DistillConfig, DistillReport, distill
from crossrank.training.finetune import FinetuneConfig, FinetuneReport, finetune
from crossrank.training.late import LateDistillConfig, distill_late

__all__ = [
    "DistillConfig",
    "DistillReport",
    "EmbedderMismatchError",
    "FinetuneConfig",
    "FinetuneReport",
    "LateDistillConfig",
    "distill",
    "distill_late",
    "finetune",
    "keep_freed_memory",
]
