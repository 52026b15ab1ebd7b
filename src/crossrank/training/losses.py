"""Distillation losses beyond sentence-transformers' own: listwise KL with in-batch negatives.

:class:`~sentence_transformers.sentence_transformer.losses.DistillKLDivLoss` matches the student's
softmax to the teacher's over each query's own group (its best candidate and a few hard
negatives). That teaches the order *inside* the first stage's top-k, but nothing keeps the rest
of the collection away: the embeddings of every document move during training, and documents
that were never in any group can drift into a query's neighbourhood.

:func:`in_batch_kl_loss` widens each query's softmax to every document in the batch: its own
group keeps the teacher's distribution as the target, and the other queries' documents (random
documents from the collection's point of view, so almost always irrelevant) get a target of zero.
The forward passes are the same as the group-only loss; the extra cost is one
``batch × (batch × group)`` similarity matrix. A document that appears in two groups of one batch
(two claims sharing a relevant abstract) is masked out of the other query's row rather than
pushed away. :func:`multi_vector_in_batch_kl_loss` is the same loss for a late-interaction
student, its scores MaxSim instead of scaled cosines; both share :func:`in_batch_kl`.
"""

from __future__ import annotations

from typing import Any

from crossrank.errors import InvalidArgumentError


def in_batch_kl_loss(model: Any, *, scale: float = 20.0, temperature: float = 1.0) -> Any:
    """A sentence-transformers loss: listwise KL against the teacher, every other document in the batch a negative.

    Args:
        model: the student ``SentenceTransformer``.
        scale: the cosine scale (the student's scores are ``scale * cos``, see ``ScaledCosine``).
        temperature: the teacher's and the student's softmax temperature.

    Inputs are the same as ``DistillKLDivLoss``: columns (query, positive, negative_1..n) and a
    label of the teacher's scores for those candidates.
    """
    import torch
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    if not scale > 0 or not temperature > 0:
        raise InvalidArgumentError(f"scale and temperature must be > 0, got {scale} and {temperature}")

    class InBatchDistillKLLoss(DistillKLDivLoss):
        """Listwise KL over the query's group plus the batch's other documents (target zero)."""

        def compute_loss_from_embeddings(self, embeddings: list[Any], labels: Any) -> Any:
            if len(embeddings) < 3:
                raise InvalidArgumentError("in-batch KL needs (query, positive, negative_1, ...) columns")
            q = torch.nn.functional.normalize(embeddings[0], dim=-1)
            groups = len(embeddings) - 1
            batch = q.size(0)
            docs = torch.nn.functional.normalize(torch.cat(embeddings[1:], dim=0), dim=-1)  # column k*batch + i
            student = scale * q @ docs.T  # (batch, groups * batch)
            rows = torch.arange(batch, device=q.device)
            own = torch.stack([k * batch + rows for k in range(groups)], dim=1)  # (batch, groups)
            # A document identical to one of the row's own (same text: same embedding) is not a negative.
            with torch.no_grad():
                same = (docs @ docs.T) > 0.9999  # (groups*batch, groups*batch)
            return in_batch_kl(student, labels, own, same, temperature)

        def get_config_dict(self) -> dict[str, Any]:
            return {"scale": scale, "temperature": temperature, "in_batch_negatives": True}

    return InBatchDistillKLLoss(model, temperature=temperature)


def in_batch_kl(student: Any, labels: Any, own: Any, same: Any, temperature: float = 1.0) -> Any:
    """KL from the teacher's softmax over each row's own group to the student's softmax over every column.

    The core of both in-batch losses (bi-encoder here, multi-vector in :func:`multi_vector_in_batch_kl_loss`).

    Args:
        student: ``(batch, columns)`` student scores of every query against every document of the batch.
        labels: ``(batch, groups)`` teacher scores of each query's own group.
        own: ``(batch, groups)`` column of each row's own documents, in ``labels`` order.
        same: ``(columns, columns)`` bool, documents with the same text: a copy of a row's own
            document elsewhere in the batch is masked out of that row, not pushed away.
        temperature: divides both sides' scores; the loss is scaled by its square.
    """
    import torch

    batch = student.size(0)
    rows = torch.arange(batch, device=student.device).unsqueeze(1).expand_as(own)
    is_own = torch.zeros_like(student, dtype=torch.bool)
    is_own[rows, own] = True
    with torch.no_grad():
        shared = same[own].any(dim=1)  # (batch, columns): the same text as one of the row's own documents
        masked = shared & ~is_own
    scores = (student / temperature).masked_fill(masked, float("-inf"))
    teacher = torch.softmax(labels.detach().float() / temperature, dim=1)  # (batch, groups)
    target = torch.zeros_like(scores)
    target[rows, own] = teacher.to(target.dtype)
    log_probs = torch.log_softmax(scores, dim=1).masked_fill(masked, 0.0)
    # KL(target || student) = sum target * (log target - log student); zero targets contribute nothing.
    safe = torch.where(target > 0, target, torch.ones_like(target))
    kl = (target * (safe.log() - log_probs)).sum(dim=1).mean()
    return kl * temperature**2


def multi_vector_in_batch_kl_loss(model: Any, *, temperature: float = 1.0) -> Any:
    """The late-interaction counterpart of :func:`in_batch_kl_loss`: MaxSim scores, every batch document a negative.

    Args:
        model: the student ``MultiVectorEncoder``.
        temperature: the teacher's and the student's softmax temperature.

    Inputs are the same as sentence-transformers' ``MultiVectorDistillKLDivLoss``: columns (query,
    document_1..N) and a label of the teacher's scores for those documents. Documents are the
    same when their token ids are: two claims sharing an abstract do not push it away from each other.
    """
    import torch
    from sentence_transformers.base.losses.merged_forward import embed_columns_padded
    from sentence_transformers.multi_vector_encoder.losses import MultiVectorDistillKLDivLoss
    from sentence_transformers.multi_vector_encoder.scoring import colbert_scores
    from sentence_transformers.util import stack_padded_token_embeddings

    if not temperature > 0:
        raise InvalidArgumentError(f"temperature must be > 0, got {temperature}")

    class MultiVectorInBatchDistillKLLoss(MultiVectorDistillKLDivLoss):
        """Listwise KL over the query's group plus the batch's other documents (target zero), by MaxSim."""

        def forward(self, sentence_features: Any, labels: Any) -> Any:
            features = [dict(f) for f in sentence_features]
            if len(features) < 3:
                raise InvalidArgumentError("in-batch KL needs (query, document_1, document_2, ...) columns")
            query = self.model(features[0], task=features[0].get("task", "query"))
            q, q_mask = query["token_embeddings"], query["attention_mask"].bool()
            embs, masks = embed_columns_padded(self.model, features[1:], self.mini_batch_size, task_default="document")
            docs, docs_mask = stack_padded_token_embeddings(embs, masks)  # (batch, groups, tokens, dim)
            batch, groups = docs.shape[:2]
            student = colbert_scores(q, docs, queries_mask=q_mask, documents_mask=docs_mask)  # column j*groups + n
            own = torch.arange(batch * groups, device=q.device).reshape(batch, groups)
            return in_batch_kl(student, labels, own, _same_texts(features[1:], q.device), self.temperature)

        def get_config_dict(self) -> dict[str, Any]:
            return {"temperature": temperature, "in_batch_negatives": True, "similarity_fct": "maxsim"}

    return MultiVectorInBatchDistillKLLoss(model, temperature=temperature)


def _same_texts(columns: list[dict[str, Any]], device: Any) -> Any:
    """``(batch*groups, batch*groups)`` bool: documents with identical token ids (j*groups + n: row j, column n)."""
    import torch

    keys: list[tuple[int, ...]] = []
    batch = columns[0]["input_ids"].size(0)
    for j in range(batch):
        for col in columns:
            ids, mask = col["input_ids"][j], col["attention_mask"][j].bool()
            keys.append(tuple(int(x) for x in ids[mask].tolist()))
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    ident = torch.tensor([index[k] for k in keys], device=device)
    return ident.unsqueeze(0) == ident.unsqueeze(1)
