"""``crossrank bench --roofline``: how close the headline comes to this CPU's matmul throughput.

A cross-encoder's time should be in its weight matmuls (Q/K/V, attention output, the two FFN
projections of every layer): everything else (tokenization, attention scores, softmax, layer
norms, reorders, Python) is overhead. This micro-benchmark builds an OpenVINO model made of
*only* those matmuls, with the model's own sizes (``hidden_size``, ``intermediate_size``,
``num_hidden_layers`` from its ``config.json``), and runs it on the headline's token shapes (the
candidates in batches of ``batch_size`` × ``tokens``) with the compile settings crossrank's
OpenVINO backend uses:

* ``int8``: quantized by NNCF, as crossrank's int8 export is (VNNI / AMX int8 where present);
* ``bf16``: the fp32 graph with ``INFERENCE_PRECISION_HINT=bf16`` (AMX / AVX-512 BF16 only);
* ``fp32``: the same graph in f32.

The floor is the time those matmuls alone take: a headline at that time would be running at the
CPU's practical matmul throughput on these shapes. The report gives each floor in ms and in
GFLOP/s, and the measured headline as a fraction of the fastest floor (floor / headline: 1.0 would
mean no overhead at all). It follows ``ONEDNN_MAX_CPU_ISA`` like the rest of ``bench``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import InvalidArgumentError, missing_extra

PRECISIONS: tuple[str, ...] = ("int8", "bf16", "fp32")


def model_sizes(model: str | Path) -> dict[str, int]:
    """``hidden``, ``intermediate`` and ``layers`` from a model folder's ``config.json``."""
    path = Path(model) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"--roofline needs a local model folder with config.json: {path}: {exc}") from exc
    try:
        return {
            "hidden": int(cfg["hidden_size"]),
            "intermediate": int(cfg["intermediate_size"]),
            "layers": int(cfg["num_hidden_layers"]),
        }
    except KeyError as exc:
        raise InvalidArgumentError(f"{path} has no {exc.args[0]}: not an encoder config --roofline can size") from exc


def matmul_flops(sizes: dict[str, int], tokens: int) -> float:
    """FLOPs of the weight matmuls for ``tokens`` tokens (2 per multiply-add)."""
    h, i = sizes["hidden"], sizes["intermediate"]
    per_token_layer = 3 * h * h + h * h + 2 * h * i
    return 2.0 * per_token_layer * sizes["layers"] * tokens


def _graph(sizes: dict[str, int], seed: int = 0) -> Any:
    """An OpenVINO model: per layer x@Wqkv (split, summed) -> @Wo -> @W1 -> @W2, weights random."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError as exc:  # pragma: no cover - the extra is there wherever this runs
        raise missing_extra("openvino", "openvino") from exc

    rng = np.random.default_rng(seed)
    h, i = sizes["hidden"], sizes["intermediate"]

    def weight(rows: int, cols: int) -> Any:
        return ops.constant((rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32))

    x_in = ops.parameter([-1, -1, h], np.float32, name="x")
    x: Any = x_in
    for _ in range(sizes["layers"]):
        qkv = ops.matmul(x, weight(h, 3 * h), False, False)
        q, k, v = ops.split(qkv, ops.constant(np.int64(-1)), 3).outputs()
        x = ops.matmul(ops.add(ops.add(q, k), v), weight(h, h), False, False)
        x = ops.matmul(ops.relu(ops.matmul(x, weight(h, i), False, False)), weight(i, h), False, False)
    return ov.Model([x], [x_in], "matmul_floor")


def _compiled(sizes: dict[str, int], precision: str, threads: int, calibration: list[np.ndarray]) -> Any:
    import openvino as ov

    model = _graph(sizes)
    if precision == "int8":
        try:
            import nncf
        except ImportError as exc:
            raise missing_extra("nncf", "openvino") from exc
        model = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
    from crossrank.backends.openvino_backend import compile_properties

    return ov.Core().compile_model(model, "CPU", compile_properties(precision, threads))


def matmul_floor(
    model: str | Path,
    *,
    candidates: int = 100,
    tokens: int = 200,
    batch_size: int = 16,
    repeats: int = 5,
    threads: int | None = None,
    precisions: tuple[str, ...] = PRECISIONS,
) -> dict[str, dict[str, float]]:
    """Time the matmul-only graph on ``candidates`` × ``tokens`` in batches: precision -> ms, GFLOP/s.

    Precisions this CPU cannot run natively (bf16 without AMX / AVX-512 BF16) are left out.
    """
    from crossrank.backends import default_threads
    from crossrank.cpuinfo import has_native_bf16

    sizes = model_sizes(model)
    threads = threads or default_threads()
    rng = np.random.default_rng(1)
    batches = [min(batch_size, candidates - s) for s in range(0, candidates, batch_size)]
    inputs = [rng.standard_normal((b, tokens, sizes["hidden"])).astype(np.float32) for b in batches]
    flops = matmul_flops(sizes, candidates * tokens)
    out: dict[str, dict[str, float]] = {}
    for precision in precisions:
        if precision == "bf16" and not has_native_bf16():
            continue
        compiled = _compiled(sizes, precision, threads, inputs[:4])
        request = compiled.create_infer_request()
        for x in inputs:  # warm-up: kernels for every shape
            request.infer({0: x})
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for x in inputs:
                request.infer({0: x})
            times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1000
        out[precision] = {"ms": ms, "gflops": flops / (ms / 1000) / 1e9}
    return out


def roofline_table(floor: dict[str, dict[str, float]], headline: dict[str, float], shape: str) -> str:
    """Markdown: each floor, and each measured method's ms/query as a fraction of the fastest floor."""
    if not floor:
        return ""
    best = min(floor, key=lambda p: floor[p]["ms"])
    lines = [
        f"Matmul floor ({shape}: the weight matmuls alone, OpenVINO, this CPU)",
        "",
        "| matmuls only | ms | GFLOP/s |",
        "|---|---:|---:|",
        *(f"| {p} | {v['ms']:.0f} | {v['gflops']:.0f} |" for p, v in floor.items()),
    ]
    if headline:
        lines += ["", f"| method | ms/query | floor ({best}) / ms |", "|---|---:|---:|"]
        lines += [f"| {m} | {ms:.0f} | {floor[best]['ms'] / ms:.2f} |" for m, ms in headline.items()]
    return "\n".join(lines)
