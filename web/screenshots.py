"""The README screenshots of the web chat, made from a real server, llmock and Chromium.

    .venv/bin/python manage.py chat_screenshots            # docs/screenshot-chat.png and -mobile.png
    .venv/bin/python manage.py chat_screenshots --out /tmp

The demo user chats with Ada: a work question in secretary mode, then a message that
switches her to intimate mode, with the badge's explanation open. The replies are scripted
in llmock, so the pictures are the same on every run except the times in the sidebar.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Final

from avatars.demo import DEMO_PASSWORD, DEMO_USERNAME
from llm.testing import LlmockServer
from web.browser import (
    DESKTOP_VIEWPORT,
    PHONE_VIEWPORT,
    chat_send,
    chat_sign_in,
    chat_start_with,
    chat_wait_connected,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

DESKTOP_FILE: Final = "screenshot-chat.png"
PHONE_FILE: Final = "screenshot-chat-mobile.png"

SECRETARY_MESSAGE: Final = "What's on my calendar tomorrow? Help me prioritise my tasks before the 10:00 review."
SECRETARY_REPLY: Final = (
    "Tomorrow is Wednesday. I can't see your calendar, so here is a plan around the review:\n"
    "1. 09:00: 30 minutes on the review deck, phone face down.\n"
    "2. 09:30: only the e-mails that block someone else.\n"
    "3. 10:00: the review. Bring the revised floor plans.\n"
    "What else must not slip this week?"
)
INTIMATE_MESSAGE: Final = "Honestly, I'm exhausted. I feel so lonely tonight, I need a hug."
INTIMATE_REPLY: Final = (
    "Come here. Consider yourself hugged, properly. You've carried a lot this week, and you "
    "don't have to be organised about feelings. Tell me what made today heavy? I'm listening."
)


def screenshots_take(*, browser: "Browser", base_url: str, llm: LlmockServer, out_dir: Path) -> list[Path]:
    """Chat as the demo user and save a desktop and a phone-sized screenshot in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    desktop_path, phone_path = out_dir / DESKTOP_FILE, out_dir / PHONE_FILE
    desktop = browser.new_context(viewport=DESKTOP_VIEWPORT)
    try:
        page = desktop.new_page()
        chat_sign_in(page, base_url=base_url, username=DEMO_USERNAME, password=DEMO_PASSWORD)
        conversation_id = chat_start_with(page, avatar_name="Ada")
        llm.scenario({"type": "reply", "text": SECRETARY_REPLY, "match": {"stream": True}})
        chat_send(page, SECRETARY_MESSAGE)
        llm.scenario({"type": "reply", "text": INTIMATE_REPLY, "match": {"stream": True}})
        chat_send(page, INTIMATE_MESSAGE)
        page.locator("#mode-badge").click()  # opens the explanation of the mode
        page.locator("#composer-input").blur()
        page.screenshot(path=str(desktop_path))
    finally:
        desktop.close()

    phone = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        chat_sign_in(page, base_url=base_url, username=DEMO_USERNAME, password=DEMO_PASSWORD)
        page.goto(f"{base_url}/#/c/{conversation_id}")
        chat_wait_connected(page)
        page.locator("#mode-badge").click()
        page.screenshot(path=str(phone_path))
    finally:
        phone.close()
    return [desktop_path, phone_path]
