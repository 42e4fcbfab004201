"""The chat page's rough edges found by the outside test (#18, item 8), in a real browser.

A long message is refused with a counter, never cut; a refusal reads as one sentence in one
notice, never a raw code; the session is shared by the browser's tabs; the lock is drawn,
not an emoji the font may lack.
"""

import json
import re

import pytest

from conversations.turns.request import CONTENT_MAX_CHARS
from web.browser import DESKTOP_VIEWPORT, WAIT_MS, chat_register, chat_send, chat_start_with
from web.tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.llmock]

RAW_CODE = re.compile(r"\[[a-z_]+\]|\b(adult_required|intimate_blocked|avatar_disallows|llm_[a-z_]+)\b")
VISIBLE_ALERTS = """() => [...document.querySelectorAll('[role="alert"]')]
    .filter((el) => el.offsetParent !== null && el.textContent.trim())
    .map((el) => el.id)"""


def expect(*args, **kwargs):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args, **kwargs)


def test_a_pasted_message_over_the_limit_is_kept_whole_counted_and_refused(page, live, username):
    # Given a conversation, whose page knows the server's limit
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Ada")
    assert page.locator("#app").get_attribute("data-message-max-chars") == str(CONTENT_MAX_CHARS)
    box = page.get_by_label("Message", exact=True)
    counter = page.locator("#composer-count")
    send = page.locator("#send")

    # Well under the limit there is no counter; near it, the counter shows
    box.fill("a" * (CONTENT_MAX_CHARS // 2))
    expect(counter).to_be_hidden()
    box.fill("a" * (CONTENT_MAX_CHARS - 100))
    expect(counter).to_have_text(f"{CONTENT_MAX_CHARS - 100:,} / {CONTENT_MAX_CHARS:,} characters")
    expect(send).to_be_enabled()

    # When a text 100 characters too long is pasted
    box.fill("")
    box.focus()
    page.keyboard.insert_text("b" * (CONTENT_MAX_CHARS + 100))

    # Then it is all there, counted, and refused: Send disabled, the reason in words
    assert len(box.input_value()) == CONTENT_MAX_CHARS + 100
    expect(counter).to_have_text(f"{CONTENT_MAX_CHARS + 100:,} / {CONTENT_MAX_CHARS:,} characters")
    expect(counter).to_have_class(re.compile(r"\bover\b"))
    expect(send).to_be_disabled()
    expect(page.locator("#composer-error")).to_have_text(
        f"This message is 100 characters over the limit of {CONTENT_MAX_CHARS:,}. Shorten it to send it."
    )
    # and Enter sends nothing
    box.press("Enter")
    expect(page.locator("#messages .msg.user")).to_have_count(0)
    assert len(box.input_value()) == CONTENT_MAX_CHARS + 100

    # When it is shortened to the limit, it sends, whole
    box.fill("c" * CONTENT_MAX_CHARS)
    expect(send).to_be_enabled()
    expect(page.locator("#composer-error")).to_be_hidden()
    live.reply("Quite a read.")
    chat_send(page, "c" * CONTENT_MAX_CHARS)
    api = live.api(username)
    users = [m for m in api.get(f"/conversations/{conversation_id}/messages").json()["items"] if m["role"] == "user"]
    assert [len(m["content"]) for m in users] == [CONTENT_MAX_CHARS]
    expect(counter).to_be_hidden()


def test_a_blocked_intimate_message_is_one_sentence_in_one_notice(page, live, username):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    chat_start_with(page, avatar_name="Ada")

    # When a user who has not confirmed their age writes an intimate message
    live.reply("I'm here.")
    chat_send(page, "I feel so lonely tonight, I need a hug")

    # Then one notice says why in words, and nothing on the page shows a code
    expect(page.locator("#blocked")).to_be_visible()
    assert page.evaluate(VISIBLE_ALERTS) == ["blocked"]
    assert "for adults, and you have not confirmed your age" in page.locator("#blocked-text").inner_text()
    assert not RAW_CODE.search(page.locator("body").inner_text())


def test_a_refused_mode_switch_is_one_sentence_in_the_blocked_notice(page, live, username):
    # Given an adult who opted in, chatting with their own avatar that offers no intimate mode
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    api = live.api(username)
    assert api.patch("/me", json={"adult_confirmed": True, "intimate_opt_in": True}).status_code == 200
    avatar = api.post("/avatars", json={"name": "Clerk", "personality": "Dry.", "intimate_allowed": False})
    assert avatar.status_code == 201, avatar.text
    page.reload()
    chat_start_with(page, avatar_name="Clerk")

    # When they lock intimate mode
    page.get_by_label("Mode", exact=True).select_option("intimate")

    # Then the server's refusal is one sentence in the blocked notice, without the opt-in offer
    # (there is nothing to opt into), the selector goes back, and no code shows anywhere
    expect(page.locator("#blocked-text")).to_have_text(
        "Intimate mode was blocked: this avatar does not offer intimate mode."
    )
    expect(page.locator("#blocked-optin")).to_be_hidden()
    expect(page.get_by_label("Mode", exact=True)).to_have_value("auto")
    assert page.evaluate(VISIBLE_ALERTS) == ["blocked"]
    assert not RAW_CODE.search(page.locator("body").inner_text())


def test_a_failed_reply_reads_as_a_sentence_after_a_reload(page, live, username):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Ada")
    live.llm.scenario({"type": "fail", "status": 400, "times": 20})

    chat_send(page, "Plan my week")
    page.reload()

    reply = page.locator("#messages .msg.assistant").last
    expect(reply).to_have_attribute("data-status", re.compile("failed|fallback"), timeout=WAIT_MS)
    stored = live.api(username).get(f"/conversations/{conversation_id}/messages").json()["items"][-1]
    assert stored["error_code"].startswith("llm_")
    meta = reply.locator(".meta").inner_text()
    assert not RAW_CODE.search(meta), meta
    assert "\u2014 " in meta  # a sentence follows the status


def test_the_session_is_shared_by_the_tabs_and_a_sign_out_in_one_signs_out_all(browser, live, username):
    context = browser.new_context(viewport=DESKTOP_VIEWPORT)
    try:
        first, second = context.new_page(), context.new_page()
        # Given a sign-in in the first tab
        chat_register(first, base_url=live.url, username=username, password=PASSWORD)

        # When the page is opened in a second tab, it is signed in
        second.goto(live.url + "/")
        expect(second.locator("#chat-view")).to_be_visible(timeout=WAIT_MS)
        expect(second.locator("#picker")).to_be_visible()
        stored = json.loads(second.evaluate("localStorage.getItem('companion.tokens')"))
        assert stored["refresh"] == json.loads(first.evaluate("localStorage.getItem('companion.tokens')"))["refresh"]

        # When the first tab signs out, the second is signed out too, and says why
        first.get_by_role("button", name="Sign out").click()
        expect(first.locator("#auth-view")).to_be_visible()
        expect(second.locator("#auth-view")).to_be_visible(timeout=WAIT_MS)
        expect(second.locator("#signin-error")).to_have_text("You signed out in another tab.")
        assert second.evaluate("localStorage.getItem('companion.tokens')") is None
        # and the session is over on the server, not only in the page
        assert live.api(username).get("/me").status_code == 200  # a fresh sign-in still works
        revoked = first.request.post(live.url + "/api/auth/refresh", data={"refresh": stored["refresh"]})
        assert revoked.status == 401

        # When the second tab signs in again, the first follows
        second.locator("#signin-username").fill(username)
        second.locator("#signin-password").fill(PASSWORD)
        second.locator("#signin-form").get_by_role("button", name="Sign in").click()
        expect(second.locator("#chat-view")).to_be_visible(timeout=WAIT_MS)
        expect(first.locator("#chat-view")).to_be_visible(timeout=WAIT_MS)
    finally:
        context.close()


def test_the_mode_lock_is_drawn_not_an_emoji(page, live, username):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    chat_start_with(page, avatar_name="Ada")
    badge = page.locator("#mode-badge")

    page.get_by_label("Mode", exact=True).select_option("secretary")

    expect(badge).to_have_attribute("data-locked", "true")
    lock = badge.locator("svg.icon-lock")
    expect(lock).to_be_visible()
    box = lock.bounding_box()
    assert box is not None
    assert box["width"] >= 8
    assert box["height"] >= 8
    assert "\U0001f512" not in badge.inner_text()
    assert badge.get_attribute("aria-label") == "Mode: Secretary, locked. Why?"
    # and Auto takes it away
    page.get_by_label("Mode", exact=True).select_option("auto")
    expect(lock).to_have_count(0)
