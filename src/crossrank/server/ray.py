"""Scale out on Ray: the same server on Ray Serve replicas, and pair scoring on Ray Data.

Serving: :func:`build_app` gives a Ray Serve application whose replicas each load the model once and
serve exactly the routes of ``crossrank serve`` (the same FastAPI app, built on the replica), with
requests gathered by ``@serve.batch`` and then scored together through the replica's micro-batcher.

    from ray import serve
    from crossrank.server.ray import build_app
    serve.run(build_app("cross-encoder/ms-marco-MiniLM-L6-v2", replicas=4), route_prefix="/")

GPUs: pass ``ray_actor_options={"num_gpus": 1}`` and ``reranker_options={"device": "cuda"}`` (one
GPU per replica; fractions such as 0.5 pack two replicas on a card).

Batch scoring: :func:`score_pairs_file_ray` runs ``map_batches`` over an actor pool, each actor
holding one model, and writes the rows in input order through the same writer as the
single-process path. Needs the ``ray`` extra (``pip install 'crossrank[ray]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from crossrank.errors import missing_extra
from crossrank.reranker import Reranker
from crossrank.results import RankedResults
from crossrank.server.pairs import PairWriter, file_format, pairs_of
from crossrank.server.settings import ServerSettings

Job = tuple[str, list[str], "int | None", dict[str, Any]]  # query, texts, top_n, per-call Reranker options


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise missing_extra("ray", "ray") from exc
    return ray


def _serve() -> Any:
    _ray()
    try:
        from ray import serve
    except ImportError as exc:
        raise missing_extra("ray[serve]", "ray") from exc
    return serve


class CrossrankReplica:
    """One Ray Serve replica: a Reranker, the crossrank app over it, and a ``@serve.batch`` queue.

    Wrapped by :func:`replica_class` (``serve.ingress`` with the app built on the replica) rather
    than decorated here, so importing this module does not need Ray.
    """

    def __init__(
        self,
        model: str,
        reranker_options: Mapping[str, Any],
        settings: ServerSettings,
        max_batch_size: int = 32,
        batch_wait_timeout_s: float = 0.005,
    ) -> None:
        # Loaded here, not in the background: Ray routes to a replica once its constructor returns.
        self.reranker = Reranker(model, **dict(reranker_options)).warmup()
        self.settings = settings
        self._batched = _batched(self._rank_jobs, max_batch_size, batch_wait_timeout_s)

    async def _rank_jobs(self, jobs: list[Job]) -> list[RankedResults | BaseException]:
        """Score a ``@serve.batch`` batch: its requests share the micro-batcher's forward passes."""
        coros = (
            self.reranker.arerank(q, texts, top_n=top_n, normalize="none", **options)
            for q, texts, top_n, options in jobs
        )
        return list(await asyncio.gather(*coros, return_exceptions=True))

    async def rank(self, query: str, texts: list[str], top_n: int | None, **options: Any) -> RankedResults:
        """The app's scoring function: queue the request for the next batch, raise its own error if it had one."""
        out = await self._batched((query, texts, top_n, options))
        if isinstance(out, BaseException):
            raise out
        assert isinstance(out, RankedResults)
        return out

    def __serve_build_asgi_app__(self) -> Any:
        from crossrank.server.access import configure_logging
        from crossrank.server.app import create_app

        configure_logging("info", self.settings.log_format, access=self.settings.access_log)

        return create_app(self.reranker, self.settings, rank=self.rank, load_on_startup=False)


def _batched(fn: Callable[[list[Job]], Any], max_batch_size: int, wait_s: float) -> Callable[[Job], Any]:
    serve = _serve()

    @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s)
    async def run(jobs: list[Job]) -> list[Any]:
        return list(await fn(jobs))

    return run


def replica_class() -> Any:
    """``CrossrankReplica`` wrapped by ``serve.ingress`` (the app is built on each replica)."""
    serve = _serve()
    return serve.ingress()(CrossrankReplica)


def build_app(
    model: str,
    *,
    replicas: int = 1,
    settings: ServerSettings | None = None,
    reranker_options: Mapping[str, Any] | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    max_batch_size: int = 32,
    batch_wait_timeout_s: float = 0.005,
    name: str = "crossrank",
) -> Any:
    """A Ray Serve application of ``replicas`` copies of the crossrank server (pass it to ``serve.run``).

    ``ray_actor_options`` sets each replica's resources (default one CPU; ``{"num_gpus": 1}``
    for a GPU each); ``reranker_options`` are :class:`~crossrank.Reranker` options (``backend``,
    ``device``, ``long_documents`` ...). Each replica takes up to ``settings.max_concurrent``
    requests; Ray Serve queues the rest and spreads them over the replicas.
    """
    serve = _serve()
    settings = settings or ServerSettings()
    deployment = serve.deployment(
        replica_class(),
        name=name,
        num_replicas=replicas,
        ray_actor_options=dict(ray_actor_options or {"num_cpus": 1}),
        max_ongoing_requests=settings.max_concurrent,
    )
    return deployment.bind(model, dict(reranker_options or {}), settings, max_batch_size, batch_wait_timeout_s)


def serve_blocking(
    app: Any, *, host: str = "127.0.0.1", port: int = 8080, num_cpus: int | None = None, num_gpus: int | None = None
) -> None:
    """Start Ray (locally unless ``RAY_ADDRESS`` names a cluster), serve ``app`` until Ctrl-C, shut down."""
    ray = _ray()
    serve = _serve()
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(app, name="crossrank", route_prefix="/", blocking=True)
    finally:
        serve.shutdown()


# ---------------------------------------------------------------------------------------------- Ray Data
class PairScorer:
    """A Ray Data actor: one model, scoring numpy batches of (query, document) rows."""

    def __init__(
        self, model: str, reranker_options: Mapping[str, Any], query_field: str, document_field: str, score_field: str
    ) -> None:
        self.reranker = Reranker(model, **dict(reranker_options))
        self.query_field = query_field
        self.document_field = document_field
        self.score_field = score_field

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        columns = {k: list(v) for k, v in batch.items()}
        pairs = pairs_of(columns, self.query_field, self.document_field)
        out = dict(batch)
        out[self.score_field] = np.asarray(self.reranker.score_pairs(pairs), dtype=np.float64)
        return out


def score_pairs_file_ray(
    model: str,
    source: Path,
    dest: Path,
    *,
    reranker_options: Mapping[str, Any] | None = None,
    actors: int = 2,
    query_field: str = "query",
    document_field: str = "document",
    score_field: str = "score",
    batch_rows: int = 1024,
    num_cpus_per_actor: float = 1.0,
    num_gpus_per_actor: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score ``source`` into ``dest`` with Ray Data ``map_batches`` over ``actors`` model actors, in input order."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    if file_format(source) == "parquet":
        ds = ray.data.read_parquet(str(source))
    else:
        ds = ray.data.read_json(str(source), lines=True)
    ds = ds.map_batches(
        PairScorer,
        fn_constructor_args=(model, dict(reranker_options or {}), query_field, document_field, score_field),
        batch_size=batch_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )
    done = 0
    with PairWriter(dest) as out:
        for batch in ds.iter_batches(batch_size=batch_rows, batch_format="numpy"):
            columns = {k: v.tolist() for k, v in batch.items()}
            out.write(columns)
            n = len(columns[score_field])
            done += n
            if progress is not None:
                progress(n)
    return done
