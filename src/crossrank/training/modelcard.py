"""MODEL_CARD.md for a trained model: what it is, the data, the loss, the settings, the measured table.

Written beside the weights so a model folder explains itself wherever it is copied; the numbers
are the ones the run measured on its held-out split, never typed in by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_METRICS = ("ndcg@10", "mrr@10", "teacher_ndcg@10")


def metrics_table(rows: Sequence[tuple[str, Mapping[str, float]]]) -> list[str]:
    """A Markdown table: one row per (name, metrics), one column per metric any row has."""
    cols = [m for m in _METRICS if any(m in r for _, r in rows)]
    if not cols:
        return ["(no held-out metrics)"]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.4f}" if c in r else "—" for c in cols) + " |")
    return lines


def write_card(
    path: Path,
    *,
    title: str,
    what: str,
    data: Sequence[str],
    training: Sequence[str],
    before: Mapping[str, float],
    after: Mapping[str, float],
    settings: Mapping[str, Any],
    first_stage: Mapping[str, float] | None = None,
    hardware: str | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Write the card (overwriting an older one). ``hardware``: what trained it (default: this CPU)."""
    if hardware is None:
        from crossrank.cpuinfo import describe

        hardware = describe()
    rows: list[tuple[str, Mapping[str, float]]] = []
    if first_stage:
        rows.append(("first stage alone", first_stage))
    rows += [("before training", before), ("after training (best checkpoint)", after)]
    lines = [
        f"# {title}",
        "",
        what,
        "",
        "## Data",
        *[f"- {d}" for d in data],
        "",
        "## Training",
        *[f"- {t}" for t in training],
        f"- Trained on: {hardware}.",
        "",
        "## Measured (held-out queries of the training data)",
        *metrics_table(rows),
        "",
        "ndcg@10 / mrr@10: against the held-out queries' known positives; teacher_ndcg@10: agreement with the "
        "teacher's ordering (its softmax as graded gains). Held-out queries come from the training data, not "
        "from a test set: measure on your own test queries (`crossrank eval`) before relying on the model.",
        "",
        *([*[f"- {n}" for n in notes], ""] if notes else []),
        "## Settings",
        "```json",
        json.dumps(dict(settings), indent=1, sort_keys=True, default=str),
        "```",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
