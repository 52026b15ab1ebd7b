"""What CPU this is: the model name and the ISA extensions that decide which kernels are fast.

Every benchmark table prints :func:`describe` so a figure is never read without its CPU.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The extensions that matter for int8 / bf16 inference, in the order they are reported.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "sve")


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


def describe() -> str:
    """One line for benchmark tables, e.g. ``Intel(R) Xeon(R) Processor [avx2 avx512f avx512_vnni amx_int8]``."""
    flags = cpu_flags()
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "no AVX2"
    return f"{cpu_model()} [{isa}]"
