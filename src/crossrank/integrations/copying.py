"""Copies for adapters: results must never share mutable state with the caller's objects."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def copy_metadata(metadata: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """A copy of ``metadata`` with ``extra`` keys added.

    Deep when possible (nested lists/dicts), else shallow (values such as locks, clients or open
    handles cannot be deep-copied).
    """
    out: dict[str, Any]
    if not metadata:
        out = {}
    else:
        try:
            out = copy.deepcopy(dict(metadata))
        except Exception:
            out = dict(metadata)
    out.update(extra)
    return out
