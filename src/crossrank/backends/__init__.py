"""Backends run a batch of padded token ids through a cross-encoder and return its logits.

They are deliberately tiny: tokenization, batching, truncation and scoring rules live in the core,
so every backend produces the same ranking from the same inputs.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np


class Backend(Protocol):
    """What the engine needs from a backend."""

    name: str

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, num_labels) as float32, from int64 input_ids / attention_mask / token_type_ids."""
        ...


def is_out_of_memory(exc: BaseException) -> bool:
    """Recognise allocation failures from numpy, torch and ONNX Runtime, so a batch can be halved."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "failed to allocate", "bad_alloc", "cannot allocate"))


def default_threads() -> int:
    """The cores this process may use (affinity-aware, so containers and taskset are respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)
