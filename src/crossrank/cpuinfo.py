"""What CPU this is, and which of its ISA extensions crossrank may use.

Every benchmark table prints :func:`describe` so a figure is never read without its CPU.

**ISA limits.** oneDNN (inside OpenVINO and torch) can be told to use no more than a given ISA
(``ONEDNN_MAX_CPU_ISA=AVX2``), which is how a wide CPU emulates a narrower one. crossrank's own
choices (the int8 build, bf16 inference, what ``auto`` tries) must then follow the same limit, or
it asks the runtime for bf16 on a "CPU" without bf16 kernels and gets slow reference code.
:func:`effective_flags` is the kernel's flag list cut down to the limit; the limit comes from
``CROSSRANK_MAX_CPU_ISA`` (crossrank only) or else ``ONEDNN_MAX_CPU_ISA`` (oneDNN and crossrank),
with oneDNN's level names. :func:`emulation_env` gives every variable that makes a whole process —
OpenVINO, torch's oneDNN and MKL, ATen's vector kernels and crossrank — behave as that ISA. ONNX
Runtime picks its kernels from the real CPU and has no such switch.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from crossrank.errors import InvalidArgumentError

# The extensions that matter for int8 / bf16 inference, in the order they are reported.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "sve")

LIMIT_VARS = ("CROSSRANK_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA")

# oneDNN's ISA levels, narrowest first, each with the flag prefixes it does NOT allow.
_WIDER_THAN_AVX2 = ("avx512", "avx_vnni", "amx", "avx10")
ISA_LEVELS: dict[str, tuple[str, ...]] = {
    "SSE41": ("avx", "fma", "amx", "f16c"),
    "AVX": ("avx2", *_WIDER_THAN_AVX2, "fma"),
    "AVX2": _WIDER_THAN_AVX2,
    "AVX2_VNNI": ("avx512", "amx", "avx10", "avx_vnni_int8"),
    "AVX2_VNNI_2": ("avx512", "amx", "avx10"),
    "AVX512_CORE": ("avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx", "avx10"),
    "AVX512_CORE_VNNI": ("avx512_bf16", "avx512_fp16", "avx_vnni", "amx", "avx10"),
    "AVX512_CORE_BF16": ("avx512_fp16", "amx", "avx10"),
    "AVX512_CORE_FP16": ("amx", "avx10"),
    "AVX512_CORE_AMX": ("amx_fp16", "avx10"),
    "AVX512_CORE_AMX_FP16": ("avx10",),
    "AVX10_1_512": ("amx",),
    "AVX10_1_512_AMX": ("amx_fp16",),
    "AVX10_1_512_AMX_FP16": (),
    "ALL": (),
    "DEFAULT": (),
}

# What each emulated level means for MKL (torch's fp32 GEMMs) and ATen's vectorised kernels.
_MKL = {"SSE41": "SSE4_2", "AVX": "AVX", "AVX2": "AVX2", "AVX2_VNNI": "AVX2", "AVX2_VNNI_2": "AVX2"}
_ATEN = {"SSE41": "default", "AVX": "default", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2"}


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    for line in _cpuinfo().splitlines():
        if line.startswith(("model name", "Model name", "Hardware")):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> frozenset[str]:
    """Every feature flag the kernel reports (x86 ``flags``, ARM ``Features``); empty where unknown."""
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def physical_cores() -> int | None:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once); None where unknown."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - macOS / Windows
        return None
    cores: set[tuple[str, str]] = set()
    cpu = phys = core = None
    for line in [*_cpuinfo().splitlines(), ""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cpu = int(value)
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not line.strip():
            if cpu is not None and cpu in allowed and core is not None:
                cores.add((phys or "0", core))
            cpu = phys = core = None
    return len(cores) or None


def isa_limit() -> tuple[str, str] | None:
    """The ISA limit in force and the variable that set it (``("AVX2", "ONEDNN_MAX_CPU_ISA")``), or None.

    An unknown level name is an ``InvalidArgumentError`` listing the known ones: a typo must not
    silently run with every extension enabled while the user believes they emulate a narrower CPU.
    """
    for var in LIMIT_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            level = value.upper()
            if level not in ISA_LEVELS:
                raise InvalidArgumentError(
                    f"{var}={value!r} is not an ISA level; use one of {', '.join(ISA_LEVELS)} (oneDNN's names)"
                )
            return None if level in ("ALL", "DEFAULT") else (level, var)
    return None


def limit_flags(flags: frozenset[str], level: str) -> frozenset[str]:
    """``flags`` without the extensions an ISA ``level`` (oneDNN's name) does not allow."""
    banned = ISA_LEVELS[level.upper()]
    return frozenset(f for f in flags if not f.startswith(banned))


def effective_flags() -> frozenset[str]:
    """The flags crossrank decides by: :func:`cpu_flags` cut down to the ISA limit, if one is set."""
    limit = isa_limit()
    flags = cpu_flags()
    return limit_flags(flags, limit[0]) if limit else flags


def has_native_bf16() -> bool:
    """bf16 matrix units (AVX-512 BF16 or AMX), within the ISA limit: where bf16 inference and training pay."""
    return bool(effective_flags() & {"avx512_bf16", "amx_bf16"})


def has_int8_dot() -> bool:
    """int8 dot-product units (AVX-512 VNNI, AVX-VNNI or AMX), within the ISA limit."""
    return bool(effective_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def isa_class() -> str:
    """The class a speed figure belongs to: ``AMX``, ``AVX-512 VNNI``, ``AVX-512``, ``AVX2`` (+VNNI), ``ARM`` ..."""
    f = effective_flags()
    if "amx_int8" in f:
        return "AMX"
    if "avx512_vnni" in f:
        return "AVX-512 VNNI"
    if "avx512f" in f:
        return "AVX-512"
    if "avx_vnni" in f:
        return "AVX2 + AVX-VNNI"
    if "avx2" in f:
        return "AVX2"
    if "asimd" in f or platform.machine().lower() in ("aarch64", "arm64"):
        return "ARM"
    return "other"


def emulation_env(level: str) -> dict[str, str]:
    """Environment variables that make a new process behave as an ISA ``level`` CPU (where runtimes allow).

    oneDNN (OpenVINO, torch) and crossrank follow ``ONEDNN_MAX_CPU_ISA``; torch's fp32 GEMMs (MKL)
    and ATen's vector kernels have their own switches, set for levels below AVX-512. ONNX Runtime
    has none: its figures under emulation are the real CPU's.
    """
    name = level.upper()
    if name not in ISA_LEVELS:
        raise InvalidArgumentError(f"unknown ISA level {level!r}; use one of {', '.join(ISA_LEVELS)}")
    env = {"ONEDNN_MAX_CPU_ISA": name, "DNNL_MAX_CPU_ISA": name}
    if name in _MKL:
        env["MKL_ENABLE_INSTRUCTIONS"] = _MKL[name]
        env["ATEN_CPU_CAPABILITY"] = _ATEN[name]
    return env


def describe() -> str:
    """One line for benchmark tables, e.g. ``Intel(R) Xeon(R) Processor [avx2 avx512f avx512_vnni amx_int8]``.

    Under an ISA limit the line says so and lists the extensions in use, e.g.
    ``... [avx2] (emulated: ONEDNN_MAX_CPU_ISA=AVX2 on a CPU with amx_int8)``.
    """
    flags = effective_flags()
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "no AVX2"
    line = f"{cpu_model()} [{isa}]"
    limit = isa_limit()
    if limit:
        real = cpu_flags()
        widest = next((f for f in reversed(ISA_FLAGS) if f in real), "none")
        line += f" (emulated: {limit[1]}={limit[0]} on a CPU with {widest})"
    return line
