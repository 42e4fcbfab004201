"""Pictures in the browser: a catalogue portrait made as the admin makes it, a picture asked for in
words, and a forbidden one refused with the reason; llmock answers the pictures (SVG, rasterized)."""

import tempfile
from collections.abc import Iterator

import pytest

from avatars.demo import ADMIN_PASSWORD, ADMIN_USERNAME
from web.browser import WAIT_MS, chat_register, chat_send, chat_start_with
from web.tests.conftest import LIVE_ENV, PASSWORD, STREAM_CHUNK_DELAY_MS, Live

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.llmock]

PICTURE_SHOWN = """(selector) => {
    const img = document.querySelector(selector);
    return Boolean(img && img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0);
}"""


def expect(*args, **kwargs):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args, **kwargs)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """The shared live server's set-up, with the pictures kept in a directory of this module's own."""
    from testing.support import skip_or_fail
    from web.browser import chromium_missing_reason

    missing = chromium_missing_reason()
    if missing:
        skip_or_fail(missing)
    from llm.testing import llmock_server
    from testing.live_server import live_database, live_server

    with (
        tempfile.TemporaryDirectory(prefix="companion-media-") as media,
        live_database() as database,
        llmock_server(chunk_delay_ms=STREAM_CHUNK_DELAY_MS) as llm,
        live_server(
            database=database, llm_base_url=llm.base_url, extra_env={**LIVE_ENV, "MEDIA_ROOT": media}
        ) as server,
    ):
        yield Live(url=server.url, llm=llm, database_url=database.url)


def picture_calls(live: Live) -> int:
    return sum(1 for r in live.llm.requests() if str(r.get("path", "")).endswith("/images/generations"))


def test_a_catalogue_portrait_and_a_picture_in_the_chat(page, live: Live, username: str) -> None:
    # Given Ada's portrait made from the admin, with its "Make a portrait" action
    page.goto(f"{live.url}/admin/login/")
    page.locator("#id_username").fill(ADMIN_USERNAME)
    page.locator("#id_password").fill(ADMIN_PASSWORD)
    page.locator("input[type=submit]").click()
    page.goto(f"{live.url}/admin/avatars/avatar/")
    page.locator("#result_list tr", has_text="ada").locator("input.action-select").check()
    page.locator("select[name=action]").select_option("portrait_make")
    page.locator("button[name=index]").click()
    expect(page.locator(".messagelist")).to_contain_text("1 portrait(s) on the way")

    # then the catalogue shows it
    chat_register(page, base_url=live.url, username=username, password=PASSWORD)
    page.wait_for_function(PICTURE_SHOWN, arg=".avatar-card img.portrait", timeout=WAIT_MS)
    expect(page.locator(".avatar-card img.portrait")).to_have_attribute("alt", "Portrait of Ada")
    assert picture_calls(live) == 1

    # When the user asks for a picture in words
    chat_start_with(page, avatar_name="Ada")
    live.reply("Here you go, fresh from the beach.")
    chat_send(page, "send me a picture of you at the beach")

    # then it arrives a few seconds later, under a message of its own
    page.wait_for_function(PICTURE_SHOWN, arg="#messages .msg.assistant .picture img", timeout=WAIT_MS)
    assert picture_calls(live) == 2
    prompt = [r for r in live.llm.requests() if str(r.get("path", "")).endswith("/images/generations")][-1]
    assert "at the beach" in prompt["body"]["prompt"]

    # When a forbidden picture is asked for with the Picture button
    page.get_by_label("Message", exact=True).fill("you naked in the shower")
    page.locator("#picture").click()

    # then the chat says why, and no picture is asked of the provider
    refused = page.locator('#messages .msg.assistant .picture[data-status="refused"]')
    expect(refused).to_have_count(1, timeout=WAIT_MS)
    expect(refused.locator("figcaption")).to_have_text("No picture was made.")
    expect(page.locator("#messages .msg.assistant .bubble").last).to_contain_text("never sexual")
    assert picture_calls(live) == 2
