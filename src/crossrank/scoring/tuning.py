"""``backend="auto"`` decided by measurement on the CPU in front of it, once per model and CPU.

Which CPU path is fastest depends on the CPU (AVX2, AVX-512 VNNI, AMX, ARM), the runtime versions
and the model; a rule written on one machine is a guess on the next. So the first time a model is
used with ``auto`` on a CPU, :func:`tune` builds every path that can run there (OpenVINO int8 /
bf16 / fp32, ONNX Runtime int8 / fp32), times each on pairs shaped like real reranking inputs
(bundled demo passages joined to a few hundred tokens), tries other batch sizes (and thread
counts on SMT CPUs) for the fastest (and a close runner-up), and keeps the fastest whose ranking agrees with fp32
(:data:`MIN_AGREEMENT`, mean Kendall tau per query). The :class:`Decision` is cached under a key
made of the CPU model, its ISA flags (within any ISA limit), the runtime versions, the export
format and the model's content hash, so later starts read one small file.

``CROSSRANK_TUNE=0`` (or ``tune=False``) skips measuring and uses the static rule
(:func:`crossrank.scoring.engine.resolve_backend`); ``crossrank tune`` measures again and prints
the table the decision came from. ``backend=`` / ``quantize=`` other than ``auto`` bypass all of it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossrank import cpuinfo
from crossrank.backends import Backend, default_threads
from crossrank.errors import BackendUnavailableError, CrossrankError, ExportError, ModelLoadError
from crossrank.model_files import ModelInfo

log = logging.getLogger("crossrank")

#: Mean Kendall tau (per query, against the fp32 reference) a path needs to be chosen.
MIN_AGREEMENT = 0.85
#: The timing workload: queries × documents per query, documents of this many demo passages.
QUERIES, DOCS_PER_QUERY, PASSAGES_PER_DOC = 4, 16, 6
#: Timing inputs are cut here (or at the model's own length, if shorter).
TUNE_MAX_LENGTH = 256
BATCH_SIZES = (8, 16, 32, 64)
#: An exported folder (``crossrank export``: light installs, containers, serverless) is tuned on a
#: smaller budget so that its first start scores within seconds: this many queries, one timed run
#: per setting after the warm-up, and these batch sizes. Its paths differ by far more than that
#: loses in precision (int8 against fp32); ``crossrank tune`` measures it in full.
QUICK_QUERIES, QUICK_REPEATS, QUICK_BATCH_SIZES = 2, 1, (8, 32)
DECISION_VERSION = 2  # 2: ONNX Runtime left out under ISA emulation

Build = Callable[[str, str, int], Backend]  # (backend, quantize, threads) -> a loaded backend


@dataclass
class Trial:
    """One timed setting: wall ms for the workload (None: not measured), agreement with fp32, or why it failed."""

    backend: str
    quantize: str
    batch_size: int
    threads: int
    name: str = ""
    ms: float | None = None
    agreement: float | None = None
    error: str | None = None
    build_s: float | None = None  # loading (and on a first run exporting) this path, for its first trial

    @property
    def label(self) -> str:
        return f"{self.name or f'{self.backend}-{self.quantize}'} bs={self.batch_size} threads={self.threads}"


@dataclass
class Decision:
    """What ``auto`` runs for one model on one CPU, and the measurements it was chosen from."""

    backend: str
    quantize: str
    batch_size: int
    threads: int
    key: str
    cpu: str
    model: str
    pairs: int
    tokens: int
    seconds: float
    reference: str | None
    trials: list[Trial] = field(default_factory=list)
    version: int = DECISION_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        trials = [Trial(**t) for t in data.get("trials", [])]
        return cls(**{**data, "trials": trials})

    def table(self) -> str:
        """The measurements as a Markdown table, fastest first, the chosen row marked."""
        lines = [
            f"CPU: {self.cpu}",
            f"model: {self.model}; workload: {self.pairs} pairs × ≤{self.tokens} tokens; "
            f"reference: {self.reference or 'none'}; tuned in {self.seconds:.1f} s",
            "",
            "| path | batch | threads | ms | agreement (Kendall τ vs fp32) | build s | note |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        ordered = sorted(self.trials, key=lambda t: (t.ms is None, t.ms or 0.0))
        for t in ordered:
            chosen = (t.backend, t.quantize, t.batch_size, t.threads) == (
                self.backend,
                self.quantize,
                self.batch_size,
                self.threads,
            )
            ms = f"{t.ms:.0f}" if t.ms is not None else "–"
            agr = f"{t.agreement:.3f}" if t.agreement is not None else "–"
            note = "**chosen**" if chosen else (t.error or "")
            build = f"{t.build_s:.1f}" if t.build_s is not None else ""
            lines.append(
                f"| {t.name or t.backend + '-' + t.quantize} | {t.batch_size} | {t.threads} | {ms} | {agr} | "
                f"{build} | {note} |"
            )
        return "\n".join(lines)


def tuning_enabled() -> bool:
    """False when ``CROSSRANK_TUNE`` is 0 / false / off / no: ``auto`` then follows the static rule."""
    return os.environ.get("CROSSRANK_TUNE", "1").strip().lower() not in ("0", "false", "off", "no")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


_ISA_PREFIXES = ("avx", "amx", "fma", "sse", "asimd", "sve")


def decision_key(info: ModelInfo, quantize: str, num_threads: int | None) -> str:
    """What a decision depends on: CPU, ISA flags within the limit, runtimes, export format, model, request."""
    from crossrank.backends.export import EXPORT_FORMAT

    parts = {
        "cpu": cpuinfo.cpu_model(),
        "flags": sorted(
            f for f in cpuinfo.effective_flags() if f.startswith(("avx", "amx", "fma", "sse", "asimd", "sve"))
        ),
        "limit": cpuinfo.isa_limit(),
        "runtimes": [_version(d) for d in ("openvino", "onnxruntime", "nncf")],
        "export": EXPORT_FORMAT,
        "model": info.fingerprint,
        "quantize": quantize,
        "threads": num_threads or default_threads(),
        "version": DECISION_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def decision_path(key: str) -> Path:
    """Where the decision with this key is cached."""
    from crossrank.backends.export import cache_root

    return cache_root() / "tuning" / f"{key}.json"


def cached_decision(info: ModelInfo, quantize: str, num_threads: int | None) -> Decision | None:
    """The decision made earlier for this model, CPU and request, if any (unreadable files count as none)."""
    path = decision_path(decision_key(info, quantize, num_threads))
    try:
        return Decision.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save_decision(decision: Decision) -> Path | None:
    """Write the decision atomically; a read-only cache only costs a re-measure next start."""
    path = decision_path(decision.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(decision.to_json(), indent=1))
        tmp.replace(path)
        return path
    except OSError as exc:
        log.debug("could not save the tuning decision for %s: %s", decision.model, exc)
        return None


def candidates(quantize: str, *, openvino_int8: bool | None = None) -> list[tuple[str, str]]:
    """The (backend, precision) paths ``auto`` may choose from here for a ``quantize`` request.

    ``openvino_int8``: whether an OpenVINO int8 model can be had (default: NNCF is installed to build it).
    """
    from crossrank.backends.openvino_backend import cpu_has_bf16, nncf_installed, openvino_installed

    out: list[tuple[str, str]] = []
    if openvino_installed():
        precisions = ["int8"] if (nncf_installed() if openvino_int8 is None else openvino_int8) else []
        precisions += ["bf16"] if cpu_has_bf16() else []
        precisions += ["fp32"]
        out += [("openvino", p) for p in precisions if quantize in ("auto", p)]
    # ONNX Runtime picks its kernels from the real CPU and has no switch like ONEDNN_MAX_CPU_ISA: on a
    # CPU emulating a narrower one its timings would be the wider CPU's and skew the decision, so it
    # is only a candidate there when nothing else runs.
    emulated = cpuinfo.effective_flags() != cpuinfo.cpu_flags()
    if not emulated or not out:
        out += [("onnx", p) for p in ("int8", "fp32") if quantize in ("auto", p)]
    if quantize == "bf16" and not out:
        out = [("onnx", "int8")]
    return out


def paths_for(info: ModelInfo, quantize: str) -> list[tuple[str, str]]:
    """:func:`candidates` for ``info``: for an exported folder, only the paths whose graphs it holds.

    Raises:
        NotExportedError: an exported folder none of whose graphs runs with this install on this CPU.
    """
    if info.exported is None:
        return candidates(quantize)
    from crossrank.backends.portable import holds, nothing_runs

    paths = [p for p in candidates(quantize, openvino_int8=True) if holds(info, *p)]
    if not paths:  # e.g. emulating a narrower CPU left ONNX Runtime out, and the folder has no OpenVINO graph
        paths = [("onnx", p) for p in ("int8", "fp32") if quantize in ("auto", p) and holds(info, "onnx", p)]
    if not paths:
        raise nothing_runs(info)
    return paths


@dataclass
class Workload:
    """Token inputs for timing: every query's pairs in one list (scored in one call, as a rerank is)."""

    ids: list[list[int]]
    types: list[list[int]]
    bounds: list[tuple[int, int]]  # each query's [start, end) in ids
    tokens: int  # the length inputs were cut at

    def per_query(self, scores: np.ndarray) -> list[np.ndarray]:
        return [scores[a:b] for a, b in self.bounds]


def workload(info: ModelInfo, encoder_for: Callable[[int], Any], *, queries: int = QUERIES) -> Workload:
    """``queries`` (:data:`QUERIES`) demo questions × :data:`DOCS_PER_QUERY` documents of joined demo passages.

    Documents are a few hundred tokens (cut at :data:`TUNE_MAX_LENGTH` or the model's own length),
    and each query's list starts with the passage sharing most words with it, so scores spread
    the way real candidate lists do and the agreement check has an order to agree on.
    """
    from crossrank import demo_data

    qs = demo_data.queries()
    ps = demo_data.passages()
    length = min(TUNE_MAX_LENGTH, info.default_max_length)
    enc = encoder_for(length)
    ids: list[list[int]] = []
    types: list[list[int]] = []
    bounds = []
    for qi in range(queries):
        query = qs[qi % len(qs)]
        docs = [
            " ".join(ps[(qi * 31 + d * PASSAGES_PER_DOC + j) % len(ps)] for j in range(PASSAGES_PER_DOC))
            for d in range(DOCS_PER_QUERY)
        ]
        docs[0] = f"{ps[_best_passage(query, ps)]} {docs[0]}"
        e = enc.encode(query, docs)
        bounds.append((len(ids), len(ids) + len(e.ids)))
        ids += e.ids
        types += e.types
    return Workload(ids, types, bounds, length)


def _best_passage(query: str, passages: Sequence[str]) -> int:
    words = {w.strip("?.,").lower() for w in query.split() if len(w) > 3}
    return max(range(len(passages)), key=lambda i: len(words & set(passages[i].lower().split())))


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a between two score vectors (1: same order, -1: reversed); ties count as disagreement."""
    n = len(a)
    if n < 2:
        return 1.0
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(n, 1)
    return float((da[iu] * db[iu]).sum() / len(iu[0]))


def tune(
    info: ModelInfo,
    build: Build,
    score: Callable[[Backend, Workload, int], np.ndarray],
    work: Workload,
    *,
    quantize: str = "auto",
    num_threads: int | None = None,
    repeats: int = 2,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    progress: bool | None = None,
) -> Decision:
    """Measure the candidate paths and return the decision (not saved; see :func:`save_decision`).

    ``build(backend, quantize, threads)`` loads a path (exporting on first use); ``score(backend,
    work, batch_size)`` scores all of ``work``'s pairs with it in one call. A path that fails to build is listed
    with its error and skipped; if none builds, the last error is raised.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    threads = num_threads or default_threads()
    thread_options = [threads]
    physical = cpuinfo.physical_cores()
    if num_threads is None and physical and physical < threads:
        thread_options.append(physical)
    paths = paths_for(info, quantize)
    n_pairs = len(work.ids)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(paths), desc=f"tuning {info.name} for this CPU", unit="path", disable=not show, leave=False)
    if not show:  # no bar to watch: say why the first call takes a while (once per model, CPU and runtime)
        log.warning(
            "crossrank: measuring %d backend paths for %s on this CPU, once (the choice is cached; "
            "CROSSRANK_TUNE=0 skips it) ...",
            len(paths),
            info.name,
        )
    trials: list[Trial] = []
    built: dict[tuple[str, str, int], Backend] = {}
    reference: np.ndarray | None = None
    reference_name: str | None = None
    last_error: CrossrankError | None = None

    scores: dict[int, np.ndarray] = {}  # id(trial) -> its scores, for the agreement check at the end

    def measure(be: Backend, trial: Trial, best: float | None) -> None:
        """Time ``trial``: the fastest of ``repeats`` runs after a warm-up, one run if clearly slower."""
        score(be, work, trial.batch_size)  # warm-up: kernels for these shapes, lazy allocations
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            scores[id(trial)] = score(be, work, trial.batch_size)
            times.append(time.perf_counter() - t)
            if best is not None and times[-1] > 1.5 * best:
                break  # clearly slower: one timing is enough
        trial.ms = min(times) * 1000

    def fastest() -> float | None:
        return min((t.ms for t in trials if t.ms is not None and t.error is None), default=None)

    # The fast precisions first, so the fp32 paths (the slowest nearly everywhere) are timed once
    # against them; the first fp32 path that builds is the reference every path must agree with.
    order = sorted(paths, key=lambda p: p[1] == "fp32")
    for kind, q in order:
        t_build = time.perf_counter()
        try:
            be = build(kind, q, threads)
        except (ExportError, ModelLoadError, BackendUnavailableError) as exc:
            last_error = exc
            trials.append(Trial(kind, q, 0, threads, error=f"does not build: {str(exc)[:160]}"))
            bar.update(1)
            continue
        built[(kind, q, threads)] = be
        bs = int(getattr(be, "preferred_batch_size", 32))
        trial = Trial(kind, q, bs, threads, name=be.name, build_s=time.perf_counter() - t_build)
        measure(be, trial, fastest())
        if reference is None and q == "fp32":
            reference, reference_name = scores[id(trial)], be.name
        trials.append(trial)
        bar.update(1)
    bar.close()
    if not built:
        assert last_error is not None
        raise last_error

    def agree(trial: Trial) -> None:
        if reference is not None and id(trial) in scores:
            got = work.per_query(scores[id(trial)])
            ref = work.per_query(reference)
            trial.agreement = float(np.mean([kendall_tau(g, r) for g, r in zip(got, ref, strict=True)]))

    def ok(t: Trial) -> bool:
        return t.ms is not None and (t.agreement is None or t.agreement >= MIN_AGREEMENT)

    for t in trials:
        agree(t)
        if t.ms is not None and not ok(t):
            t.error = f"ranks unlike fp32 (τ {t.agreement:.3f} < {MIN_AGREEMENT})"

    # Batch sizes (and the physical-core thread count on SMT CPUs) for the fastest agreeing path,
    # and for the runner-up only where it is close enough (within 15%) to overtake it.
    ranked = sorted((t for t in trials if ok(t)), key=lambda t: t.ms or 0.0)
    leaders = ranked[:1] + [t for t in ranked[1:2] if (t.ms or 0.0) <= 1.15 * (ranked[0].ms or 0.0)]
    for lead in leaders:
        be = built[(lead.backend, lead.quantize, lead.threads)]
        for bs in batch_sizes:
            if bs == lead.batch_size or bs > n_pairs:
                continue
            trial = Trial(lead.backend, lead.quantize, bs, lead.threads, name=lead.name)
            measure(be, trial, fastest())
            agree(trial)
            trial.agreement = trial.agreement if trial.agreement is not None else lead.agreement
            trials.append(trial)
        for th in thread_options[1:]:
            try:
                be2 = build(lead.backend, lead.quantize, th)
            except CrossrankError as exc:  # pragma: no cover - it built with the other count
                trials.append(Trial(lead.backend, lead.quantize, lead.batch_size, th, error=str(exc)[:160]))
                continue
            trial = Trial(lead.backend, lead.quantize, lead.batch_size, th, name=lead.name)
            measure(be2, trial, fastest())
            agree(trial)
            trials.append(trial)
    good = [t for t in trials if ok(t)]
    pick = (
        min(good, key=lambda t: t.ms or 0.0)
        if good
        else min((t for t in trials if t.ms is not None), key=lambda t: t.ms or 0.0)
    )
    return Decision(
        backend=pick.backend,
        quantize=pick.quantize,
        batch_size=pick.batch_size,
        threads=pick.threads,
        key=decision_key(info, quantize, num_threads),
        cpu=cpuinfo.describe(),
        model=info.name,
        pairs=n_pairs,
        tokens=work.tokens,
        seconds=time.perf_counter() - t_start,
        reference=reference_name,
        trials=trials,
    )
