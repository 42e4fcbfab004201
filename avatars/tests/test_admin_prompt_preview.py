"""The avatar page's system prompt preview: staff only, and exactly what the prompt builders produce."""

import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from avatars.admin import PREVIEW_FACTS, PREVIEW_NOW, PREVIEW_SUMMARY, PREVIEW_TIMEZONE, PREVIEW_USER_NAME
from avatars.models import AvatarPhrase
from llm.prompts import PromptContext, persona_from_avatar, post_history_prompt, system_prompt_for_mode
from testing.support import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db

PRE = re.compile(r'<pre data-mode="(?P<mode>[a-z_]+)">(?P<text>.*?)</pre>', re.DOTALL)


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def avatar():
    # Angle brackets, ampersands and card macros: the preview must survive HTML escaping unchanged.
    avatar = AvatarFactory(
        name="Ada <Ops> & Co",
        slug="ada",
        description="Runs {{user}}'s week. Likes <lists> & tea.",
        personality="Precise, calm, quietly funny.",
        secretary_instructions="Number every step.",
        intimate_instructions="Soften, and ask how {{user}} feels.",
        system_prompt="Never use emoji.",
        post_history_instructions="Stay brief, {{user}}.",
    )
    AvatarPhrase.objects.create(avatar=avatar, mode="intimate", text="keep me company tonight")
    return avatar


def previews_on_page(content: str) -> dict[str, str]:
    return {match["mode"]: html.unescape(match["text"]) for match in PRE.finditer(content)}


def sample_context(avatar) -> PromptContext:
    return PromptContext(
        persona=persona_from_avatar(avatar),
        user_display_name=PREVIEW_USER_NAME,
        summary=PREVIEW_SUMMARY,
        facts=PREVIEW_FACTS,
        now=PREVIEW_NOW,
        timezone_name=PREVIEW_TIMEZONE,
    )


def test_the_preview_of_each_mode_is_exactly_what_the_prompt_builders_give(staff_client, avatar):
    # Given an avatar with text that needs escaping; when staff open its page
    response = staff_client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))

    # then each mode's prompt is shown verbatim, for the sample user Sam
    assert response.status_code == 200
    previews = previews_on_page(response.content.decode())
    context = sample_context(avatar)
    assert previews == {
        "secretary": system_prompt_for_mode("secretary", context),
        "intimate": system_prompt_for_mode("intimate", context),
        "post_history": post_history_prompt(context),
    }
    assert "<user_name>Sam</user_name>" in previews["secretary"]
    assert "Number every step." in previews["secretary"]
    assert "Number every step." not in previews["intimate"]
    assert "- Sam's sister Ana has her birthday on 3 May." in previews["intimate"]
    assert "Current date and time: Tuesday 4 March 2025, 14:05 (Europe/Paris, UTC+01:00)." in previews["secretary"]


def test_the_page_keeps_the_phrase_inline_beside_the_preview(staff_client, avatar):
    response = staff_client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))

    content = response.content.decode()
    assert "keep me company tonight" in content
    assert "System prompt preview" in content
    assert "web/admin-insight.css" in content


def test_without_post_history_instructions_there_is_no_third_block(staff_client):
    avatar = AvatarFactory(post_history_instructions="")

    response = staff_client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))

    assert set(previews_on_page(response.content.decode())) == {"secretary", "intimate"}


def test_an_avatar_without_intimate_mode_says_no_conversation_gets_that_prompt(staff_client):
    avatar = AvatarFactory(intimate_allowed=False)

    response = staff_client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))

    assert "This avatar does not allow intimate mode" in response.content.decode()


def test_the_add_page_asks_to_save_first(staff_client):
    response = staff_client.get(reverse("admin:avatars_avatar_add"))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Save the avatar to see the prompt of each mode." in content
    assert "<pre data-mode=" not in content


@pytest.mark.parametrize("staff", [False, True], ids=["signed-in user", "staff without permissions"])
def test_people_who_may_not_view_avatars_never_see_a_prompt(avatar, staff):
    client = Client()
    client.force_login(UserFactory(username="mallory", is_staff=staff))

    response = client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))

    if staff:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert b"<pre data-mode=" not in response.content


def test_anonymous_visitors_are_sent_to_the_login_page(avatar):
    response = Client().get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
