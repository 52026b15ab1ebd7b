"""LlamaIndex integration for crossrank: a node postprocessor for query engines.

>>> from llama_index.postprocessor.crossrank import CrossRankRerank
>>> index.as_query_engine(node_postprocessors=[CrossRankRerank(top_n=5)])  # doctest: +SKIP
"""

from llama_index.postprocessor.crossrank.base import CrossRankRerank

__all__ = ["CrossRankRerank"]
