"""The small demo corpus bundled with the package: general passages on several topics and questions.

Used by ``crossrank demo``, the examples and the OpenVINO int8 calibration (so quantizing needs no
user data and no download).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from crossrank.jsonl import read_jsonl


def corpus_path() -> Path:
    """The bundled ``demo_corpus.jsonl`` (``{"_id", "title", "text", "metadata": {"topic"}}`` per line)."""
    return Path(str(resources.files("crossrank") / "data" / "demo_corpus.jsonl"))


def corpus() -> list[dict[str, Any]]:
    """The bundled demo corpus, one dict per passage: ``{"_id", "title", "text", "metadata": {"topic"}}``.

    Exported as ``crossrank.demo_corpus``: a ready sample to index into a vector store when trying
    crossrank (the examples and the docs use it), with no download and no dataset to find.
    """
    return read_jsonl(corpus_path())


def passages() -> list[str]:
    """The demo passages' texts, in file order."""
    return [str(row["text"]) for row in read_jsonl(corpus_path())]


def queries() -> list[str]:
    """The example questions shown by ``crossrank demo``."""
    text = (resources.files("crossrank") / "data" / "demo_queries.json").read_text(encoding="utf-8")
    return [str(q) for q in json.loads(text)]
