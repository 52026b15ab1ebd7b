"""What several ``crossrank`` commands share: the store and model argument groups, and their use.

Choices are read from :mod:`crossrank.backends.table` and :mod:`crossrank.inputs`, so a new backend,
precision or option value shows up here without an edit; the default model is
:func:`crossrank.model_files.default_model` (``$CROSSRANK_MODEL``, else ``DEFAULT_MODEL``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from crossrank.backends.table import BACKEND_CHOICES, QUANTIZE_CHOICES
from crossrank.inputs import LONG_DOC_CHOICES, NORMALIZE_CHOICES
from crossrank.model_files import DEFAULT_MODEL, default_model

if TYPE_CHECKING:
    from crossrank.retrieval.pipeline import Pipeline

T = TypeVar("T")


def add_store_args(p: argparse.ArgumentParser) -> None:
    """Where the Chroma collection lives: ``--collection``, ``--db`` or ``--chroma-url``, ``--embedder``."""
    p.add_argument("--collection", default=None, help="Chroma collection name (default: crossrank)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db", default=None, help="embedded Chroma folder (default: $CROSSRANK_DB or the user data dir)")
    g.add_argument("--chroma-url", default=None, help="use a Chroma server, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--embedder", default=None, help="bi-encoder id or folder (default: $CROSSRANK_EMBEDDER or all-MiniLM-L6-v2)"
    )


def add_model_args(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The cross-encoder and how it scores.

    ``several=True`` (``crossrank eval``) lets ``--max-length`` and ``--long-documents`` take comma
    lists, one rerank setting per combination; they are then lists in the parsed arguments.
    """
    p.add_argument(
        "--model", default=None, help=f"cross-encoder id or folder (default: $CROSSRANK_MODEL or {DEFAULT_MODEL})"
    )
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    p.add_argument("--quantize", default="auto", choices=QUANTIZE_CHOICES)
    if several:
        p.add_argument(
            "--max-length",
            type=comma_list(int_or_auto, "a positive integer or auto"),
            default=[None],
            help="tokens per pair, comma list (default: the model's declared maximum; 'auto' names it in a list)",
        )
        p.add_argument(
            "--long-documents",
            type=comma_list(choice(LONG_DOC_CHOICES)),
            default=["truncate"],
            help=f"comma list from {', '.join(LONG_DOC_CHOICES)} (default: truncate)",
        )
    else:
        p.add_argument(
            "--max-length", type=int, default=None, help="tokens per pair (default: the model's declared maximum)"
        )
        p.add_argument("--long-documents", default="truncate", choices=LONG_DOC_CHOICES)
    p.add_argument("--normalize", default="none", choices=NORMALIZE_CHOICES)


def choice(choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse ``type`` accepting one of ``choices`` (for the items of a comma list)."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def positive_int(text: str) -> int:
    """An argparse ``type``: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def int_or_auto(text: str) -> int | None:
    """A positive int, or ``auto`` (None: the model's declared maximum)."""
    if text == "auto":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer or auto") from None


def comma_list(item: Callable[[str], Any], what: str | None = None) -> Callable[[str], list[Any]]:
    """An argparse ``type`` for ``a,b,c``: each item parsed by ``item``, duplicates dropped, order kept."""

    def parse(text: str) -> list[Any]:
        parts = [t.strip() for t in text.split(",") if t.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma list of {what or 'values'}")
        return list(dict.fromkeys(item(t) for t in parts))

    return parse


def model(args: argparse.Namespace) -> str:
    """The cross-encoder to load: ``--model`` if given, else :func:`default_model`."""
    return str(args.model) if getattr(args, "model", None) else default_model()


MODEL_OPTIONS = ("backend", "quantize", "max_length", "long_documents")


def reranker_kwargs(args: argparse.Namespace, names: Sequence[str] = (*MODEL_OPTIONS, "normalize")) -> dict[str, Any]:
    """``Reranker`` options from the model arguments (single-valued form): each of ``names``, read from its flag."""
    return {name: getattr(args, name) for name in names}


def pipeline(
    args: argparse.Namespace,
    *,
    create: bool,
    collection: str | None = None,
    hybrid: bool = False,
    with_model: bool = True,
    **pipeline_options: Any,
) -> Pipeline:
    """A ``Pipeline`` on the store arguments; with the model arguments' reranker when ``with_model``.

    ``pipeline_options`` go to the ``Pipeline`` as they are (``late=``, ``late_candidates=``, ...).
    """
    from crossrank.retrieval.chroma import DEFAULT_COLLECTION
    from crossrank.retrieval.pipeline import Pipeline

    kwargs = reranker_kwargs(args) if with_model else {}
    return Pipeline(
        collection or args.collection or DEFAULT_COLLECTION,
        db=args.db,
        chroma_url=args.chroma_url,
        embedder=args.embedder,
        reranker=model(args) if with_model else None,
        create=create,
        hybrid=hybrid,
        **pipeline_options,
        **kwargs,
    )


def add_late_args(p: argparse.ArgumentParser, *, indexing: bool = False) -> argparse._ArgumentGroup:
    """The late-interaction stage's model and store (``--late-interaction``, ``--late-store``)."""
    g = p.add_argument_group(
        "late interaction", "a multi-vector (ColBERT-style) model over token vectors stored beside the collection"
    )
    g.add_argument(
        "--late-interaction",
        default=None,
        metavar="MODEL",
        help="multi-vector model folder (sentence-transformers MultiVectorEncoder, PyLate or Stanford ColBERT)",
    )
    g.add_argument(
        "--late-store",
        default=None,
        metavar="DIR",
        help="where the token vectors live (default: <db>/crossrank-late/<collection>, or the user data dir "
        "for a Chroma server)",
    )
    if indexing:
        g.add_argument(
            "--rebuild", action="store_true", help="empty the store first (to change the model, precision or pooling)"
        )
        g.add_argument(
            "--late-precision",
            default=None,
            choices=("fp16", "int8"),
            help="stored form (default: the store's, fp16 for a new one)",
        )
        g.add_argument(
            "--late-pool-factor",
            type=positive_int,
            default=None,
            help="store about 1/N of each document's token vectors (hierarchical pooling; default: all)",
        )
    return g


def late_spec(args: argparse.Namespace) -> Any:
    """``Pipeline(late=...)`` from the parsed late-interaction arguments (None without ``--late-interaction``)."""
    model = getattr(args, "late_interaction", None)
    if not model:
        return None
    precision = getattr(args, "late_precision", None)
    pool = getattr(args, "late_pool_factor", None)
    if precision is None and pool is None:
        return model
    from crossrank.late import LateInteractionScorer

    return LateInteractionScorer(model, precision=precision, pool_factor=pool)


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def embedder_label(spec: str) -> str:
    """How to name the bi-encoder to a person: the bundled offline copy by name, else its spec."""
    from crossrank.retrieval.embeddings import offline_minilm_path

    local = offline_minilm_path()
    return "all-MiniLM-L6-v2 (bundled copy)" if local is not None and spec == str(local) else spec


def source_label(meta: dict[str, Any], fallback: str) -> str:
    """Where a hit came from: file name (and chunk number), else its topic, else ``fallback``."""
    src = meta.get("source")
    if isinstance(src, str) and src:
        name = Path(src).name
        return f"{name}#{meta.get('chunk', 0)}" if "chunk" in meta and not name.endswith(".jsonl") else name
    return str(meta.get("topic") or fallback)


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """A dataclass config filled from parsed arguments of the same names (``--lr`` fills ``learning_rate``).

    Fields with no argument keep their defaults; ``overrides`` set fields whose value is derived
    (``swap=not args.no_swap``).
    """
    import dataclasses

    aliases = {"learning_rate": "lr"}
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = aliases.get(f.name, f.name)
        if hasattr(args, name):
            values[f.name] = getattr(args, name)
    return cls(**{**values, **overrides})
