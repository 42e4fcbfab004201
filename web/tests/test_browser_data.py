"""Your data in the page, in a real browser: what the avatar remembers, card import, export, erasure.

Same live server, llmock and Chromium as test_browser.py (fixtures in conftest.py); each test
registers a user of its own through the page.
"""

import json
from pathlib import Path

import httpx
import pytest

from web.browser import WAIT_MS, chat_register, chat_start_with
from web.tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.llmock]

CARDS = Path(__file__).resolve().parents[2] / "avatars" / "tests" / "cards"


def expect(*args, **kwargs):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args, **kwargs)


def facts_add(live, username: str, avatar_name: str, facts: list[tuple[str, bool]]) -> None:
    rows = ", ".join(f"({text!r}, {pinned})" for text, pinned in facts)
    live.shell(
        "from django.contrib.auth.models import User\n"
        "from avatars.models import Avatar\n"
        "from memory.models import Memory\n"
        f"user = User.objects.get(username={username!r})\n"
        f"avatar = Avatar.objects.get(name={avatar_name!r}, owner=None)\n"
        f"for i, (text, pinned) in enumerate([{rows}]):\n"
        "    Memory.objects.create(user=user, avatar=avatar, key=f'fact{i}', text=text, pinned=pinned)\n"
    )


def test_what_the_avatar_remembers_is_listed_edited_pinned_and_forgotten_in_the_page(page, live, username):
    # Given a conversation with Ada, who remembers two facts about the user
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    chat_start_with(page, avatar_name="Ada")
    facts_add(live, username, "Ada", [("Has a cat called Miso.", False), ("Works early shifts.", False)])
    api = live.api(username)
    ada = next(a for a in api.get("/avatars").json() if a["name"] == "Ada")

    # When the memories are opened from the conversation
    page.get_by_role("button", name="Memories").click()
    dialog = page.locator("#memory-dialog")
    expect(dialog.get_by_role("heading")).to_have_text("What Ada remembers")
    expect(dialog.locator(".memory-text")).to_have_count(2)
    texts = dialog.locator(".memory-text").evaluate_all("els => els.map(e => e.value)")
    assert texts == ["Has a cat called Miso.", "Works early shifts."]

    # then a fact edited in the page is changed on the server
    first = dialog.locator(".memory").first
    first.locator(".memory-text").fill("Has two cats, Miso and Tofu.")
    first.get_by_role("button", name="Save").click()
    expect(first.get_by_role("button", name="Save")).to_be_hidden()
    # ...a pinned one is pinned there
    first.get_by_role("button", name="Pin").click()
    expect(first).to_have_attribute("data-pinned", "true")
    expect(first.get_by_role("button", name="Unpin")).to_have_attribute("aria-pressed", "true")
    # ...and a forgotten one is gone, and only it
    dialog.get_by_role("button", name="Forget: Works early shifts.").click()
    expect(dialog.locator(".memory")).to_have_count(1)
    stored = [(m["text"], m["pinned"]) for m in api.get(f"/avatars/{ada['id']}/memories").json()]
    assert stored == [("Has two cats, Miso and Tofu.", True)]
    expect(dialog.locator("#memory-error")).to_be_hidden()

    # and forgetting the last one says there is nothing left
    dialog.get_by_role("button", name="Forget: Has two cats, Miso and Tofu.").click()
    expect(dialog.locator("#memory-empty")).to_have_text("Ada remembers nothing about you yet.")
    assert api.get(f"/avatars/{ada['id']}/memories").json() == []


@pytest.mark.parametrize(("card", "name"), [("orla_v3.json", "Orla"), ("wren_v2.png", "Captain Wren")])
def test_a_character_card_imported_from_the_page_becomes_an_avatar_to_talk_to(page, live, username, card, name):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    page.get_by_text("Import a character card").click()

    page.locator("#card-file").set_input_files(str(CARDS / card))
    page.get_by_role("button", name="Import and start chatting").click()

    # Then a conversation with the new avatar opens, and the avatar is the user's own
    expect(page.locator("#conversation-title")).to_have_text(name, timeout=WAIT_MS)
    own = [a for a in live.api(username).get("/avatars").json() if a["name"] == name and a["is_own"]]
    assert len(own) == 1
    expect(page.locator("#card-error")).to_be_hidden()


def test_a_file_that_is_not_a_card_is_refused_with_a_message(page, live, username, tmp_path):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    page.get_by_text("Import a character card").click()
    bogus = tmp_path / "notes.json"
    bogus.write_text('{"hello": "world"}')

    page.get_by_role("button", name="Import and start chatting").click()
    expect(page.locator("#card-error")).to_contain_text("Choose a character card first")
    page.locator("#card-file").set_input_files(str(bogus))
    page.get_by_role("button", name="Import and start chatting").click()

    expect(page.locator("#card-error")).to_contain_text("The card could not be imported")
    assert [a for a in live.api(username).get("/avatars").json() if a["is_own"]] == []


def test_download_my_data_saves_the_whole_export(page, live, username):
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    chat_start_with(page, avatar_name="Ada")
    page.get_by_role("button", name="Settings").click()

    with page.expect_download(timeout=WAIT_MS) as download_info:
        page.get_by_role("button", name="Download my data").click()

    download = download_info.value
    assert download.suggested_filename.startswith(f"companion-export-{username}-")
    document = json.loads(Path(download.path()).read_text())
    assert document["format"] == "companion.export"
    assert document["user"]["username"] == username
    assert len(document["conversations"]) == 1
    assert [m["origin"] for m in document["messages"]] == ["greeting"]
    expect(page.locator("#export-status")).to_contain_text("Downloaded")


def test_deleting_the_account_asks_the_password_confirms_signs_out_and_leaves_nothing(page, live, username):
    # Given a user with a conversation
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    chat_start_with(page, avatar_name="Ada")
    api = live.api(username)
    page.get_by_role("button", name="Settings").click()
    page.get_by_role("button", name="Delete my account").click()
    dialog = page.locator("#erase-dialog")
    submit = dialog.get_by_role("button", name="Delete my account for good")

    # When the box is not ticked, nothing can be sent; a wrong password is refused, and nothing goes
    expect(submit).to_be_disabled()
    dialog.get_by_label("Your password").fill("not-the-password")
    dialog.get_by_label("I understand that this cannot be undone.").check()
    submit.click()
    expect(dialog.locator("#erase-error")).to_have_text("That is not your password. Nothing was deleted.")
    assert api.get("/me").status_code == 200

    # When the right one is given
    dialog.get_by_label("Your password").fill(PASSWORD)
    submit.click()

    # Then the page is signed out and says so; the account, its tokens and its sign-in are gone
    expect(page.locator("#auth-view")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#info-text")).to_have_text("Your account and everything in it were deleted.")
    assert api.get("/me").status_code == 401
    answer = httpx.post(live.url + "/api/auth/token", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 401
    page.reload()
    expect(page.locator("#auth-view")).to_be_visible()
