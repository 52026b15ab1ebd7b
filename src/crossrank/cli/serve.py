"""``crossrank serve``: a rerank server with Cohere v1/v2, Jina/vLLM, TEI and Infinity routes.

Binds 127.0.0.1 by default; an API key (``--api-key`` or ``$CROSSRANK_API_KEY``) is required by
every route but ``/health`` when set. ``--ray --replicas N`` runs the same app on Ray Serve.
``--late-interaction MODEL`` (or a ``--model`` folder that is a multi-vector model) serves a
late-interaction model on the same routes: scores are MeanMaxSim, ``relevance_score`` its sigmoid.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from crossrank.backends.table import BACKEND_CHOICES, QUANTIZE_CHOICES
from crossrank.cli import common
from crossrank.inputs import LONG_DOC_CHOICES

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the ``crossrank`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve the reranker over HTTP (Cohere, Jina, vLLM, TEI and Infinity compatible)",
        description=__doc__,
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, help="cross-encoder id or folder (default: $CROSSRANK_MODEL)")
    m.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    m.add_argument("--quantize", default="auto", choices=QUANTIZE_CHOICES)
    m.add_argument("--device", default=None, help="torch device, e.g. cuda (default: the backend's choice)")
    m.add_argument("--max-length", type=int, default=None, help="tokens per pair (default: the model's maximum)")
    m.add_argument(
        "--long-documents",
        default="truncate",
        choices=LONG_DOC_CHOICES,
        help="documents over max-length: truncate (reported in meta.warnings) or score in windows",
    )
    m.add_argument("--max-wait-ms", type=float, default=3.0, help="micro-batch wait for concurrent requests")
    m.add_argument(
        "--late-interaction",
        default=None,
        metavar="MODEL",
        help="serve a multi-vector (ColBERT-style) model instead of a cross-encoder (a --model folder of one is "
        "detected); scores are MeanMaxSim (mean over query tokens of the best cosine), relevance_score its sigmoid",
    )
    m.add_argument(
        "--late-store",
        default=None,
        metavar="DIR",
        help="a late-interaction store (crossrank index --late-interaction) whose stored vectors documents "
        "with the same text reuse, opened read-only",
    )
    m.add_argument(
        "--served-model-name",
        action="append",
        default=[],
        help="the model name in responses, and one requests may give in 'model' (repeatable; the first is "
        "reported; the folder name or Hub id of --model is always accepted, its path never)",
    )
    m.add_argument(
        "--ignore-model-field", action="store_true", help="accept any 'model' value (it never loads anything)"
    )
    n = p.add_argument_group("network and limits")
    n.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    n.add_argument("--port", type=int, default=8080)
    n.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $CROSSRANK_API_KEY)")
    n.add_argument("--max-documents", type=int, default=10_000, help="documents per request (more: 413)")
    n.add_argument("--max-body-mb", type=float, default=4.0, help="request body limit in MiB (more: 413)")
    n.add_argument("--max-concurrent", type=int, default=128, help="requests in flight (more: 429 + Retry-After)")
    n.add_argument("--timeout", type=float, default=60.0, help="seconds one request may score (more: 504)")
    n.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to finish requests on shutdown")
    n.add_argument("--no-docs", action="store_true", help="turn off /docs and /openapi.json")
    n.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    n.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="log lines as text or JSON objects, one per line (access lines carry method, route, status, "
        "latency_ms, documents, tokens, request_id)",
    )
    n.add_argument("--no-access-log", action="store_true", help="no log line per request")
    r = p.add_argument_group("Ray Serve (pip install 'crossrank[ray]')")
    r.add_argument("--ray", action="store_true", help="serve on Ray Serve replicas instead of one process")
    r.add_argument("--replicas", type=int, default=1)
    r.add_argument("--num-cpus-per-replica", type=float, default=1.0)
    r.add_argument("--num-gpus-per-replica", type=float, default=0.0, help="e.g. 1 with --device cuda")
    r.add_argument("--max-batch-size", type=int, default=32, help="@serve.batch: requests gathered per batch")
    p.set_defaults(func=run)
    return p


def settings_from(args: argparse.Namespace, model: str) -> Any:
    """The server settings from the parsed arguments."""
    from crossrank.server.run import api_key_from_env
    from crossrank.server.settings import ServerSettings, model_names

    return ServerSettings(
        served_model_names=model_names(model, list(args.served_model_name)),
        ignore_model_field=args.ignore_model_field,
        api_key=api_key_from_env(args.api_key),
        max_documents=args.max_documents,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_concurrent=args.max_concurrent,
        request_timeout_s=args.timeout,
        docs=not args.no_docs,
        access_log=not args.no_access_log,
        log_format=args.log_format,
    )


def reranker_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Reranker`` options from the model arguments (scores stay raw: the app applies the sigmoid)."""
    return common.reranker_kwargs(args, (*common.MODEL_OPTIONS, "device", "max_wait_ms"))


def late_model(args: argparse.Namespace, model: str) -> str | None:
    """The late-interaction model to serve: ``--late-interaction``, or ``--model`` when it is a multi-vector folder."""
    if getattr(args, "late_interaction", None):
        return str(args.late_interaction)
    if getattr(args, "model", None):
        from crossrank.late import is_multi_vector_folder

        return model if is_multi_vector_folder(model) else None
    return None


def late_reranker(args: argparse.Namespace, model: str) -> Any:
    """A ``Reranker`` over a late-interaction scorer: MeanMaxSim, so ``relevance_score`` (its sigmoid) never saturates.

    MaxSim sums one cosine per query token, so it grows with the query's length and its sigmoid
    reaches 1.0 for long queries; the mean (the same order for every query) stays in [-1, 1].
    """
    from crossrank.errors import InvalidArgumentError
    from crossrank.late import LateInteractionScorer, LateVectorStore
    from crossrank.reranker import Reranker

    if args.long_documents != "truncate":
        raise InvalidArgumentError(
            "--long-documents windows does not apply to late interaction (each document is read once, up to its "
            "document length)"
        )
    # The cross-encoder's options have no meaning here: refused, never dropped silently.
    unused = [
        flag
        for flag, given in (
            ("--backend", args.backend != "auto"),
            ("--quantize", args.quantize != "auto"),
            ("--max-length", args.max_length is not None),
            ("--model", bool(args.model and args.late_interaction and args.model != args.late_interaction)),
        )
        if given
    ]
    if unused:
        raise InvalidArgumentError(
            f"{', '.join(unused)} apply to a cross-encoder; this server serves the late-interaction model {model} "
            "alone: leave them out"
        )
    store = LateVectorStore(args.late_store, readonly=True) if args.late_store else None
    return Reranker(LateInteractionScorer(model, store=store, similarity="meanmaxsim", device=args.device))


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until Ctrl-C / SIGTERM.

    Everything the server writes goes through its log (stderr), so ``--log-format json`` gives
    JSON lines only: Python warnings are logged too, and download/load progress bars are off.
    """
    from crossrank.server.access import configure_logging

    if args.log_format == "json":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported
    model = common.model(args)
    late = late_model(args, model)
    if late is not None:
        model = late
    elif args.late_store:
        from crossrank.errors import InvalidArgumentError

        raise InvalidArgumentError(
            "--late-store holds a late-interaction model's vectors: add --late-interaction MODEL"
        )
    settings = settings_from(args, model)
    configure_logging(args.log_level, settings.log_format, access=settings.access_log)
    log = logging.getLogger("crossrank.server")
    if args.host not in LOOPBACK and settings.api_key is None:
        log.warning(
            "binding %s without an API key; anyone who can reach this port can use the model "
            "(set --api-key or $CROSSRANK_API_KEY)",
            args.host,
        )
    if args.ray and late is not None:
        from crossrank.errors import InvalidArgumentError

        raise InvalidArgumentError("--ray serves cross-encoders only; serve a late-interaction model without --ray")
    if args.ray:
        from crossrank.server.ray import build_app, serve_blocking

        actor = {"num_cpus": args.num_cpus_per_replica}
        if args.num_gpus_per_replica:
            actor["num_gpus"] = args.num_gpus_per_replica
        app = build_app(
            model,
            replicas=args.replicas,
            settings=settings,
            reranker_options=reranker_options(args),
            ray_actor_options=actor,
            max_batch_size=args.max_batch_size,
        )
        serve_blocking(app, host=args.host, port=args.port)
        return 0
    from crossrank.reranker import Reranker
    from crossrank.server.run import serve

    reranker = late_reranker(args, late) if late is not None else Reranker(model, **reranker_options(args))
    log.info(
        "serving %s as %r on http://%s:%d (docs: /docs, health: /health)",
        model,
        settings.model_name,
        args.host,
        args.port,
    )
    serve(
        reranker,
        settings,
        host=args.host,
        port=args.port,
        graceful_timeout_s=args.graceful_timeout,
        log_level=args.log_level,
    )
    return 0
