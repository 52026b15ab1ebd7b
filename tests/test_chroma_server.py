"""Chroma server mode with a real ``chroma run`` on 127.0.0.1: works, fails fast when killed, recovers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossrank import Reranker, VectorStoreError
from crossrank.retrieval.pipeline import Pipeline

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChromaServer:
    def __init__(self, path: Path, port: int) -> None:
        self.path, self.port = path, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
        self.proc = subprocess.Popen(
            [exe, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("chroma server did not start within 60 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChromaServer]:
    srv = ChromaServer(tmp_path / "server-db", _free_port())
    srv.start()
    yield srv
    srv.stop()


def test_server_mode_kill_and_restart(
    server: ChromaServer, tmp_path: Path, embedder_path: Path, tiny: Reranker
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Ball pythons eat mice.\n\nPython is a programming language.\n\nAspirin and the heart.")
    pipe = Pipeline("srv", chroma_url=server.url, embedder=embedder_path, reranker=tiny, create=True)
    pipe.index_paths([docs], chunk_size=60, overlap=10, progress=False)
    count = pipe.count()
    assert count >= 2
    first = pipe.search("what do pythons eat", top_n=2)
    assert len(first.hits) == 2

    server.stop()
    t = time.perf_counter()
    with pytest.raises(VectorStoreError):
        pipe.search("what do pythons eat", top_n=2)
    assert time.perf_counter() - t < 15, "a dead server must fail fast, not hang"
    with pytest.raises(VectorStoreError, match="unreachable"):
        Pipeline("srv", chroma_url=server.url, embedder=embedder_path, reranker=tiny)

    server.start()
    again = Pipeline("srv", chroma_url=server.url, embedder=embedder_path, reranker=tiny)
    assert again.count() == count, "the collection survives a server kill"
    assert [h.id for h in again.search("what do pythons eat", top_n=2).hits] == [h.id for h in first.hits]
