"""LangChain integration for crossrank: a document compressor and a ``BaseCrossEncoder``.

>>> from langchain_crossrank import CrossRankCompressor
>>> compressor = CrossRankCompressor(model="cross-encoder/ms-marco-MiniLM-L6-v2", top_n=5)  # doctest: +SKIP
"""

from __future__ import annotations

from langchain_crossrank.compressors import CrossRankCompressor
from langchain_crossrank.cross_encoders import CrossRankCrossEncoder

__all__ = ["CrossRankCompressor", "CrossRankCrossEncoder"]
