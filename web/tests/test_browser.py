"""The chat page in a real browser: Debian's Chromium, a live server, llmock as the model.

Each test opens a fresh tab and, unless it needs the demo user's adult opt-in, registers a
user of its own through the page. Replies are scripted in llmock and streamed slowly enough
(30 ms a word) to watch them arrive and to stop them.
"""

import json
import re
import struct
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from avatars.demo import DEMO_PASSWORD, DEMO_USERNAME
from web.browser import (
    DESKTOP_VIEWPORT,
    PHONE_VIEWPORT,
    WAIT_MS,
    chat_register,
    chat_send,
    chat_sign_in,
    chat_start_with,
    chat_wait_connected,
)
from web.tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.llmock]

SHORT_REPLY = "Noted. Anything else?"
LONG_REPLY = " ".join(f"Step {n} of the plan is written down." for n in range(1, 41))  # 280 words, about 8 s
SECRETARY_MESSAGE = "What's on my calendar tomorrow? Please prioritise my tasks."
INTIMATE_MESSAGE = "I feel so lonely tonight, I need a hug"

STREAMING_TEXT = """() => {
    const bubble = document.querySelector('#messages .msg.assistant[data-status="streaming"] .bubble');
    return bubble && bubble.textContent.length > 0 ? bubble.textContent : null;
}"""


def expect(*args, **kwargs):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args, **kwargs)


def partial_reply(page) -> str:
    return page.wait_for_function(STREAMING_TEXT, timeout=WAIT_MS).json_value()


def score_text(score: float) -> str:
    # As the page writes it: one decimal, no trailing ".0".
    return f"{round(score, 1):g}"


def test_register_chat_with_a_streamed_reply_and_find_it_after_a_reload(page, live, username):
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda socket: urls.append(socket.url))

    # Given a new account made through the page
    chat_register(page, base_url=live.url, username=username, password=PASSWORD, display_name="Robin")
    expect(page.locator("#account-name")).to_have_text("Robin")
    conversation_id = chat_start_with(page, avatar_name="Ada")

    # When a message is sent with Enter
    live.reply(LONG_REPLY)
    chat_send(page, "Please draft a memo about Friday's meeting.", wait=False)

    # then the reply streams in: part of it first, with a stop button
    partial = partial_reply(page)
    assert LONG_REPLY.startswith(partial)
    assert partial != LONG_REPLY
    expect(page.locator("#stop")).to_be_visible()
    reply = page.locator("#messages .msg.assistant").last
    expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT_MS)
    expect(reply.locator(".bubble")).to_have_text(LONG_REPLY)
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_visible()

    # and the API has stored exactly what the page shows
    api = live.api(username)
    items = api.get(f"/conversations/{conversation_id}/messages").json()["items"]
    assert [(m["role"], m["status"]) for m in items] == [
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert items[1]["content"] == "Please draft a memo about Friday's meeting."
    assert items[2]["content"] == LONG_REPLY

    # When the page is reloaded, the history comes back (and the tab is still signed in)
    page.reload()
    chat_wait_connected(page)
    expect(page.locator("#messages .msg .bubble")).to_have_text([m["content"] for m in items])
    expect(page.locator(f'#conversation-list [data-conversation-id="{conversation_id}"]')).to_have_attribute(
        "aria-current", "true"
    )
    expect(page.locator("#conversation-list button.open")).to_have_count(1)

    # No token ever travelled in a URL; the socket used a one-time ticket.
    tokens = page.evaluate("JSON.parse(localStorage.getItem('companion.tokens'))")
    assert len(tokens["access"]) > 20
    assert len(tokens["refresh"]) > 20
    assert not [url for url in urls if tokens["access"] in url or tokens["refresh"] in url]
    sockets = [url for url in urls if url.startswith("ws://")]
    assert len(sockets) == 2  # one per page load
    assert all(f"/ws/conversations/{conversation_id}/?ticket=" in url for url in sockets)


def test_a_crisis_message_shows_the_crisis_card_with_988_and_the_ai_notice(page, live, username):
    # Given a new account (locale US by default) in a new conversation
    chat_register(page, base_url=live.url, username=username, password=PASSWORD, display_name="Robin")
    chat_start_with(page, avatar_name="Ada")

    # When the user says they see no point in living
    live.reply("I'm really glad you told me. You can call or text 988 right now. Are you safe?")
    chat_send(page, "i don't see the point in living anymore")

    # Then the AI notice and a calm card with the 988 line appear, then the reply
    expect(page.locator("#messages .ai-notice")).to_contain_text("AI companion, not a person")
    card = page.locator("#messages .safety-card")
    expect(card).to_be_visible()
    expect(card).to_contain_text("988 Suicide & Crisis Lifeline")
    expect(card.locator('a[href="tel:988"]')).to_have_text("988")
    expect(card).to_contain_text("If you are in immediate danger")
    reply = page.locator("#messages .msg.assistant").last
    expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT_MS)


def test_an_expired_access_token_is_refreshed_and_a_dead_session_signs_out(page, live, username):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    before = page.evaluate("JSON.parse(localStorage.getItem('companion.tokens'))")

    # Given an access token the server no longer accepts, the page refreshes the pair and carries on
    page.evaluate(
        """() => {
            const tokens = JSON.parse(localStorage.getItem('companion.tokens'));
            tokens.access = 'expired-' + tokens.access;
            localStorage.setItem('companion.tokens', JSON.stringify(tokens));
        }"""
    )
    page.reload()
    expect(page.locator("#picker")).to_be_visible()
    after = page.evaluate("JSON.parse(localStorage.getItem('companion.tokens'))")
    assert after["access"] != before["access"]
    assert after["refresh"] != before["refresh"]  # rotated

    # When the refresh token is dead too, the page asks to sign in again instead of breaking
    page.evaluate(
        """() => localStorage.setItem('companion.tokens',
            JSON.stringify({access: 'expired', refresh: 'revoked', expiresAt: 0}))"""
    )
    page.reload()
    expect(page.locator("#auth-view")).to_be_visible()
    expect(page.locator("#signin-error")).to_have_text("Your session has ended: please sign in again.")
    assert page.evaluate("localStorage.getItem('companion.tokens')") is None


def test_the_mode_badge_switches_live_and_explains_why(page, live):
    chat_sign_in(page, base_url=live.url, username=DEMO_USERNAME, password=DEMO_PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Ada")
    badge = page.locator("#mode-badge")
    expect(badge).to_have_attribute("data-mode", "secretary")

    # A clearly secretary message keeps Ada in secretary mode
    live.reply(SHORT_REPLY)
    chat_send(page, SECRETARY_MESSAGE)
    expect(badge).to_have_attribute("data-mode", "secretary")
    expect(page.locator("#messages .msg.assistant").last).to_have_attribute("data-mode", "secretary")

    # and an intimate one switches her, with the router's reason on hover
    live.reply("Come here. I'm listening.")
    chat_send(page, INTIMATE_MESSAGE)
    expect(badge).to_have_attribute("data-mode", "intimate")
    expect(page.locator("#messages .msg.assistant").last).to_have_attribute("data-mode", "intimate")
    api = live.api(DEMO_USERNAME, DEMO_PASSWORD)
    route = api.get(f"/conversations/{conversation_id}/messages").json()["items"][-2]["route"]
    assert (route["source"], route["mode"], route["switch"]) == ("intent", "intimate", True)
    title = badge.get_attribute("title")
    assert f"source: intent · matched: “{route['matched']}” · score: {score_text(route['score'])}" in title
    assert title.startswith("Switched to Intimate by the router")
    # The explanation is there for touch screens and keyboards too
    badge.click()
    expect(page.locator("#mode-why")).to_be_visible()
    expect(page.locator("#mode-why")).to_contain_text(f"matched “{route['matched']}”")

    # The manual switch locks a mode, and Auto hands it back to the router
    page.get_by_label("Mode", exact=True).select_option("secretary")
    expect(badge).to_have_attribute("data-mode", "secretary")
    expect(badge).to_have_attribute("data-locked", "true")
    assert "source: user" in badge.get_attribute("title")
    assert api.get(f"/conversations/{conversation_id}").json()["mode_locked"] is True
    page.get_by_label("Mode", exact=True).select_option("auto")
    expect(badge).to_have_attribute("data-locked", "false")
    assert api.get(f"/conversations/{conversation_id}").json()["mode_locked"] is False


def test_intimate_mode_is_blocked_until_the_user_confirms_age_and_opts_in(page, live, username):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    expect(page.locator("#optin-state")).to_have_text("off")
    chat_start_with(page, avatar_name="Ada")
    badge = page.locator("#mode-badge")

    # An intimate message from a user who has not opted in is blocked, and the page says why
    live.reply(SHORT_REPLY)
    chat_send(page, INTIMATE_MESSAGE)
    expect(page.locator("#blocked")).to_be_visible()
    expect(page.locator("#blocked-text")).to_have_text(
        re.compile(
            r"^Intimate mode was blocked \(matched “[^”]+”\): "
            r"intimate mode is for adults, and you have not confirmed your age\.$"
        )
    )
    expect(badge).to_have_attribute("data-mode", "secretary")
    assert "blocked: intimate (adult_required)" in badge.get_attribute("title")

    # Cancelling the offer changes nothing
    page.get_by_role("button", name="Turn on intimate mode").first.click()
    dialog = page.locator("#optin-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    api = live.api(username)
    me = api.get("/me").json()
    assert (me["adult_confirmed"], me["intimate_opt_in"]) == (False, False)

    # Opting in needs the explicit adult confirmation
    page.locator("#blocked-optin").click()
    confirm = dialog.get_by_role("button", name="Turn on intimate mode")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("I confirm that I am 18 or older.").check()
    confirm.click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#optin-state")).to_have_text("on")
    expect(page.locator("#blocked")).to_be_hidden()
    me = api.get("/me").json()
    assert (me["adult_confirmed"], me["intimate_opt_in"]) == (True, True)

    # and then the same message switches the mode
    live.reply("I'm here.")
    chat_send(page, INTIMATE_MESSAGE)
    expect(badge).to_have_attribute("data-mode", "intimate")


def test_stop_ends_the_reply_and_it_is_stored_as_cancelled(page, live):
    chat_sign_in(page, base_url=live.url, username=DEMO_USERNAME, password=DEMO_PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Ada")

    live.reply(LONG_REPLY)
    chat_send(page, "Write out the whole plan, step by step.", wait=False)
    partial_reply(page)
    page.get_by_role("button", name="Stop").click()

    reply = page.locator("#messages .msg.assistant").last
    expect(reply).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    expect(reply.locator(".status-label")).to_have_text("Stopped")
    expect(page.locator("#stop")).to_be_hidden()
    shown = reply.locator(".bubble").text_content()
    api = live.api(DEMO_USERNAME, DEMO_PASSWORD)
    stored = api.get(f"/conversations/{conversation_id}/messages").json()["items"][-1]
    assert (stored["role"], stored["status"]) == ("assistant", "cancelled")
    assert stored["content"] == shown
    assert LONG_REPLY.startswith(stored["content"])
    assert len(stored["content"]) < len(LONG_REPLY)


def test_a_dropped_connection_reconnects_and_resumes_the_reply_without_duplicates(page, live):
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    chat_sign_in(page, base_url=live.url, username=DEMO_USERNAME, password=DEMO_PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Milo")

    live.reply(LONG_REPLY)
    chat_send(page, "Tell me the whole plan again.", wait=False)
    partial_reply(page)
    # Record every text the reply shows and every connection state, from now on.
    page.evaluate(
        """() => {
            window.seen = {texts: [], states: []};
            const record = () => {
                const bubble = document.querySelector('#messages .msg.assistant:last-child .bubble');
                if (bubble) window.seen.texts.push(bubble.textContent);
                window.seen.states.push(document.getElementById('connection').dataset.state);
            };
            new MutationObserver(record).observe(document.getElementById('app'),
                {subtree: true, childList: true, characterData: true, attributes: true});
        }"""
    )

    page.evaluate("window.Companion.dropConnection()")

    reply = page.locator("#messages .msg.assistant").last
    expect(reply).to_have_attribute("data-status", "complete", timeout=WAIT_MS)
    expect(reply.locator(".bubble")).to_have_text(LONG_REPLY)
    seen = page.evaluate("window.seen")
    assert "reconnecting" in seen["states"]
    assert seen["states"][-1] == "open"
    assert all(LONG_REPLY.startswith(text) for text in seen["texts"])  # never a repeated token
    assert len(sockets) == 2
    expect(page.locator("#messages .msg.assistant")).to_have_count(2)  # the greeting and this reply
    api = live.api(DEMO_USERNAME, DEMO_PASSWORD)
    assert api.get(f"/conversations/{conversation_id}/messages").json()["items"][-1]["content"] == LONG_REPLY


def test_older_messages_load_page_by_page(page, live):
    chat_sign_in(page, base_url=live.url, username=DEMO_USERNAME, password=DEMO_PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Milo")
    # Given 70 more messages than the greeting, stored directly
    live.shell(
        "from conversations.models import Message\n"
        f"Message.objects.bulk_create([Message(conversation_id={conversation_id}, role='user', mode='intimate',"
        " content=f'note {n}') for n in range(1, 71)])"
    )

    page.reload()
    chat_wait_connected(page)
    bubbles = page.locator("#messages .msg .bubble")
    expect(bubbles).to_have_count(50)  # the newest page
    expect(bubbles.first).to_have_text("note 21")
    expect(bubbles.last).to_have_text("note 70")

    page.get_by_role("button", name="Load older messages").click()
    expect(bubbles).to_have_count(71)
    expect(page.locator("#messages .msg").first).to_have_attribute("data-role", "assistant")  # the greeting
    expect(bubbles.nth(1)).to_have_text("note 1")
    expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()


def test_bad_input_gets_a_clear_message_and_never_a_blank_page(page, live, username):
    # Wrong password: the API's own explanation, inline
    page.goto(live.url + "/")
    page.locator("#signin-username").fill(DEMO_USERNAME)
    page.locator("#signin-password").fill("not-the-password")
    page.locator("#signin-form").get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("Invalid username or password.")

    # A password the server refuses: the field and the reason
    page.get_by_role("tab", name="Create account").click()
    page.locator("#register-username").fill(username)
    page.locator("#register-password").fill("12345678")
    page.locator("#register-form").get_by_role("button", name="Create account").click()
    expect(page.locator("#register-error")).to_be_visible()
    expect(page.locator("#register-error")).to_contain_text("password")
    expect(page.locator("#auth-view")).to_be_visible()

    # An empty message, a missing conversation, an avatar without a name
    chat_sign_in(page, base_url=live.url, username=DEMO_USERNAME, password=DEMO_PASSWORD)
    chat_start_with(page, avatar_name="Ada")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator("#composer-error")).to_have_text("Write a message first.")
    page.goto(live.url + "/#/c/999999")
    expect(page.locator("#banner")).to_have_text("That conversation does not exist any more.")
    expect(page.locator("#picker")).to_be_visible()
    page.get_by_text("Create your own avatar").click()
    page.get_by_role("button", name="Create and start chatting").click()
    expect(page.locator("#avatar-error")).to_have_text("Give your avatar a name.")

    # and a simple avatar of one's own opens straight into a conversation
    page.get_by_label("Name", exact=True).fill("Pip")
    page.get_by_label("Personality").fill("Cheerful and curious; loves bad puns.")
    page.get_by_role("button", name="Create and start chatting").click()
    chat_wait_connected(page)
    expect(page.locator("#conversation-title")).to_have_text("Pip")


def test_the_page_fits_a_phone_screen(browser, live, username):
    context = browser.new_context(viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        chat_register(page, base_url=live.url, username=username, password=PASSWORD)
        chat_start_with(page, avatar_name="Milo")
        live.reply(SHORT_REPLY)
        chat_send(page, "Make me a to-do list for Saturday.")
        expect(page.locator("#messages .msg.assistant").last.locator(".bubble")).to_have_text(SHORT_REPLY)

        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
        for element in ("#composer-input", "#send", "#mode-badge", "#nav-toggle"):
            expect(page.locator(element)).to_be_in_viewport()
        # The conversation list slides in from the menu button
        expect(page.locator("#sidebar")).not_to_be_in_viewport()
        page.get_by_role("button", name="Conversations").click()
        expect(page.locator("#sidebar")).to_be_in_viewport()
    finally:
        context.close()


def test_the_screenshots_are_a_desktop_and_a_phone_picture(browser, live, tmp_path):
    from web.screenshots import screenshots_take

    paths = screenshots_take(browser=browser, base_url=live.url, llm=live.llm, out_dir=tmp_path)

    assert [path.name for path in paths] == ["screenshot-chat.png", "screenshot-chat-mobile.png"]
    assert [png_size(path) for path in paths] == [(1280, 800), (780, 1688)]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


# --- the secretary: reminders, tasks, actions, time zone --------------------------------------


def tomorrow_at(hour_minute: str, zone: str = "UTC") -> str:
    """Tomorrow's date in `zone` with a wall-clock time: a `due_local` that is surely ahead."""
    return (datetime.now(ZoneInfo(zone)) + timedelta(days=1)).strftime(f"%Y-%m-%dT{hour_minute}")


def time_display(due_at: str, zone: str = "UTC") -> str:
    # As the server confirms a reminder: "Tue 8 Dec 09:00".
    local = datetime.fromisoformat(due_at).astimezone(ZoneInfo(zone))
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def test_the_panel_lists_a_pending_reminder_and_cancelling_it_there_cancels_it(page, live, username):
    # Given a reminder made through the API, repeating daily
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Ada")
    api = live.api(username)
    panel = page.locator("#secretary-panel")
    expect(panel.locator("#reminders-empty")).to_be_visible()
    expect(panel.locator("#tasks-empty")).to_be_visible()
    reminder = api.post(
        "/reminders",
        json={
            "conversation_id": conversation_id,
            "text": "Water the plants",
            "due_local": tomorrow_at("09:00"),
            "recurrence": "daily",
        },
    ).json()

    # When the page is loaded again, the panel lists it: its text, its time in the user's zone, how it repeats
    page.reload()
    item = panel.locator(f'[data-reminder-id="{reminder["id"]}"]')
    expect(item.locator(".item-text")).to_have_text("Water the plants")
    expect(item.locator("time")).to_have_attribute("datetime", reminder["due_at"])
    expect(item.locator(".item-when")).to_contain_text("09:00")
    expect(item.locator(".item-when")).to_contain_text("every day")
    expect(panel.locator("#reminders-zone")).to_have_text("Times in UTC.")
    expect(panel.locator("#reminders-empty")).to_be_hidden()

    # and Cancel in the page cancels it on the server, and only it
    page.get_by_role("button", name="Cancel reminder: Water the plants").click()
    expect(item).to_have_count(0)
    expect(panel.locator("#reminders-empty")).to_be_visible()
    assert api.get(f"/reminders/{reminder['id']}").json()["status"] == "cancelled"
    assert [r["id"] for r in api.get("/reminders").json()] == [reminder["id"]]  # no second row
    expect(page.locator("#secretary-error")).to_be_hidden()


def test_ticking_a_task_off_in_the_panel_marks_it_done_and_delete_removes_it(page, live, username):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    api = live.api(username)
    milk = api.post("/tasks", json={"title": "Buy milk"}).json()
    post = api.post("/tasks", json={"title": "Post the letter"}).json()
    page.reload()
    tasks = page.locator("#task-list")
    expect(tasks.locator(".item-text")).to_have_text(["Buy milk", "Post the letter"])

    # When "Buy milk" is ticked off
    page.get_by_role("checkbox", name="Buy milk").check()

    # Then it is done on the server, and shown struck through; the other stays open
    expect(tasks.locator(f'[data-task-id="{milk["id"]}"]')).to_have_attribute("data-done", "true")
    done = {t["id"]: t["done"] for t in api.get("/tasks").json()}
    assert done == {milk["id"]: True, post["id"]: False}

    # and Delete removes the other one; a task added in the page lands on the server
    page.get_by_role("button", name="Delete task: Post the letter").click()
    expect(tasks.locator(f'[data-task-id="{post["id"]}"]')).to_have_count(0)
    page.get_by_label("New task").fill("Call the plumber")
    page.get_by_label("New task").press("Enter")
    expect(tasks.locator(".item-text")).to_have_text(["Call the plumber", "Buy milk"])
    assert sorted(t["title"] for t in api.get("/tasks").json()) == ["Buy milk", "Call the plumber"]


def test_what_the_secretary_did_shows_in_its_reply_and_the_panel_follows(page, live, username):
    # Given Ada in secretary mode, and a model that sets one reminder and tries one in the past
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    conversation_id = chat_start_with(page, avatar_name="Ada")
    expect(page.locator("#mode-badge")).to_have_attribute("data-mode", "secretary")
    live.llm.scenario(
        {
            "type": "reply",
            "tool_calls": [
                {"name": "reminder_create", "arguments": {"text": "Stretch", "due_local": tomorrow_at("09:00")}},
                {"name": "reminder_create", "arguments": {"text": "Yesterday", "due_local": "2001-01-01T09:00"}},
            ],
            "match": {"tools": True},
        }
    )
    live.reply("Done: I'll remind you to stretch tomorrow at 9.")

    # When the user asks
    chat_send(page, "Remind me to stretch tomorrow at 9am please")

    # Then the reply carries one line per action: the confirmation, and the refusal with its reason
    reply = page.locator("#messages .msg.assistant").last
    api = live.api(username)
    (reminder,) = api.get("/reminders").json()
    assert (reminder["text"], reminder["conversation_id"]) == ("Stretch", conversation_id)
    expect(reply.locator(".action")).to_have_text(
        [
            f"✓ Reminder set for {time_display(reminder['due_at'])}",
            "✗ Could not set the reminder: That time has already passed. Ask the user for a time in the future.",
        ]
    )
    # the marks are said in words too
    expect(reply.locator(".action").first).to_have_attribute("aria-label", re.compile(r"^Done: Reminder set for "))
    expect(reply.locator(".action").last).to_have_attribute(
        "aria-label", re.compile(r"^Failed: Could not set the reminder: ")
    )
    expect(reply.locator(".bubble")).to_have_text("Done: I'll remind you to stretch tomorrow at 9.")
    # and the panel lists the new reminder without a reload
    expect(page.locator(f'#reminder-list [data-reminder-id="{reminder["id"]}"] .item-text')).to_have_text("Stretch")
    # and the lines are still there when the page is opened again
    page.reload()
    expect(page.locator("#messages .msg.assistant").last.locator(".action")).to_have_count(2)


def due_this_minute() -> str:
    """This minute in UTC (the profile's zone): due at once, within the server's minute of grace."""
    now = datetime.now(ZoneInfo("UTC"))
    if now.second > 45:
        time.sleep(61 - now.second)
        now = datetime.now(ZoneInfo("UTC"))
    return now.strftime("%Y-%m-%dT%H:%M")


def test_a_reminder_falling_due_arrives_labelled_counts_as_unread_elsewhere_and_leaves_the_panel(page, live, username):
    # Given two conversations, the page on the second, and a reminder in the first falling due now
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    first = chat_start_with(page, avatar_name="Ada")
    page.goto(f"{live.url}/#/")
    second = chat_start_with(page, avatar_name="Ada")
    assert first != second
    api = live.api(username)
    created = api.post("/reminders", json={"conversation_id": first, "text": "Stretch", "due_local": due_this_minute()})
    assert created.status_code == 201, created.text

    # When the server's scheduler delivers it, and the user comes back to the window
    deadline = time.monotonic() + 20
    while not api.get("/reminders?status=sent").json():
        assert time.monotonic() < deadline, "the reminder was not delivered within 20 s"
        time.sleep(0.2)
    page.evaluate("window.dispatchEvent(new Event('focus'))")

    # Then the first conversation shows one unread message in the list
    badge = page.locator(f'#conversation-list button[data-conversation-id="{first}"] .unread')
    expect(badge).to_have_text("1")
    expect(page.locator("#reminder-list .item")).to_have_count(0)
    # and opening it shows the avatar's reminder, labelled, and clears the count
    page.locator(f'#conversation-list button[data-conversation-id="{first}"]').click()
    reminder_bubble = page.locator('#messages .msg.assistant[data-origin="reminder"]')
    expect(reminder_bubble).to_have_count(1)
    expect(reminder_bubble.locator(".origin-label")).to_have_text("Reminder")
    expect(reminder_bubble.locator(".origin-label svg.icon-clock")).to_be_visible()  # drawn, not an emoji
    expect(badge).to_have_count(0)
    # (the page marks it read with a request of its own, a moment after it shows it)
    deadline = time.monotonic() + 10
    while next(c for c in api.get("/conversations").json() if c["id"] == first)["unread"] != 0:
        assert time.monotonic() < deadline, "opening the conversation did not mark it read"
        time.sleep(0.1)
    (sent,) = api.get("/reminders?status=sent").json()
    assert sent["id"] == created.json()["id"]


def test_the_browsers_time_zone_is_saved_once_on_the_first_visit(browser, live, username):
    context = browser.new_context(viewport=DESKTOP_VIEWPORT, timezone_id="America/New_York")
    page = context.new_page()
    patches: list[str] = []
    page.on(
        "request",
        lambda r: patches.append(r.post_data or "") if r.method == "PATCH" and r.url.endswith("/api/me") else None,
    )
    try:
        # Given a new account (its profile on the default UTC) in a New York browser
        chat_register(page, base_url=live.url, username=username, password=PASSWORD)

        # Then the profile takes the browser's zone, and the page says so
        expect(page.locator("#info")).to_contain_text("Your time zone is now America/New_York")
        api = live.api(username)
        assert api.get("/me").json()["timezone"] == "America/New_York"
        expect(page.locator("#reminders-zone")).to_have_text("Times in America/New_York.")

        # When the user sets UTC back by hand in Settings, with quiet hours and check-ins
        page.get_by_role("button", name="Settings", exact=True).click()
        dialog = page.locator("#settings-dialog")
        expect(dialog.get_by_label("Time zone")).to_have_value("America/New_York")
        dialog.get_by_label("Time zone").fill("Mars/Olympus")
        dialog.get_by_role("button", name="Save").click()
        expect(page.locator("#settings-error")).to_contain_text("Unknown time zone 'Mars/Olympus'")
        dialog.get_by_label("Time zone").fill("UTC")
        dialog.get_by_label("No messages I did not ask for at night").check()
        dialog.get_by_label("From").fill("21:30")
        dialog.get_by_label("until").fill("07:15")
        dialog.get_by_label("Let avatars check in first after a silence").check()
        dialog.get_by_role("button", name="Save").click()
        expect(dialog).to_be_hidden()
        me = api.get("/me").json()
        assert (me["timezone"], me["quiet_hours"], me["proactive_opt_in"]) == (
            "UTC",
            {"start": "21:30", "end": "07:15"},
            True,
        )

        # then a later visit leaves the zone the user chose
        page.reload()
        expect(page.locator("#reminders-zone")).to_have_text("Times in UTC.")
        assert api.get("/me").json()["timezone"] == "UTC"
        assert len(patches) == 3  # the first visit's, the refused one, the saved settings
        assert '"timezone":"America/New_York"' in patches[0].replace(" ", "")
    finally:
        context.close()


def test_swipe_between_replies_edit_fork_rename_search_and_delete(page, live, username):
    # Given a conversation with one exchange
    chat_register(page, base_url=live.url, username=username, password=PASSWORD, display_name="Robin")
    conversation_id = chat_start_with(page, avatar_name="Ada")
    live.reply("Blue is calm.")
    chat_send(page, "Pick a colour for the kitchen")
    replies = page.locator("#messages .msg.assistant")
    last_reply = replies.last
    expect(last_reply.locator(".bubble")).to_have_text("Blue is calm.")

    # When the user asks for another reply, it replaces the first on screen, with arrows between them
    live.reply("Green feels fresh.")
    last_reply.get_by_role("button", name="Write another reply").click()
    expect(last_reply.locator(".bubble")).to_have_text("Green feels fresh.", timeout=WAIT_MS)
    expect(last_reply).to_have_attribute("data-status", "complete", timeout=WAIT_MS)
    expect(last_reply.locator(".alt-count")).to_have_text("2/2")
    last_reply.get_by_role("button", name="Previous reply").click()
    expect(replies.last.locator(".bubble")).to_have_text("Blue is calm.", timeout=WAIT_MS)
    expect(replies.last.locator(".alt-count")).to_have_text("1/2")
    api = live.api(username)
    items = api.get(f"/conversations/{conversation_id}/messages").json()["items"]
    assert [m["content"] for m in items][-2:] == ["Pick a colour for the kitchen", "Blue is calm."]

    # When the user edits their last message, it is answered again
    live.reply("Then yellow.")
    page.once("dialog", lambda dialog: dialog.accept("Pick a colour for the bathroom"))
    page.locator("#messages .msg.user").last.get_by_role("button", name="Edit your last message").click()
    expect(page.locator("#messages .msg.user").last.locator(".bubble")).to_have_text(
        "Pick a colour for the bathroom", timeout=WAIT_MS
    )
    expect(replies.last.locator(".bubble")).to_have_text("Then yellow.", timeout=WAIT_MS)
    expect(replies.last).to_have_attribute("data-status", "complete", timeout=WAIT_MS)

    # When the user renames the conversation, then forks it at their message
    page.once("dialog", lambda dialog: dialog.accept("Home colours"))
    page.get_by_role("button", name=re.compile(r"^Rename ")).first.click()
    expect(page.locator("#conversation-title")).to_have_text("Home colours")
    page.locator("#messages .msg.user").last.get_by_role("button", name="Start a new conversation from here").click()
    expect(page.locator("#conversation-title")).to_have_text("Home colours (fork)", timeout=WAIT_MS)
    expect(page.locator("#messages .msg .bubble").last).to_have_text("Pick a colour for the bathroom")
    expect(page.locator("#conversation-list button.open")).to_have_count(2)

    # Then search finds conversations by their text, and delete removes one
    page.get_by_label("Search conversations by title and text").fill("yellow")
    expect(page.locator("#conversation-list button.open")).to_have_count(1)
    expect(page.locator("#conversation-list button.open .name")).to_have_text("Home colours")
    page.get_by_label("Search conversations by title and text").fill("")
    expect(page.locator("#conversation-list button.open")).to_have_count(2)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Home colours (fork)").click()
    expect(page.locator("#conversation-list button.open")).to_have_count(1)
    assert [c["title"] for c in api.get("/conversations").json()] == ["Home colours"]


def test_the_model_picker_lists_the_models_and_sends_the_chosen_one_with_each_message(page, live, username):
    # Given a user in a chat, on a server offering two models (LIVE_ENV's LLM_MODELS), whose
    # socket frames the page records as it sends them
    page.add_init_script(
        "window.__sent = []; const send = WebSocket.prototype.send;"
        "WebSocket.prototype.send = function (data) {"
        " window.__sent.push(String(data)); return send.call(this, data); };"
    )
    chat_register(page, base_url=live.url, username=username, password=PASSWORD, display_name="Kim")
    conversation_id = chat_start_with(page, avatar_name="Ada")

    # Then the picker shows them, with the server's default marked
    picker = page.get_by_label("Model", exact=True)
    expect(picker).to_be_visible()
    expect(picker.locator("option")).to_have_text(["Default model", "GPT-4o mini (default)", "Claude Haiku"])

    # When the user picks Claude and sends two messages
    picker.select_option("claude-haiku-4-5")
    for text in ("Hello there", "And again"):
        live.reply(SHORT_REPLY)
        chat_send(page, text)

    # Then each message frame named the model, the model server was asked for it, and each reply has a cost
    sent = [json.loads(frame) for frame in page.evaluate("window.__sent")]
    assert [(f["content"], f.get("model")) for f in sent if f["type"] == "message"] == [
        ("Hello there", "claude-haiku-4-5"),
        ("And again", "claude-haiku-4-5"),
    ]
    streamed = [r for r in live.llm.requests() if r["body"].get("stream")]
    assert [r["body"]["model"] for r in streamed] == ["claude-haiku-4-5", "claude-haiku-4-5"]
    items = live.api(username).get(f"/conversations/{conversation_id}/messages").json()["items"]
    replies = [m for m in items if m["role"] == "assistant" and m["reply_to"]]
    assert len(replies) == 2
    assert all(m["cost_usd"] is not None and float(m["cost_usd"]) > 0 for m in replies)
