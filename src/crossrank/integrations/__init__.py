"""Code the framework adapters share, so each adapter keeps only its framework's glue.

:class:`RerankOptions` is a pydantic mixin holding the options every adapter exposes (``model``,
``top_n``, ``threshold``, ``normalize``, ``reranker_kwargs``, a shared ``reranker=``), the one place
that builds the :class:`~crossrank.Reranker` and runs it sync or async with the adapter's options
passed on every call — so a ``Reranker`` shared between adapters gives identical scores and
filtering in each. :func:`copy_metadata` makes the copies adapters return. Imported only by the
adapters (it needs pydantic, which both frameworks bring).
"""

from crossrank.integrations.copying import copy_metadata
from crossrank.integrations.options import RerankOptions

__all__ = ["RerankOptions", "copy_metadata"]
