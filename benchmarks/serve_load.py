"""Load-test ``crossrank serve`` on loopback against the in-process Reranker, then kill it and bring it back.

    python benchmarks/serve_load.py --model ../shared/models/crossrank-minilm-l6-scifact   # full run
    python benchmarks/serve_load.py --quick                                               # a smoke run

Phases (each bounded in requests and time; the server is a child process on 127.0.0.1):

1. Throughput and latency at 1, 8 and 64 concurrent clients × ``--candidates`` documents per
   request: requests/s, p50/p95/p99 and pairs/s over HTTP (``/v1/rerank``), next to the same
   requests through the in-process ``Reranker`` (``rerank`` for one client, ``arerank`` for many).
   HTTP overhead at one client is the p50 ratio minus one (goal: at most 10%); at 64 clients
   every request must succeed.
2. Server RSS before and after ``--rss-requests`` requests (goal: flat, within 50 MB).
3. ``kill -9`` of the server while 16 clients (crossrank's own remote backend) are sending: each
   must get a typed ``CrossrankError`` within its timeout, none may hang. Then the server is
   restarted on the same port: traffic must recover with results identical to those before.

Prints a Markdown table with the CPU model and its ISA flags; exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from crossrank import CrossrankError, Reranker
from crossrank.cpuinfo import describe

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class ServerProcess:
    """``crossrank serve`` as a child process on a fixed loopback port."""

    def __init__(self, model: str, port: int, extra: list[str]) -> None:
        self.cmd = [sys.executable, "-m", "crossrank", "serve", "--model", model, "--port", str(port)]
        self.cmd += ["--log-level", "warning", "--max-concurrent", "512", *extra]
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300) -> float:
        t = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {' '.join(self.cmd)}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not become healthy within {timeout_s:g} s")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def load_texts(dataset: Path, n: int) -> list[str]:
    corpus = dataset / "corpus.jsonl"
    if corpus.exists():
        texts = []
        with corpus.open() as f:
            for line in f:
                row = json.loads(line)
                texts.append(f"{row.get('title', '')} {row.get('text', '')}"[:600])
                if len(texts) == n:
                    break
        return texts
    words = ["aspirin", "heart", "attack", "risk", "trial", "cohort", "statin", "cholesterol", "dose", "placebo"]
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(80)) for i in range(n)]


def jobs_for(texts: list[str], count: int, candidates: int) -> list[tuple[str, list[str]]]:
    span = max(1, len(texts) - candidates)
    return [
        (f"claim {i}: {texts[(i * 13) % len(texts)][:80]}", texts[(i * 7) % span :][:candidates]) for i in range(count)
    ]


async def http_run(url: str, jobs: list[tuple[str, list[str]]], clients: int) -> tuple[list[float], float, int]:
    """Send ``jobs`` over ``clients`` concurrent connections; latencies, wall time, failures."""
    queue: asyncio.Queue[tuple[str, list[str]]] = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                q, docs = queue.get_nowait()
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/rerank", json={"query": q, "documents": docs})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t)
                failures += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, time.perf_counter() - t0, failures


async def inproc_run(rr: Reranker, jobs: list[tuple[str, list[str]]], clients: int) -> tuple[list[float], float]:
    queue: asyncio.Queue[tuple[str, list[str]]] = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            q, docs = queue.get_nowait()
            t = time.perf_counter()
            await rr.arerank(q, docs)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, time.perf_counter() - t0


def sync_run(rr: Reranker, jobs: list[tuple[str, list[str]]]) -> tuple[list[float], float]:
    latencies = []
    t0 = time.perf_counter()
    for q, docs in jobs:
        t = time.perf_counter()
        rr.rerank(q, docs)
        latencies.append(time.perf_counter() - t)
    return latencies, time.perf_counter() - t0


async def kill_under_load(
    server: ServerProcess, jobs: list[tuple[str, list[str]]], timeout_s: float
) -> tuple[int, int, float, int]:
    """16 remote-backend clients send while the server is killed: (typed errors, hung, worst s after kill, ok)."""
    rr = Reranker(server.url, remote_options={"timeout": timeout_s, "max_retries": 2, "backoff_s": 0.1})
    killed_at: list[float] = []
    typed, hung, ok, worst = 0, 0, 0, 0.0

    async def client(i: int) -> None:
        nonlocal typed, hung, ok, worst
        while True:
            q, docs = jobs[i % len(jobs)]
            try:
                await asyncio.wait_for(rr.arerank(q, docs), timeout_s + 5)
                ok += 1
                if killed_at and time.perf_counter() - killed_at[0] > timeout_s:
                    return
            except CrossrankError:
                typed += 1
                if killed_at:
                    worst = max(worst, time.perf_counter() - killed_at[0])
                return
            except asyncio.TimeoutError:
                hung += 1
                return

    async def killer() -> None:
        await asyncio.sleep(1.0)
        killed_at.append(time.perf_counter())
        await asyncio.get_running_loop().run_in_executor(None, server.kill9)

    await asyncio.gather(killer(), *(client(i) for i in range(16)))
    return typed, hung, worst, ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHARED / "models" / "crossrank-minilm-l6-scifact"))
    p.add_argument("--dataset", default=str(SHARED / "data" / "beir-scifact"))
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--clients", type=int, nargs="*", default=[1, 8, 64])
    p.add_argument(
        "--requests", type=int, default=None, help="requests per concurrency level (default 4 × clients, >= 50)"
    )
    p.add_argument("--rss-requests", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=10.0, help="the remote clients' timeout in the kill phase")
    p.add_argument("--quick", action="store_true", help="a short run that proves the script works")
    p.add_argument("--server-arg", action="append", default=[], help="extra `crossrank serve` argument (repeatable)")
    args = p.parse_args()
    if args.quick:
        args.candidates = min(args.candidates, 20)
        args.rss_requests = min(args.rss_requests, 100)
        args.timeout = min(args.timeout, 5.0)

    texts = load_texts(Path(args.dataset), 2000)
    rr = Reranker(args.model).warmup()
    server = ServerProcess(args.model, free_port(), args.server_arg)
    rows: list[tuple[str, str, str, bool]] = []
    load_s = server.start()
    try:
        reference_jobs = jobs_for(texts, 5, args.candidates)
        before = [
            httpx.post(server.url + "/v1/rerank", json={"query": q, "documents": d}).json() for q, d in reference_jobs
        ]

        for clients in args.clients:
            n = args.requests or max(50, 4 * clients)
            if args.quick:
                n = max(clients, 8)
            jobs = jobs_for(texts, n, args.candidates)
            asyncio.run(http_run(server.url, jobs[: min(4, n)], 1))  # warm the connection and the batcher
            lat, wall, failed = asyncio.run(http_run(server.url, jobs, clients))
            if clients == 1:
                base, base_wall = sync_run(rr, jobs)
            else:
                base, base_wall = asyncio.run(inproc_run(rr, jobs, clients))
            pairs = n * args.candidates
            overhead = statistics.median(lat) / statistics.median(base) - 1
            measured = (
                f"{n / wall:.1f} req/s, p50 {percentile(lat, 50) * 1000:.0f} / p95 {percentile(lat, 95) * 1000:.0f} / "
                f"p99 {percentile(lat, 99) * 1000:.0f} ms, {pairs / wall:.0f} pairs/s, {failed} failed"
            )
            inproc = (
                f"{n / base_wall:.1f} req/s, p50 {percentile(base, 50) * 1000:.0f} / p95 "
                f"{percentile(base, 95) * 1000:.0f} ms, {pairs / base_wall:.0f} pairs/s; HTTP overhead {overhead:+.0%}"
            )
            ok = failed == 0 and (clients != 1 or overhead <= 0.10)
            rows.append((f"{clients} client(s) × {args.candidates} candidates, {n} requests", measured, inproc, ok))

        # Varied list sizes and lengths, as real traffic has; RSS is read after a warm-up of a tenth
        # of the requests (caches per input shape fill there) and again at the end.
        varied = [
            (q, [d[: 80 + (i * 37) % 520] for d in docs[: 1 + i % 10]])
            for i, (q, docs) in enumerate(jobs_for(texts, 200, 10))
        ]
        stream = (varied * (args.rss_requests // len(varied) + 1))[: args.rss_requests]
        warm = max(1, len(stream) // 10)
        assert server.proc is not None
        _, _, failed0 = asyncio.run(http_run(server.url, stream[:warm], 8))
        rss0 = rss_mb(server.proc.pid)
        _, wall, failed = asyncio.run(http_run(server.url, stream[warm:], 8))
        rss1 = rss_mb(server.proc.pid)
        judged = args.rss_requests >= 1000
        rows.append(
            (
                f"server RSS over {args.rss_requests} requests (8 clients × 1-10 candidates)",
                f"{rss0:.0f} MB after {warm} → {rss1:.0f} MB ({rss1 - rss0:+.0f} MB), {failed0 + failed} failed",
                "" if judged else "too few requests to judge (--rss-requests >= 1000)",
                (rss1 - rss0 < 50 or not judged) and failed0 + failed == 0,
            )
        )

        typed, hung, worst, served = asyncio.run(
            kill_under_load(server, jobs_for(texts, 32, args.candidates), args.timeout)
        )
        rows.append(
            (
                "kill -9 under load (16 remote-backend clients)",
                f"{typed} typed errors, {hung} hung, last error {worst:.1f} s after the kill ({served} served before)",
                f"client timeout {args.timeout:g} s",
                typed == 16 and hung == 0 and worst <= args.timeout,
            )
        )
        restart_s = server.start()
        after = [
            httpx.post(server.url + "/v1/rerank", json={"query": q, "documents": d}).json() for q, d in reference_jobs
        ]
        same = [[(x["index"], round(x["relevance_score"], 6)) for x in a["results"]] for a in after] == [
            [(x["index"], round(x["relevance_score"], 6)) for x in b["results"]] for b in before
        ]
        rows.append(("restart after kill -9", f"healthy in {restart_s:.1f} s, results identical: {same}", "", same))
    finally:
        server.stop()

    print(f"CPU: {describe()} · {os.cpu_count()} logical cores")
    print(
        f"model {args.model} · backend {rr.backend_name} · server ready in {load_s:.1f} s · loopback HTTP /v1/rerank\n"
    )
    print("| check | over HTTP | in-process Reranker | ok |\n|---|---|---|---|")
    for name, measured, inproc, ok in rows:
        print(f"| {name} | {measured} | {inproc} | {'yes' if ok else 'NO'} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
