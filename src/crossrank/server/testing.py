"""Run an ASGI app on a real loopback port in a background thread, for tests and examples.

Clients under test (the Cohere SDK, LangChain, LlamaIndex, infinity-client) talk real HTTP, so the
server must listen on a real socket; a thread keeps it in the test's process (no stray server
if the test dies) and the port is bound before the thread starts, so there is no race for it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from crossrank.errors import missing_extra


@contextlib.contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", wait_ready: str | None = "/health", timeout_s: float = 60.0
) -> Iterator[str]:
    """Serve ``app`` on a free loopback port until the block exits; yields the base URL.

    With ``wait_ready`` the block starts only once that path answers 200 (the model is loaded).
    On exit the server shuts down gracefully: requests in flight finish first.
    """
    try:
        import httpx
        import uvicorn
    except ImportError as exc:
        raise missing_extra("uvicorn", "server") from exc
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="crossrank-test-server", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server on {url} did not start")
            time.sleep(0.02)
        if wait_ready is not None:
            while True:
                try:
                    if httpx.get(url + wait_ready, timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url}{wait_ready} did not answer 200 within {timeout_s:g} s")
                time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
