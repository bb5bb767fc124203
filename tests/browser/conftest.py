"""Headless Chromium (Debian's, driven by Playwright) against the real stack: the
gateway served over HTTP, real databases and real worker processes.

The browser tests are skipped only where /usr/bin/chromium is missing on a
developer's machine; in CI (``CI`` set) a missing browser fails them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import REPO_ROOT, Stack, serve

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "var" / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI runs the browser tests, but {CHROMIUM} is missing (apt-get install)")
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium to run the browser tests")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def live(stack: Stack) -> Iterator[str]:
    """The gateway, UI included, over real HTTP."""
    url, stop = serve(stack.apps["gateway"])
    try:
        yield url
    finally:
        stop()


class Shots:
    """One screenshot per page visited, kept as a test artifact."""

    def __init__(self, test_name: str) -> None:
        self.folder = SCREENSHOTS / re.sub(r"[^\w.-]+", "_", test_name)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, page: Any, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)


def new_page(browser: Any, base_url: str, language: str, *, mobile: bool = False) -> Any:
    """A fresh browser context (its own cookies) showing the UI in ``language``."""
    context = browser.new_context(
        base_url=base_url,
        locale="zh-CN" if language == "zh" else "en-GB",
        viewport={"width": 390, "height": 844} if mobile else {"width": 1200, "height": 900},
    )
    context.set_default_timeout(30_000)
    return context.new_page()
