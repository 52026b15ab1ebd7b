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
pushed away.
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
            student = scale * q @ docs.T / temperature  # (batch, groups * batch)
            own = torch.zeros(batch, groups * batch, dtype=torch.bool, device=q.device)
            rows = torch.arange(batch, device=q.device)
            for k in range(groups):
                own[rows, k * batch + rows] = True
            # A document identical to one of the row's own (same text: same embedding) is not a negative.
            with torch.no_grad():
                same = (docs @ docs.T) > 0.9999  # (groups*batch, groups*batch)
                shared = torch.zeros_like(own)
                for k in range(groups):
                    shared |= same[k * batch + rows]
                masked = shared & ~own
            student = student.masked_fill(masked, float("-inf"))
            teacher = torch.softmax(labels.detach().float() / temperature, dim=1)  # (batch, groups)
            target = torch.zeros_like(student)
            for k in range(groups):
                target[rows, k * batch + rows] = teacher[:, k]
            log_probs = torch.log_softmax(student, dim=1).masked_fill(masked, 0.0)
            # KL(target || student) = sum target * (log target - log student); zero targets contribute nothing.
            safe = torch.where(target > 0, target, torch.ones_like(target))
            kl = (target * (safe.log() - log_probs)).sum(dim=1).mean()
            return kl * temperature**2

        def get_config_dict(self) -> dict[str, Any]:
            return {"scale": scale, "temperature": temperature, "in_batch_negatives": True}

    return InBatchDistillKLLoss(model, temperature=temperature)
