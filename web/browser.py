"""Debian's Chromium driven by Playwright, for the browser tests and the README screenshots.

Playwright's own browser download cannot work on our machines, so both use the system
Chromium (`apt-get install -y chromium`) with the flags that keep it quiet and offline.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP_VIEWPORT: "ViewportSize" = {"width": 1280, "height": 800}
PHONE_VIEWPORT: "ViewportSize" = {"width": 390, "height": 844}


def chromium_missing_reason() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if not CHROMIUM_PATH.exists() and shutil.which("chromium") is None:
        return f"Chromium is not installed at {CHROMIUM_PATH} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -r requirements-dev.txt)"
    return None


@contextmanager
def chromium_browser() -> Iterator["Browser"]:
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM_PATH if CHROMIUM_PATH.exists() else Path(shutil.which("chromium") or CHROMIUM_PATH)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# --- driving the chat page (shared by the browser tests and the screenshots) -----------------

WAIT_MS = 20_000

# Finished replies on screen: a reply has ended when this grows and nothing is in flight.
_REPLIES_ENDED = """() => document.querySelectorAll(
    '#messages .msg.assistant:not([data-status="streaming"])').length"""
_SETTLED = """(before) => document.querySelectorAll(
        '#messages .msg.assistant:not([data-status="streaming"])').length > before
    && !document.querySelector('#messages .msg.pending, #messages .msg[data-status="streaming"]')
    && document.getElementById('stop').hidden"""


def chat_sign_in(page: "Page", *, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/")
    page.get_by_label("Username").first.fill(username)
    page.locator("#signin-password").fill(password)
    page.locator("#signin-form").get_by_role("button", name="Sign in").click()
    page.locator("#chat-view").wait_for(state="visible", timeout=WAIT_MS)


def chat_register(page: "Page", *, base_url: str, username: str, password: str, display_name: str = "") -> None:
    page.goto(base_url + "/")
    page.get_by_role("tab", name="Create account").click()
    page.locator("#register-username").fill(username)
    if display_name:
        page.locator("#register-display-name").fill(display_name)
    page.locator("#register-password").fill(password)
    page.locator("#register-form").get_by_role("button", name="Create account").click()
    page.locator("#chat-view").wait_for(state="visible", timeout=WAIT_MS)


def chat_start_with(page: "Page", *, avatar_name: str) -> int:
    """Start a conversation from the catalogue; the id of the conversation, once its socket is open."""
    page.locator("#picker").wait_for(state="visible", timeout=WAIT_MS)
    page.get_by_role("button", name=f"Chat with {avatar_name}").click()
    page.wait_for_url("**/#/c/*", timeout=WAIT_MS)
    chat_wait_connected(page)
    return int(page.url.rsplit("/", 1)[1])


def chat_wait_connected(page: "Page") -> None:
    page.locator('#connection[data-state="open"]').wait_for(state="attached", timeout=WAIT_MS)


def chat_send(page: "Page", text: str, *, wait: bool = True) -> None:
    """Type a message and press Enter; with `wait`, return once its reply has ended."""
    before = page.evaluate(_REPLIES_ENDED)
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")
    if wait:
        page.wait_for_function(_SETTLED, arg=before, timeout=WAIT_MS)
