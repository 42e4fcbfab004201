from pathlib import Path

import pytest
from django.db import IntegrityError

from avatars.errors import AvatarLimitReached, CardInvalidField, PublicNotAllowed
from avatars.models import Avatar, AvatarPhrase
from avatars.services import avatar_create, avatar_delete, avatar_import_card, avatar_update
from core.errors import Forbidden, InvalidInput
from testing.support import AvatarFactory, ConversationFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_create_makes_a_private_avatar_of_the_users_own(user):
    avatar = avatar_create(user=user, data={"name": "  Ada Lovelace  ", "tags": ["a", " A ", "b", ""]})

    assert (avatar.owner, avatar.is_public, avatar.slug, avatar.name) == (user, False, "ada-lovelace", "Ada Lovelace")
    assert avatar.tags == ["a", "b"]
    assert avatar.card_extensions == {}


def test_slugs_are_unique_with_numbered_suffixes(user, other_user):
    AvatarFactory(slug="nova", name="Nova")

    second = avatar_create(user=user, data={"name": "Nova"})
    third = avatar_create(user=other_user, data={"name": "NOVA!"})

    assert (second.slug, third.slug) == ("nova-2", "nova-3")


def test_a_name_without_latin_letters_gets_a_fallback_slug(user):
    first = avatar_create(user=user, data={"name": "星"})
    second = avatar_create(user=user, data={"name": "🙂"})

    assert (first.slug, second.slug) == ("avatar", "avatar-2")


def test_a_very_long_name_gives_a_slug_that_fits(user):
    avatar = avatar_create(user=user, data={"name": "word " * 16})

    assert len(avatar.slug) <= 90
    assert avatar.slug.startswith("word-word-")
    assert not avatar.slug.endswith("-")


def test_create_requires_a_name(user):
    with pytest.raises(InvalidInput) as caught:
        avatar_create(user=user, data={"description": "nameless"})

    assert caught.value.field == "name"
    assert Avatar.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 81}, "name"),
        ({"name": "X", "first_message": "y" * 4001}, "first_message"),
        ({"name": "X", "tags": [f"t{i}" for i in range(31)]}, "tags"),
        ({"name": "X", "tags": ["x" * 51]}, "tags"),
        ({"name": "X", "alternate_greetings": [f"g{i}" for i in range(21)]}, "alternate_greetings"),
        ({"name": "X", "fallback_lines": ["z" * 1001]}, "fallback_lines"),
        ({"name": "X", "default_mode": "party"}, "default_mode"),
        ({"name": "X", "intimate_allowed": "yes"}, "intimate_allowed"),
        ({"name": "X", "owner_id": 1}, "owner_id"),
    ],
)
def test_create_refuses_bad_values_naming_the_field(user, data, field):
    with pytest.raises(InvalidInput) as caught:
        avatar_create(user=user, data=data)

    assert caught.value.field == field
    assert Avatar.objects.count() == 0


def test_repeated_tags_count_once(user):
    assert avatar_create(user=user, data={"name": "X", "tags": ["t"] * 31}).tags == ["t"]


def test_only_staff_may_create_a_public_avatar(user):
    with pytest.raises(PublicNotAllowed) as caught:
        avatar_create(user=user, data={"name": "Loud", "is_public": True})

    assert (caught.value.code, caught.value.field, caught.value.status_code) == ("public_staff_only", "is_public", 422)
    assert Avatar.objects.count() == 0


def test_staff_may_create_a_public_avatar_of_their_own():
    staff = UserFactory(is_staff=True)

    avatar = avatar_create(user=staff, data={"name": "Shared", "is_public": True})

    assert (avatar.owner, avatar.is_public) == (staff, True)


def test_catalogue_avatars_are_staff_only_and_owned_by_nobody(user):
    staff = UserFactory(is_staff=True)

    with pytest.raises(Forbidden):
        avatar_create(user=user, data={"name": "Nope"}, catalogue=True)
    avatar = avatar_create(user=staff, data={"name": "Catalogue"}, catalogue=True)

    assert (avatar.owner, avatar.is_public) == (None, True)
    assert Avatar.objects.count() == 1


def test_the_per_user_limit_refuses_one_more(user, other_user, settings):
    settings.AVATAR_MAX_PER_USER = 2
    AvatarFactory.create_batch(2, owner=user, is_public=False)
    AvatarFactory(owner=None, is_public=True)  # the catalogue does not count

    with pytest.raises(AvatarLimitReached) as caught:
        avatar_create(user=user, data={"name": "Third"})

    assert (caught.value.code, caught.value.status_code) == ("avatar_limit_reached", 409)
    assert Avatar.objects.filter(owner=user).count() == 2
    assert avatar_create(user=other_user, data={"name": "Theirs"}).owner == other_user  # others are not limited


def test_update_changes_only_the_given_fields_and_keeps_the_slug(user):
    avatar = avatar_create(user=user, data={"name": "Old", "personality": "Kind", "tags": ["x"]})

    avatar_update(avatar=avatar, user=user, data={"name": "New", "tags": ["y", "z"]})

    avatar.refresh_from_db()
    assert (avatar.name, avatar.slug, avatar.personality, avatar.tags) == ("New", "old", "Kind", ["y", "z"])


def test_update_refuses_bad_values_and_stores_nothing(user):
    avatar = avatar_create(user=user, data={"name": "Keep"})

    with pytest.raises(InvalidInput) as caught:
        avatar_update(avatar=avatar, user=user, data={"personality": "fine", "scenario": "s" * 20_001})

    assert caught.value.field == "scenario"
    avatar.refresh_from_db()
    assert (avatar.personality, avatar.scenario) == ("", "")


def test_update_may_not_make_an_avatar_public_unless_staff(user):
    avatar = avatar_create(user=user, data={"name": "Quiet"})

    with pytest.raises(PublicNotAllowed):
        avatar_update(avatar=avatar, user=user, data={"is_public": True})

    avatar.refresh_from_db()
    assert avatar.is_public is False


def test_a_catalogue_avatar_must_stay_public():
    staff = UserFactory(is_staff=True)
    avatar = AvatarFactory(owner=None, is_public=True)

    with pytest.raises(InvalidInput) as caught:
        avatar_update(avatar=avatar, user=staff, data={"is_public": False})

    assert caught.value.field == "is_public"


def test_delete_removes_the_avatar_its_phrases_and_conversations(user, django_capture_on_commit_callbacks):
    avatar = avatar_create(user=user, data={"name": "Gone"})
    AvatarPhrase.objects.create(avatar=avatar, mode="secretary", text="plan")
    ConversationFactory(user=user, avatar=avatar)
    kept = AvatarFactory()

    with django_capture_on_commit_callbacks(execute=True):
        avatar_delete(avatar=avatar)

    assert list(Avatar.objects.all()) == [kept]
    assert AvatarPhrase.objects.count() == 0


def test_delete_removes_the_image_file_once_committed(user, card_bytes, django_capture_on_commit_callbacks):
    avatar = avatar_import_card(user=user, content=card_bytes("wren_v2.png"))
    image_path = Path(avatar.image.path)
    assert image_path.exists()

    with django_capture_on_commit_callbacks(execute=True):
        avatar_delete(avatar=avatar)

    assert not image_path.exists()


def test_import_card_creates_a_private_avatar_with_image_and_phrases(user, card_bytes):
    avatar = avatar_import_card(user=user, content=card_bytes("wren_v2.png"))

    assert (avatar.name, avatar.slug, avatar.owner, avatar.is_public) == ("Captain Wren", "captain-wren", user, False)
    assert avatar.tags == ["Fantasy", "steampunk", "cosy"]
    assert avatar.image.name == "avatars/captain-wren.png"
    assert Path(avatar.image.path).read_bytes() == card_bytes("wren_v2.png")


def test_import_card_with_a_field_too_long_names_the_card_field(user):
    content = b'{"spec": "chara_card_v2", "data": {"name": "X", "first_mes": "' + b"y" * 4001 + b'"}}'

    with pytest.raises(CardInvalidField) as caught:
        avatar_import_card(user=user, content=content)

    assert caught.value.field == "data.first_mes"
    assert (
        caught.value.message == "Card field data.first_mes: first_message must be at most 4000 characters (got 4001)."
    )
    assert Avatar.objects.count() == 0


def test_import_card_counts_against_the_limit(user, card_bytes, settings):
    settings.AVATAR_MAX_PER_USER = 0

    with pytest.raises(AvatarLimitReached):
        avatar_import_card(user=user, content=card_bytes("wren_v2.json"))

    assert Avatar.objects.count() == 0


def test_import_card_into_the_catalogue_is_staff_only(user, card_bytes):
    staff = UserFactory(is_staff=True)

    with pytest.raises(Forbidden):
        avatar_import_card(user=user, content=card_bytes("bramble_v1.json"), catalogue=True)
    avatar = avatar_import_card(user=staff, content=card_bytes("bramble_v1.json"), catalogue=True)

    assert (avatar.owner, avatar.is_public) == (None, True)


def test_the_database_still_refuses_a_private_avatar_without_owner():
    with pytest.raises(IntegrityError):
        Avatar.objects.create(slug="orphan", name="Orphan", is_public=False, owner=None)
