"""Debian's Chromium, headless, driven by the `playwright` package (its own browser download does
not work here), and the few page gestures the UI tests need.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from queue_assets.settings import project_root

CHROMIUM = os.environ.get("QUEUE_ASSETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
# Pages are slow to render when the machine is busy (the UI bundle is several MB of JavaScript).
PAGE_TIMEOUT_MS = 120_000
expect.set_options(timeout=PAGE_TIMEOUT_MS)  # assertions wait as long as actions do


def screenshot_dir() -> Path:
    """`docs/screenshots` (linked from docs/ui.md), or QUEUE_ASSETS_SCREENSHOT_DIR."""
    path = Path(os.environ.get("QUEUE_ASSETS_SCREENSHOT_DIR") or project_root() / "docs" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"{CHROMIUM} does not exist: install Debian's chromium "
            f"(apt-get install -y chromium; .ci/run does) or set QUEUE_ASSETS_CHROMIUM"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def failure_dir() -> Path:
    """Where a page that failed an assertion is saved (not docs/): QUEUE_ASSETS_UI_FAILURE_DIR."""
    path = Path(
        os.environ.get("QUEUE_ASSETS_UI_FAILURE_DIR") or Path(tempfile.gettempdir()) / "qa-ui-failures"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def fresh_page(browser: Browser, name: str) -> Iterator[Page]:
    """A page in a new context (no local storage carried over from another test). If the block
    fails, the page as it was is saved to `failure_dir()/<name>.png` and the path printed."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    except BaseException:
        path = failure_dir() / f"{name}.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path))
            print(f"page at failure ({page.url}): {path}")
        raise
    finally:
        context.close()


def dismiss_community_dialog(page: Page, url: str) -> None:
    """Open `url` and click "Skip" on the "Join the Dagster community" dialog a first visit shows
    (the webserver remembers it, so later pages open without it)."""
    page.goto(url, wait_until="domcontentloaded")
    expect(page.get_by_text("Join the Dagster community")).to_be_visible()
    page.get_by_role("button", name="Skip").click()
    expect(page.get_by_text("Join the Dagster community")).to_be_hidden()


def visible_text(page: Page, text: str):
    """The first visible element showing exactly `text`."""
    # Dagster renders some names twice (a hidden copy measures the width for middle-truncation).
    return page.get_by_text(re.compile(f"^{re.escape(text)}$")).filter(visible=True).first


def shown_name(page: Page, name: str):
    """The first visible element showing `name` in full, or middle-truncated ("aggregated_pa…ranked")
    with the full name as its title (what a person reads by hovering)."""
    titled = page.locator(f'[title="{name}"]') if re.fullmatch(r"[\w./\- ]+", name) else None
    shown = page.get_by_text(re.compile(f"^{re.escape(name)}$"))
    return (shown.or_(titled) if titled is not None else shown).filter(visible=True).first


def save(page: Page, name: str) -> Path:
    path = screenshot_dir() / name
    page.set_viewport_size(VIEWPORT)
    page.screenshot(path=str(path))
    return path
