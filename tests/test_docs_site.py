"""The docs site, looked at in a real browser: built, served on loopback, driven in headless Chromium.

``mkdocs build --strict`` builds the site into a temporary folder; a static HTTP server serves it on
127.0.0.1 (a free port); Playwright drives Debian's ``chromium`` (``/usr/bin/chromium``; Playwright
downloads no browser) with a fresh profile through the main pages. Each page must render (its
title and main heading), a click on a navigation link must land on that page, a search must show
results, images must load, and no page may log a console error. Screenshots go to the test's
temporary folder and to ``$CROSSRANK_SCREENSHOTS`` when set. Without chromium the test skips
locally and fails under CI (``CI=true``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a real browser on a served site

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# (path under the site, page title as the navigation names it, main heading): the landing page, every
# guide, and the API reference.
PAGES = [
    ("", "crossrank", "crossrank"),
    ("getting-started/", "Getting started", "Getting started"),
    ("frameworks/", "Frameworks (LangChain, LlamaIndex, Chroma)", "Frameworks: LangChain and LlamaIndex, with Chroma"),
    ("pipeline-and-cli/", "Pipeline and CLI", "Pipeline and CLI"),
    ("late-interaction/", "Late interaction (ColBERT)", "Late interaction (ColBERT)"),
    ("models-and-backends/", "Models and backends", "Models and backends"),
    ("scores-and-thresholds/", "Scores and thresholds", "Scores and thresholds"),
    ("serving/", "Serving and deployment", "Serving and deployment"),
    ("light-install/", "Light install and export", "Light install and export"),
    ("llm-reranking/", "LLM reranking", "LLM reranking (optional)"),
    ("training/", "Training", "Training"),
    ("performance/", "Performance (CPU, GPU)", "Performance (CPU, GPU)"),
    ("guarantees-and-errors/", "Guarantees and errors", "Guarantees and errors"),
    ("contributing/", "Architecture and contributing", "Architecture and contributing"),
    ("reference/crossrank/", "crossrank", "crossrank"),
    ("reference/adapters/", "Adapters", "Adapters"),
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, but CI must run the browser check (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this test")
    return path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base class names it "format"
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built with ``mkdocs build --strict`` and served on 127.0.0.1: its base URL."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A persistent Chromium context on a fresh profile folder (headless, no network services)."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Any]:
    """``shoot(page, name)``: a full-page PNG into tmp_path/screenshots (and $CROSSRANK_SCREENSHOTS)."""
    folders = [tmp_path / "screenshots"]
    if os.environ.get("CROSSRANK_SCREENSHOTS"):
        folders.append(Path(os.environ["CROSSRANK_SCREENSHOTS"]))
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)

    def shoot(page: Any, name: str) -> Path:
        first = folders[0] / f"{name}.png"
        page.screenshot(path=str(first), full_page=False)
        for f in folders[1:]:
            shutil.copy(first, f / first.name)
        return first

    yield shoot
    assert list(folders[0].glob("*.png")), "no screenshot was saved"


def _watch(page: Any) -> list[str]:
    """Collect console errors and uncaught page errors of ``page``."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
    return errors


def test_main_pages_render_without_errors(site: str, browser: Any, shots: Any) -> None:
    page = browser.new_page()
    errors = _watch(page)
    for path, title, heading in PAGES:
        response = page.goto(site + path, wait_until="load")
        assert response is not None and response.status == 200, path
        assert page.title() == (title if path == "" else f"{title} - crossrank"), path
        h1 = page.locator("article h1").first
        assert h1.inner_text().strip().rstrip("¶").strip() == heading, path
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        assert not broken, f"{path}: images that did not load: {broken}"
        shots(page, (path.strip("/").replace("/", "-") or "home"))
    page.goto(site + "reference/crossrank/", wait_until="load")
    assert page.locator("article .doc-heading").count() >= 10, "the API reference rendered no objects"
    assert "Reranker" in page.locator("article").inner_text()
    page.close()
    assert not errors, "\n".join(errors)


def test_navigation_and_search(site: str, browser: Any, shots: Any) -> None:
    page = browser.new_page()
    errors = _watch(page)
    page.goto(site, wait_until="load")
    page.locator("nav.md-nav--primary a.md-nav__link", has_text="Scores and thresholds").first.click()
    page.wait_for_url("**/scores-and-thresholds/")
    assert page.locator("article h1").first.inner_text().startswith("Scores and thresholds")
    shots(page, "nav-scores-and-thresholds")

    box = page.locator("input.md-search__input")  # the header's search field (desktop width)
    box.click()
    box.press_sequentially("threshold", delay=50)  # typed as a user types: the search listens to key events
    results = page.locator(".md-search-result__item")
    results.first.wait_for(state="visible", timeout=60_000)
    assert results.count() > 0
    assert "threshold" in page.locator(".md-search-result").inner_text().lower()
    shots(page, "search-threshold")
    results.first.locator("a").first.click()
    page.wait_for_load_state("load")
    assert "threshold" in page.locator("article").inner_text().lower()
    page.close()
    assert not errors, "\n".join(errors)
