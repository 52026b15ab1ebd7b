"""Copies for adapters: results must never share mutable state with the caller's objects."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def copy_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep copy when possible (nested lists/dicts), else a shallow copy (locks, clients, handles)."""
    if not metadata:
        return {}
    try:
        return copy.deepcopy(dict(metadata))
    except Exception:
        return dict(metadata)
