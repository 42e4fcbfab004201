import pytest
from django.contrib.auth.models import AnonymousUser

from avatars.errors import AvatarReadOnly
from avatars.selectors import (
    DEFAULT_FALLBACK_LINES,
    avatar_fallback_lines,
    avatar_get_owned,
    avatar_get_visible,
    avatar_list_visible,
)
from core.errors import NotFound
from testing.support import AvatarFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def avatars(user, other_user):
    return {
        "public": AvatarFactory(name="Beacon", slug="beacon", tags=["Work", "calm"], tagline="Keeps lists"),
        "mine": AvatarFactory(name="alder", slug="alder", is_public=False, owner=user, tags=["garden"]),
        "theirs": AvatarFactory(name="Cypress", slug="cypress", is_public=False, owner=other_user, tags=["work"]),
        "public_of_theirs": AvatarFactory(name="Dune", slug="dune", is_public=True, owner=other_user),
    }


def test_list_holds_the_catalogue_and_own_avatars_by_name(user, avatars):
    names = [a.name for a in avatar_list_visible(user=user)]

    assert names == ["alder", "Beacon", "Dune"]  # case-insensitive order; never "Cypress"


def test_anonymous_sees_only_the_catalogue(avatars):
    assert [a.slug for a in avatar_list_visible(user=AnonymousUser())] == ["beacon", "dune"]


def test_list_filters_by_text_in_name_tagline_or_description(user, avatars):
    assert [a.slug for a in avatar_list_visible(user=user, q="LISTS")] == ["beacon"]
    assert [a.slug for a in avatar_list_visible(user=user, q="ald")] == ["alder"]
    assert [a.slug for a in avatar_list_visible(user=user, q="cypress")] == []


def test_list_filters_by_exact_tag_ignoring_case(user, avatars):
    assert [a.slug for a in avatar_list_visible(user=user, tag="work")] == ["beacon"]  # not theirs
    assert [a.slug for a in avatar_list_visible(user=user, tag=" GARDEN ")] == ["alder"]
    assert [a.slug for a in avatar_list_visible(user=user, tag="wor")] == []


def test_blank_filters_are_ignored(user, avatars):
    assert avatar_list_visible(user=user, q="  ", tag="").count() == 3


def test_get_visible_returns_public_and_own(user, avatars):
    assert avatar_get_visible(user=user, avatar_id=avatars["public"].id) == avatars["public"]
    assert avatar_get_visible(user=user, avatar_id=avatars["mine"].id) == avatars["mine"]


def test_get_visible_hides_another_users_private_avatar(user, avatars):
    with pytest.raises(NotFound):
        avatar_get_visible(user=user, avatar_id=avatars["theirs"].id)


def test_get_visible_of_a_missing_id_is_not_found(user, avatars):
    with pytest.raises(NotFound):
        avatar_get_visible(user=user, avatar_id=999_999)


def test_get_owned_returns_own(user, avatars):
    assert avatar_get_owned(user=user, avatar_id=avatars["mine"].id) == avatars["mine"]


def test_get_owned_of_another_users_private_avatar_is_not_found(user, avatars):
    with pytest.raises(NotFound):
        avatar_get_owned(user=user, avatar_id=avatars["theirs"].id)


@pytest.mark.parametrize("key", ["public", "public_of_theirs"])
def test_get_owned_of_a_visible_avatar_not_owned_is_read_only(user, avatars, key):
    with pytest.raises(AvatarReadOnly) as caught:
        avatar_get_owned(user=user, avatar_id=avatars[key].id)

    assert (caught.value.code, caught.value.status_code) == ("read_only", 403)


def test_fallback_lines_are_the_avatars_own_trimmed():
    avatar = AvatarFactory.build(fallback_lines=["  One moment. ", "", 3, "Back soon."])

    assert avatar_fallback_lines(avatar) == ["One moment.", "Back soon."]


@pytest.mark.parametrize("stored", [[], ["   "], None, "not a list"])
def test_fallback_lines_default_when_the_avatar_has_none(stored):
    avatar = AvatarFactory.build(fallback_lines=stored)

    assert avatar_fallback_lines(avatar) == list(DEFAULT_FALLBACK_LINES)
