"""The Avatar admin: pages render for staff, are refused to others, and card import works."""

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from avatars.admin import AvatarAdmin
from avatars.models import Avatar, AvatarPhrase
from avatars.tests.factories import png_bytes
from conversations.intents import PhraseBank
from conversations.selectors import avatar_for_turn
from testing.support import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:avatars_avatar_changelist")
ADD = reverse("admin:avatars_avatar_add")
IMPORT = reverse("admin:avatars_avatar_import_card")


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def avatar():
    avatar = AvatarFactory(
        name="Ada",
        slug="ada",
        tags=["work", "calm"],
        alternate_greetings=["Morning.\nCoffee first.", "Back again?"],
    )
    AvatarPhrase.objects.create(avatar=avatar, mode="secretary", text="clear my calendar")
    return avatar


def test_the_model_admin_keeps_its_name():
    assert AvatarAdmin.__name__ == "AvatarAdmin"


def test_changelist_renders_with_the_import_button(staff_client, avatar):
    response = staff_client.get(CHANGELIST)

    assert response.status_code == 200
    content = response.content.decode()
    assert "Ada" in content
    assert f'href="{IMPORT}"' in content
    assert "Import character card" in content


@pytest.mark.parametrize(
    "query",
    [
        {"q": "calm"},
        {"q": "ada"},
        {"is_public__exact": "1"},
        {"owner__isempty": "1"},
        {"default_mode__exact": "secretary"},
    ],
)
def test_changelist_search_and_filters(staff_client, avatar, query):
    AvatarFactory(name="Other", slug="other", owner=UserFactory(), is_public=False, default_mode="intimate")

    response = staff_client.get(CHANGELIST, query)

    assert response.status_code == 200
    assert [a.slug for a in response.context["cl"].result_list] == ["ada"]


def test_change_form_renders_lists_as_text_and_the_phrase_inline(staff_client, avatar):
    response = staff_client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form["tags"].value() == "work\ncalm"
    assert form["alternate_greetings"].value() == "Morning.\nCoffee first.\n---\nBack again?"
    content = response.content.decode()
    assert "clear my calendar" in content
    for fieldset in ["Identity", "Personality", "Greetings", "Modes", "Fallbacks", "Card / advanced"]:
        assert fieldset in content


def test_add_form_renders(staff_client):
    assert staff_client.get(ADD).status_code == 200


def change_form_data(avatar: Avatar, **overrides: str) -> dict[str, str]:
    data = {
        "name": avatar.name,
        "slug": avatar.slug,
        "tagline": "",
        "owner": "",
        "is_public": "on",
        "tags": "work\ncalm",
        "description": "",
        "personality": avatar.personality,
        "scenario": avatar.scenario,
        "example_dialogue": "",
        "first_message": avatar.first_message,
        "alternate_greetings": "",
        "default_mode": "secretary",
        "intimate_allowed": "on",
        "secretary_instructions": "",
        "intimate_instructions": "",
        "fallback_lines": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "creator": "",
        "creator_notes": "",
        "character_version": "",
        "card_extensions": "{}",
        "proactive_enabled": "on",
        "proactive_after_hours": "24",
        "proactive_max_per_day": "1",
        "phrases-TOTAL_FORMS": "0",
        "phrases-INITIAL_FORMS": "0",
        "phrases-MIN_NUM_FORMS": "0",
        "phrases-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_saving_the_change_form_turns_text_into_json_lists(staff_client, avatar):
    AvatarPhrase.objects.all().delete()
    data = change_form_data(
        avatar,
        tags="work\n\n  Calm \ncalm\n",
        alternate_greetings="Hello there.\nSecond line.\r\n---\r\nHi!\n---\n\n",
        fallback_lines="One moment.\n  Back soon.  \n",
    )

    response = staff_client.post(reverse("admin:avatars_avatar_change", args=[avatar.pk]), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    avatar.refresh_from_db()
    assert avatar.tags == ["work", "Calm"]
    assert avatar.alternate_greetings == ["Hello there.\nSecond line.", "Hi!"]
    assert avatar.fallback_lines == ["One moment.", "Back soon."]


def test_the_change_form_enforces_list_limits(staff_client, avatar):
    data = change_form_data(avatar, tags="\n".join(f"t{i}" for i in range(31)))

    response = staff_client.post(reverse("admin:avatars_avatar_change", args=[avatar.pk]), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["tags"] == ["At most 30 items (got 31)."]
    avatar.refresh_from_db()
    assert avatar.tags == ["work", "calm"]


def test_card_extensions_must_be_a_json_object(staff_client, avatar):
    data = change_form_data(avatar, card_extensions="[1, 2]")

    response = staff_client.post(reverse("admin:avatars_avatar_change", args=[avatar.pk]), data)

    assert response.context["adminform"].form.errors["card_extensions"] == [
        "Card extensions must be a JSON object ({...})."
    ]
    avatar.refresh_from_db()
    assert avatar.card_extensions == {}


def test_an_avatar_without_owner_must_be_public(staff_client, avatar):
    data = change_form_data(avatar)
    del data["is_public"]

    response = staff_client.post(reverse("admin:avatars_avatar_change", args=[avatar.pk]), data)

    assert response.status_code == 200
    assert "is_public" in response.context["adminform"].form.errors
    avatar.refresh_from_db()
    assert avatar.is_public is True


def test_import_view_renders(staff_client):
    response = staff_client.get(IMPORT)

    assert response.status_code == 200
    assert "Import character card" in response.content.decode()


def test_import_view_creates_a_catalogue_avatar(staff_client, card_bytes):
    card = SimpleUploadedFile("wren.png", card_bytes("wren_v2.png"), content_type="image/png")

    response = staff_client.post(IMPORT, {"file": card, "catalogue": "on"})

    avatar = Avatar.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:avatars_avatar_change", args=[avatar.pk])
    assert (avatar.name, avatar.owner, avatar.is_public) == ("Captain Wren", None, True)
    assert avatar.image.name == "avatars/captain-wren.png"


def test_import_view_can_create_a_private_avatar_of_the_staff_user(staff_client, card_bytes):
    card = SimpleUploadedFile("bramble.json", card_bytes("bramble_v1.json"), content_type="application/json")

    staff_client.post(IMPORT, {"file": card})

    avatar = Avatar.objects.get()
    assert (avatar.owner, avatar.is_public) == (User.objects.get(username="root"), False)


def test_import_view_shows_card_errors_on_the_form(staff_client):
    card = SimpleUploadedFile("pic.png", png_bytes(chunks={"Comment": "no card"}), content_type="image/png")

    response = staff_client.post(IMPORT, {"file": card, "catalogue": "on"})

    assert response.status_code == 200
    assert response.context["form"].errors["file"] == [
        "The PNG carries no character card (no `ccv3` or `chara` text chunk). (png_no_card_chunk)"
    ]
    assert Avatar.objects.count() == 0


def test_import_view_refuses_an_oversized_card(staff_client, settings):
    settings.CARD_MAX_BYTES = 100
    card = SimpleUploadedFile("big.json", b"{" + b" " * 200 + b"}", content_type="application/json")

    response = staff_client.post(IMPORT, {"file": card})

    assert response.context["form"].errors["file"] == [
        "The card is 202 bytes; the limit is 100 bytes. (card_too_large)"
    ]
    assert Avatar.objects.count() == 0


@pytest.mark.parametrize("url", [CHANGELIST, ADD, IMPORT])
def test_non_staff_are_sent_to_the_login_page(url, user):
    client = Client()
    client.force_login(user)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_non_staff_cannot_import(user, card_bytes):
    client = Client()
    client.force_login(user)

    client.post(IMPORT, {"file": SimpleUploadedFile("w.json", card_bytes("wren_v2.json"))})

    assert Avatar.objects.count() == 0


def test_staff_without_the_add_permission_cannot_import(card_bytes):
    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_avatar"))
    client = Client()
    client.force_login(clerk)

    get_response = client.get(IMPORT)
    post_response = client.post(IMPORT, {"file": SimpleUploadedFile("w.json", card_bytes("wren_v2.json"))})

    assert (get_response.status_code, post_response.status_code) == (403, 403)
    assert Avatar.objects.count() == 0
    assert "Import character card" not in client.get(CHANGELIST).content.decode()


def bank_for_turn(avatar: Avatar) -> PhraseBank:
    """The phrase bank a turn routes by, read as a turn reads it: by the avatar's version."""
    return avatar_for_turn(avatar_id=avatar.pk, version=avatar.updated_at).bank


def test_editing_an_avatars_phrases_in_the_admin_changes_the_bank_the_next_turn_routes_by(staff_client, avatar):
    old = AvatarPhrase.objects.create(avatar=avatar, mode="secretary", text="file the zebra report")
    avatar.refresh_from_db()
    assert "file the zebra report" in bank_for_turn(avatar).phrases["secretary"]  # now cached
    kept = AvatarPhrase.objects.get(avatar=avatar, text="clear my calendar")
    data = change_form_data(
        avatar,
        **{
            "phrases-TOTAL_FORMS": "3",
            "phrases-INITIAL_FORMS": "2",
            "phrases-0-id": str(kept.pk),
            "phrases-0-avatar": str(avatar.pk),
            "phrases-0-mode": "secretary",
            "phrases-0-text": "clear my calendar",
            "phrases-1-id": str(old.pk),
            "phrases-1-avatar": str(avatar.pk),
            "phrases-1-mode": "secretary",
            "phrases-1-text": "file the zebra report",
            "phrases-1-DELETE": "on",
            "phrases-2-avatar": str(avatar.pk),
            "phrases-2-mode": "intimate",
            "phrases-2-text": "stay with me by the zebra fire",
        },
    )

    response = staff_client.post(reverse("admin:avatars_avatar_change", args=[avatar.pk]), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    avatar.refresh_from_db()  # what the next turn reads with its conversation
    bank = bank_for_turn(avatar)
    assert "stay with me by the zebra fire" in bank.phrases["intimate"]
    assert "file the zebra report" not in bank.phrases["secretary"]
    assert "clear my calendar" in bank.phrases["secretary"]


def test_a_phrase_saved_or_deleted_outside_the_admin_makes_a_new_version_of_its_avatar(avatar):
    first = Avatar.objects.get(pk=avatar.pk).updated_at

    phrase = AvatarPhrase.objects.create(avatar=avatar, mode="intimate", text="sit with me a while")
    second = Avatar.objects.get(pk=avatar.pk).updated_at
    phrase.delete()
    third = Avatar.objects.get(pk=avatar.pk).updated_at

    assert first < second < third
