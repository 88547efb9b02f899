"""A real headless Chromium for the page tests, through Playwright (skips with its reason where there is none)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

#: Where CI and Debian put Chromium; SEGPIPE_CHROMIUM names another.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium (or Chrome) executable to drive, or None."""
    given = os.environ.get("SEGPIPE_CHROMIUM")
    if given:
        return given if os.path.isfile(given) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def open_browser() -> Iterator[Any]:
    """A launched headless browser (skips the test when Playwright or Chromium is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (it is in segpipe's [dev] extra)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set SEGPIPE_CHROMIUM): the page tests "
                    "need a real browser")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


class PageLog:
    """Console errors, uncaught exceptions and failed requests of a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
