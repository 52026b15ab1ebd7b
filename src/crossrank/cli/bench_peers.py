"""Peer methods for ``crossrank bench``: the fastest paths a user could pick instead of crossrank.

Timed in the same run as crossrank's own methods, so the table answers "why not just use X":

  st-onnx           sentence-transformers ``CrossEncoder(model, backend="onnx")`` (optimum + ONNX Runtime, fp32)
  st-onnx-int8      the same after sentence-transformers' ``export_dynamic_quantized_onnx_model``, with the
                    int8 config that matches this CPU (avx512_vnni / avx512 / avx2 / arm64)
  st-openvino       sentence-transformers ``CrossEncoder(model, backend="openvino")`` (optimum-intel)
  st-openvino-int8  the same after ``export_static_quantized_openvino_model``, calibrated on the bench
                    passages (a local dataset folder: nothing is downloaded)
  flashrank         FlashRank's ``Ranker`` over crossrank's own int8 ONNX export of the same model, fed
                    through the folder layout FlashRank expects; it scores a request as one padded batch

Every peer is an optional dependency imported lazily (the ``bench`` extra holds the installable ones).
A peer that is missing, or cannot be installed beside ``constraints.txt``, is not an error: the bench
shows its row with the reason (:func:`unavailable_reason`) instead of numbers. Exports and quantized
files are built once into crossrank's cache (``bench-peers/``), never into the model folder, so a
cold start times loading, as it does for crossrank's cached exports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import CrossrankError

Scorer = Callable[[str, list[str]], list[float]]

# Why sentence-transformers' ONNX / OpenVINO backends cannot join the pinned stack, from
# `pip install --dry-run -c constraints.txt ...` (constraints.txt pins transformers==5.24.0,
# safetensors==0.8.0, openvino==2026.4.1). pip does find an old release without an upper bound on
# transformers for each, but that release fails to import, so it is not installed.
ST_ONNX_CONFLICT = (
    "sentence-transformers[onnx] needs optimum-onnx[onnxruntime], whose every release (0.0.1-0.1.0) "
    "requires transformers<4.58.0, and optimum[onnxruntime] 1.18.0-1.27.0 cap transformers below 4.54.0, "
    "but constraints.txt pins transformers==5.24.0; the only resolvable pick, optimum 1.17.1, fails to "
    "import with it (cannot import name 'is_tf_available' from 'transformers.utils')"
)
ST_OPENVINO_CONFLICT = (
    "sentence-transformers[openvino] needs optimum-intel[openvino]>=2.0.0: 2.2.0 requires transformers<5.6 "
    "(pinned 5.24.0), 2.0.0 and 2.1.0 require safetensors<0.8.0 (pinned 0.8.0), 1.15.1-1.27.0 cap "
    "transformers below 4.58; the only resolvable pick, optimum-intel 1.15.0, fails to import against "
    "openvino 2026.4.1 (No module named 'openvino.runtime')"
)


@dataclass(frozen=True)
class Peer:
    """One peer method: what it is, the modules it imports, and how to get them.

    ``conflict`` is set when the peer cannot be installed beside ``constraints.txt`` (the reason
    shown in its row); ``None`` means ``pip install <install>`` is all it takes.
    """

    description: str
    modules: tuple[str, ...]
    install: str
    conflict: str | None = None


PEERS: dict[str, Peer] = {
    "st-onnx": Peer(
        "sentence-transformers CrossEncoder, backend='onnx' (ONNX Runtime fp32 via optimum)",
        ("optimum.onnxruntime",),
        "'sentence-transformers[onnx]'",
        ST_ONNX_CONFLICT,
    ),
    "st-onnx-int8": Peer(
        "sentence-transformers export_dynamic_quantized_onnx_model (dynamic int8, CPU-specific config)",
        ("optimum.onnxruntime",),
        "'sentence-transformers[onnx]'",
        ST_ONNX_CONFLICT,
    ),
    "st-openvino": Peer(
        "sentence-transformers CrossEncoder, backend='openvino' (optimum-intel)",
        ("optimum.intel.openvino",),
        "'sentence-transformers[openvino]'",
        ST_OPENVINO_CONFLICT,
    ),
    "st-openvino-int8": Peer(
        "sentence-transformers export_static_quantized_openvino_model (NNCF static int8, local calibration)",
        ("optimum.intel.openvino", "nncf", "datasets"),
        "'sentence-transformers[openvino]' datasets",
        ST_OPENVINO_CONFLICT,
    ),
    "flashrank": Peer(
        "FlashRank Ranker over crossrank's int8 ONNX export (one padded batch per request)",
        ("flashrank",),
        "'crossrank[bench]'",
    ),
}
PEER_METHODS: tuple[str, ...] = tuple(PEERS)


class PeerUnavailableError(CrossrankError, RuntimeError):
    """A peer method cannot run here; the message is the reason shown in its benchmark row."""


def _module_present(name: str) -> bool:
    """Whether ``name`` can be found, without importing more than its parent packages."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


def unavailable_reason(method: str) -> str | None:
    """Why peer ``method`` cannot run in this environment, or ``None`` when its modules are present.

    ``not installable: ...`` when the peer conflicts with the pinned stack, ``not installed: ...``
    when a plain ``pip install`` would do. Only looks modules up; a peer that is present but fails
    to load is reported by :func:`peer_scorer` raising instead.
    """
    peer = PEERS[method]
    missing = [m for m in peer.modules if not _module_present(m)]
    if not missing:
        return None
    if peer.conflict:
        return f"not installable: {peer.conflict}"
    return f"not installed: pip install {peer.install} (missing {', '.join(missing)})"


def peer_scorer(method: str, model: str, calibration: Callable[[], list[str]] | None = None) -> Scorer:
    """``(query, docs) -> scores`` for peer ``method``, scores in input order.

    ``calibration`` returns st-openvino-int8's calibration passages (``crossrank bench`` passes its
    workload passages), called only when the quantized model is built; without it the bundled demo
    passages are used. Raises :class:`PeerUnavailableError` (the row's reason)
    when the peer is missing; other failures of a present peer propagate.
    """
    reason = unavailable_reason(method)
    if reason:
        raise PeerUnavailableError(reason)
    from crossrank.model_files import resolve_model_dir

    model_dir = resolve_model_dir(model)
    if method == "flashrank":
        return _flashrank(model_dir)
    backend = "onnx" if method.startswith("st-onnx") else "openvino"
    if method.endswith("-int8"):
        return _st_int8(model_dir, backend, calibration)
    return _st_predict(_st_export(model_dir, backend), backend, None)


# --- sentence-transformers' ONNX / OpenVINO backends ------------------------------------------------


def _peer_dir(model_dir: Path, tag: str) -> Path:
    """Cache folder for one peer artifact of the model at ``model_dir`` (keyed by its content hash)."""
    from crossrank.backends.export import cache_root
    from crossrank.model_files import fingerprint

    return cache_root() / "bench-peers" / f"{fingerprint(model_dir)}-{tag}"


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a temporary sibling of ``target`` and move it into place, unless it exists."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        tmp.rename(target)
    except OSError:
        if not target.is_dir():  # not a concurrent build that won the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _st_export(model_dir: Path, backend: str) -> Path:
    """A model folder with sentence-transformers' own ``backend`` export, saved once.

    ``CrossEncoder(model, backend=...)`` exports on every load when the folder has no ``onnx/`` or
    ``openvino/`` files; saving it (what sentence-transformers itself advises) keeps the export out
    of the timed cold start and leaves the user's model folder untouched.
    """
    import sentence_transformers

    def build(tmp: Path) -> None:
        ce = sentence_transformers.CrossEncoder(str(model_dir), backend=backend, device="cpu")
        ce.save_pretrained(str(tmp))

    return _build_once(_peer_dir(model_dir, f"st{sentence_transformers.__version__}-{backend}"), build)


def _st_predict(folder: Path, backend: str, file_name: str | None) -> Scorer:
    """Load ``folder`` with sentence-transformers' ``backend`` (``file_name``: which export) and score like "st"."""
    from sentence_transformers import CrossEncoder

    kwargs: dict[str, Any] = {"model_kwargs": {"file_name": file_name}} if file_name else {}
    ce = CrossEncoder(str(folder), backend=backend, device="cpu", **kwargs)
    return lambda q, docs: [float(x) for x in ce.predict([(q, d) for d in docs], batch_size=32)]


def onnx_quantization_config() -> str:
    """sentence-transformers' dynamic int8 config for this CPU, from its feature flags.

    Each config picks the activation/weight types and per-channel settings that the CPU's int8
    kernels suit: VNNI dot products, plain AVX-512, AVX2 (which saturates on full-range weights), ARM.
    """
    from crossrank.cpuinfo import effective_flags

    flags = effective_flags()  # within ONEDNN_MAX_CPU_ISA / CROSSRANK_MAX_CPU_ISA, like crossrank's own choices
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    if "asimd" in flags:
        return "arm64"
    return "avx2"


def _quantized_file(folder: Path, subdir: str, pattern: str) -> str | None:
    """The quantized export in ``folder/subdir`` matching ``pattern``, relative to ``folder``."""
    found = sorted((folder / subdir).glob(pattern))
    return found[0].relative_to(folder).as_posix() if found else None


def _st_int8(model_dir: Path, backend: str, calibration: Callable[[], list[str]] | None) -> Scorer:
    """sentence-transformers' own int8 path for ``backend``: quantize the saved export once, then load it."""
    from sentence_transformers import CrossEncoder

    folder = _st_export(model_dir, backend)
    if backend == "onnx":
        config = onnx_quantization_config()
        pattern = f"model_*_{config}.onnx"
        subdir = "onnx"
    else:
        pattern = "openvino_model_qint8_quantized.xml"
        subdir = "openvino"
    file_name = _quantized_file(folder, subdir, pattern)
    if file_name is None:
        # The helpers write the quantized file next to the export in ``folder`` (our cache copy).
        ce = CrossEncoder(str(folder), backend=backend, device="cpu")
        if backend == "onnx":
            from sentence_transformers import export_dynamic_quantized_onnx_model

            export_dynamic_quantized_onnx_model(ce, config, str(folder))
        else:
            _export_openvino_int8(ce, folder, calibration)
        file_name = _quantized_file(folder, subdir, pattern)
        if file_name is None:
            raise RuntimeError(f"sentence-transformers wrote no {subdir}/{pattern} in {folder}")
    return _st_predict(folder, backend, file_name)


def _export_openvino_int8(ce: Any, folder: Path, calibration: Callable[[], list[str]] | None) -> None:
    """Static int8 via ``export_static_quantized_openvino_model``, calibrated on a local dataset folder.

    The helper's default calibration set is GLUE SST-2 from the Hub; it passes ``dataset_name`` to
    ``datasets.load_dataset``, which also takes a local folder, so a ``train.jsonl`` of bench passages
    (config ``default``, column ``text``) calibrates it with no download.
    """
    from sentence_transformers import export_static_quantized_openvino_model

    if calibration is not None:
        texts = calibration()
    else:
        from crossrank import demo_data

        texts = demo_data.passages()
    calib = folder.parent / f"{folder.name}-calibration"
    calib.mkdir(parents=True, exist_ok=True)
    with (calib / "train.jsonl").open("w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    export_static_quantized_openvino_model(
        ce,
        None,
        str(folder),
        dataset_name=str(calib),
        dataset_config_name="default",
        dataset_split="train",
        column_name="text",
    )


# --- FlashRank ----------------------------------------------------------------------------------------


def flashrank_folder(model_dir: Path) -> tuple[Path, str, str, int]:
    """Lay out crossrank's int8 ONNX export of ``model_dir`` the way FlashRank's ``Ranker`` reads it.

    FlashRank loads ``cache_dir/model_name/<file>`` with ``<file>`` from its own name -> file map,
    plus ``config.json`` (``pad_token_id``), ``tokenizer.json``, ``tokenizer_config.json``
    (``model_max_length``, ``pad_token``) and ``special_tokens_map.json``; a missing folder makes it
    download from the Hub. The export's files are linked in (external weight data stays beside the
    graph), the tokenizer files copied, and the two JSON files it needs written where the model folder
    lacks them. The export is found without loading a session (what ``Reranker(model, backend="onnx",
    quantize="int8")`` runs, as ``.engine.backend.path``) so FlashRank's peak RSS is its own.
    Returns ``(cache_dir, model_name, onnx_file_name, max_length)``; ``max_length`` is crossrank's
    truncation length, so both score the same tokens.
    """
    from crossrank.backends.export import cache_root, ensure_model_file
    from crossrank.backends.onnx_backend import int8_model_variant
    from crossrank.model_files import inspect_model

    info = inspect_model(model_dir)
    if info.kind != "cross-encoder":
        raise PeerUnavailableError(f"FlashRank scores sequence-classification cross-encoders, not {info.kind}")
    variant = int8_model_variant()
    onnx_path = ensure_model_file(info, variant)
    max_length = info.default_max_length
    name = f"crossrank-{info.fingerprint}-{variant}"
    cache_dir = cache_root() / "bench-peers" / "flashrank"

    def build(tmp: Path) -> None:
        for f in onnx_path.parent.iterdir():
            if f.is_file() and f.name != "manifest.json":
                os.symlink(f, tmp / f.name)
        for n in ("config.json", "tokenizer.json", "vocab.txt"):
            if (model_dir / n).is_file():
                shutil.copyfile(model_dir / n, tmp / n)
        tok_cfg: dict[str, Any] = {}
        if (model_dir / "tokenizer_config.json").is_file():
            tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        tok_cfg.setdefault("model_max_length", max_length)
        specials = {k: v for k, v in tok_cfg.items() if k.endswith("_token") and isinstance(v, (str, dict))}
        tok_cfg.setdefault("pad_token", specials.get("pad_token", "[PAD]"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), encoding="utf-8")
        if (model_dir / "special_tokens_map.json").is_file():
            shutil.copyfile(model_dir / "special_tokens_map.json", tmp / "special_tokens_map.json")
        else:
            (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")

    folder = cache_dir / name
    if folder.is_dir() and not (folder / onnx_path.name).exists():  # export rebuilt: stale links
        shutil.rmtree(folder)
    _build_once(folder, build)
    return cache_dir, name, onnx_path.name, max_length


def _flashrank(model_dir: Path) -> Scorer:
    """FlashRank's ``Ranker.rerank`` as a scorer: one ``RerankRequest``, scores mapped back to input order."""
    from flashrank import Ranker, RerankRequest
    from flashrank.Config import model_file_map

    cache_dir, name, onnx_name, max_length = flashrank_folder(model_dir)
    model_file_map[name] = onnx_name  # FlashRank only loads names from this map; register ours
    ranker = Ranker(model_name=name, cache_dir=str(cache_dir), max_length=max_length, log_level="WARNING")

    def score(query: str, docs: list[str]) -> list[float]:
        ranked = ranker.rerank(RerankRequest(query=query, passages=[{"id": i, "text": d} for i, d in enumerate(docs)]))
        out = [0.0] * len(docs)
        for p in ranked:
            out[int(p["id"])] = float(p["score"])
        return out

    return score
