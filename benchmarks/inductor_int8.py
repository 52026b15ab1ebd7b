"""Attention on AMX, the torch route: PT2E static int8 (X86InductorQuantizer) compiled by inductor.

    python benchmarks/inductor_int8.py --model ../shared/models/crossrank-minilm-l6-scifact \
        --dataset ../shared/data/beir-scifact [--variants int8-bf16,int8,bf16] [--max-autotune] \
        [--repeats 5] [--isa-trace]

The same 100 candidates × 200 tokens and the same length-sorted batches as
``benchmarks/profile_ops.py``, run side by side in one process by:

- crossrank's OpenVINO int8 graph (the row ``auto`` picks today), the reference for time;
- torch eager fp32 (``attn_implementation="sdpa"``), the reference for scores;
- each variant: ``int8-bf16`` (PT2E static int8 activations and weights, the rest under bf16
  autocast: the recipe whose GEMM micro-kernels and CPU attention run on AMX tiles where present),
  ``int8`` (the same, fp32 elsewhere), ``bf16`` (no quantization, inductor with freezing).

Each compiled variant is exported with ``torch.export``, quantized (calibrated on the corpus
pairs crossrank's own OpenVINO int8 recipe uses), lowered by ``torch.compile`` with freezing, and
warmed once per batch shape (shapes are static: a deployment would bucket lengths; the compile
time printed is what that costs). It reports the median wall time, the ratio to OpenVINO int8, the
agreement with fp32 (max |Δ| of the scores, top-10 overlap, Spearman ρ) and, with
``--isa-trace``, which oneDNN ISA executed the primitives (``avx512_core_amx`` means tiles) —
the check the issue asks for: executed kernels, not the graph.

Needs ``torchao`` (not a crossrank dependency: ``pip install torchao``; X86InductorQuantizer moved
there from ``torch.ao``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from profile_ops import headline_batches  # sibling script: one headline workload

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--variants", default="int8-bf16,int8,bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-autotune", action="store_true", help="inductor max-autotune with its CPP GEMM template")
    ap.add_argument("--isa-trace", action="store_true", help="count executed oneDNN primitives by ISA")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"int8-bf16", "int8", "bf16"}
    if unknown:
        ap.error(f"unknown variants: {sorted(unknown)}")

    if any(v.startswith("int8") for v in variants):
        try:
            import torchao  # noqa: F401
        except ImportError:
            raise SystemExit("the int8 variants need torchao (X86InductorQuantizer): pip install torchao") from None

    import torch
    from transformers import AutoModelForSequenceClassification

    from crossrank.backends import default_threads
    from crossrank.cpuinfo import describe

    torch.set_num_threads(default_threads())
    rr, enc, bs, batches = headline_batches(args.model, args.dataset, "int8")
    backend = rr.engine.backend
    real = sum(int(np.sum(b["attention_mask"])) for b in batches)
    padded = sum(int(b["attention_mask"].size) for b in batches)
    print(describe())
    print(
        f"{len(enc.ids)} candidates, batches of {bs}, {real} real tokens, {padded - real} pad tokens "
        f"({(padded - real) / padded:.1%} of the computed positions: what unpadded attention could save)"
    )

    import openvino as ov

    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": default_threads()}
    cfg["INFERENCE_PRECISION_HINT"] = "bf16"
    compiled = ov.Core().compile_model(str(backend.path), "CPU", cfg)
    req = compiled.create_infer_request()
    names = {n for p in compiled.inputs for n in p.get_names()}

    def ov_run() -> np.ndarray:
        out = [np.asarray(req.infer({k: v for k, v in b.items() if k in names})[0]).reshape(-1) for b in batches]
        return np.concatenate(out)

    feeds = [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items() if k in INPUTS} for b in batches]
    model = AutoModelForSequenceClassification.from_pretrained(str(rr.info.path), attn_implementation="sdpa").eval()

    def torch_run(fn: Callable[..., Any], autocast: bool = False) -> np.ndarray:
        out = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for f in feeds:
                res = fn(**f)
                logits = res.logits if hasattr(res, "logits") else res[0] if isinstance(res, tuple) else res
                out.append(logits.float().reshape(-1).numpy())
        return np.concatenate(out)

    rows: list[tuple[str, float, float, np.ndarray]] = []
    rows.append(("crossrank OpenVINO int8 (today's auto)", 0.0, timed(ov_run, args.repeats), ov_run()))
    rows.append(("torch eager fp32, SDPA", 0.0, timed(lambda: torch_run(model), args.repeats), torch_run(model)))

    if args.max_autotune:
        import torch._inductor.config as icfg

        icfg.max_autotune = True
        icfg.max_autotune_gemm_backends = "CPP,ATEN"
    for variant in variants:
        t0 = time.perf_counter()
        fn = compile_variant(variant, model, feeds, rr)
        bf16 = variant != "int8"
        torch_run(fn, autocast=bf16)  # compiles every batch shape once
        compile_s = time.perf_counter() - t0
        call = functools.partial(torch_run, fn, autocast=bf16)
        wall = timed(call, args.repeats)
        name = f"inductor {variant}" + (" (max-autotune)" if args.max_autotune else "")
        rows.append((name, compile_s, wall, call()))
        if args.isa_trace:
            print(f"oneDNN primitives executed by {name}, by ISA: {isa_counts(call)}")

    ref_t = rows[0][2]
    ref_s = rows[1][3]
    print()
    print("| route | compile s | ms (median) | vs OpenVINO int8 | max abs Δ vs fp32 | top-10 overlap | Spearman ρ |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, comp, wall, scores in rows:
        d = float(np.max(np.abs(scores - ref_s)))
        top = len(set(np.argsort(-scores)[:10]) & set(np.argsort(-ref_s)[:10])) / 10
        rho = spearman(scores, ref_s)
        print(f"| {name} | {comp:.0f} | {wall * 1000:.0f} | {ref_t / wall:.2f}× | {d:.3f} | {top:.1f} | {rho:.4f} |")
    return 0


def compile_variant(variant: str, model: Any, feeds: list[dict[str, Any]], rr: Any) -> Callable[..., Any]:
    """``model`` exported, quantized (unless ``bf16``) and compiled by inductor with freezing."""
    import torch
    import torch._inductor.config as icfg

    icfg.freezing = True
    if variant == "bf16":
        return torch.compile(model)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from crossrank.backends.ov_quantize import calibration_batches

    batch = torch.export.Dim("batch", min=1, max=1024)
    length = torch.export.Dim("length", min=2, max=512)
    shapes = {k: {0: batch, 1: length} for k in feeds[0]}
    with torch.no_grad():
        exported = torch.export.export(model, args=(), kwargs=feeds[-1], dynamic_shapes=shapes).module()
        quantizer = X86InductorQuantizer()
        quantizer.set_global(get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for cal in calibration_batches(rr.info, list(feeds[0])):
            prepared(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cal.items() if k in feeds[0]})
        converted = convert_pt2e(prepared)
    return torch.compile(converted)


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@contextlib.contextmanager
def captured_stdout() -> Iterator[Path]:
    """Redirect the process's fd 1 (where oneDNN's C code prints) into a temporary file."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield Path(tmp.name)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def isa_counts(fn: Callable[[], Any]) -> dict[str, int]:
    """oneDNN primitives executed by one call of ``fn``, counted by implementation (ISA) name."""
    import torch

    with captured_stdout() as log, torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        fn()
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("onednn_verbose") and ",exec," in line:
            parts = line.split(",")
            impl = next((p for p in parts if re.search(r"(brg|jit|gemm|ref|amx|avx)", p)), "?")
            counts[impl] += 1
    log.unlink()
    return dict(counts.most_common(8))


if __name__ == "__main__":
    sys.exit(main())
