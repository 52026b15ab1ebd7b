"""Cold start of an exported model folder: import, load and first score, each in a fresh process.

Runs with whichever Python it is started with — the light install's venv or the full one — so the
two installs are measured by the same script (``.ci/run`` runs it in the torch-free venv). Rows:

- ``no cached decision``: a fresh process on an empty ``CROSSRANK_CACHE_DIR``, so ``backend="auto"``
  measures the folder's CPU paths first (the quick budget of ``scoring/tuning.py``);
- ``cached decision``: fresh processes after that, reading the decision the first one saved.

Each row: seconds from the kernel starting the process to the first score returned (interpreter
start-up included; read from ``/proc``), the child's own split (import / load + first score), the
whole process's wall time as the parent saw it (exit included) and its CPU seconds (user +
system). On a shared machine CPU seconds are the steadier figure; the load average at the start
is printed with the CPU model and its ISA flags.

    python benchmarks/first_score.py --model DIR [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CHILD = """
import json, os, sys, time
t0 = time.perf_counter()
from crossrank import Reranker
t1 = time.perf_counter()
rr = Reranker(sys.argv[1])
scores = rr.score("does aspirin prevent heart attacks?", ["Low-dose aspirin lowered the incidence of myocardial "
                  "infarction in a randomized trial.", "Ball pythons are popular pet snakes."])
t2 = time.perf_counter()
try:  # seconds since the kernel started this process (interpreter start-up included), at 10 ms resolution
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    age = float(open("/proc/uptime").read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
except (OSError, ValueError, IndexError):
    age = None
print(json.dumps({"import_s": t1 - t0, "load_and_score_s": t2 - t1, "first_score_s": age, "backend": rr.backend_name,
                  "torch_loaded": "torch" in sys.modules, "scores": scores}))
"""


def run_python(code: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """``code`` in a fresh interpreter: the JSON object its last output line holds, plus the wall and
    CPU seconds (user + system) of the whole process as the parent saw them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"the child process failed:\n{out.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["wall_s"] = wall
    row["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return row


def run_child(model: str, env: dict[str, str]) -> dict[str, Any]:
    """One fresh process importing crossrank, loading ``model`` and scoring once."""
    return run_python(CHILD, [model], env)


def measure(model: str, runs: int) -> dict[str, Any]:
    """The no-decision start once, then ``runs`` starts with the decision cached."""
    with tempfile.TemporaryDirectory(prefix="crossrank-first-score-") as cache:
        env = {**os.environ, "CROSSRANK_CACHE_DIR": cache, "TOKENIZERS_PARALLELISM": "false"}
        env.pop("CROSSRANK_TUNE", None)  # the default: auto measures on a first start
        cold = run_child(model, env)
        warm = [run_child(model, env) for _ in range(runs)]
    return {"no_decision": cold, "cached": warm}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an exported folder (crossrank export)")
    p.add_argument("--runs", type=int, default=3, help="fresh processes with the decision cached (median)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from crossrank.cpuinfo import describe

    load = os.getloadavg()[0]
    res = measure(args.model, max(1, args.runs))
    cpu = describe()
    if args.json:
        print(json.dumps({"cpu": cpu, "load_average": load, "python": platform.python_version(), **res}))
        return 0
    print(f"CPU: {cpu}; load average {load:.1f} at the start; Python {platform.python_version()} ({sys.prefix})")
    print(f"model: {args.model}\n")
    print(
        "| start | backend | first score s (from process start) | import s | load + first score s "
        "| process wall s | CPU s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    cold = res["no_decision"]
    warm = res["cached"]

    def cells(rows: list[dict[str, Any]]) -> str:
        keys = ("first_score_s", "import_s", "load_and_score_s", "wall_s", "cpu_s")
        values = [[r[k] for r in rows if r.get(k) is not None] for k in keys]
        return " | ".join(f"{statistics.median(v):.2f}" if v else "–" for v in values)

    print(f"| no cached decision (measures the paths) | {cold['backend']} | {cells([cold])} |")
    print(f"| cached decision (median of {len(warm)}) | {warm[0]['backend']} | {cells(warm)} |")
    if any(r["torch_loaded"] for r in [cold, *warm]):
        print("\nnote: torch was imported while scoring the exported folder")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
