"""The admin: profile inline, read-only token list, revoke action."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.admin import ProfileAdminForm
from accounts.models import ApiToken
from accounts.services import token_pair_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in() -> Client:
    admin_user = User.objects.create_superuser("root", "root@example.com", "irrelevant-pass-1")
    client = Client()
    client.force_login(admin_user)
    return client


def test_token_list_and_detail_never_show_hashes(admin_client_logged_in: Client, user: User) -> None:
    token_pair_create(user=user)
    token = ApiToken.objects.first()
    assert token is not None

    listing = admin_client_logged_in.get("/admin/accounts/apitoken/")
    detail = admin_client_logged_in.get(f"/admin/accounts/apitoken/{token.pk}/change/")

    assert listing.status_code == detail.status_code == 200
    assert b"sam" in listing.content
    for page in (listing, detail):
        for stored in ApiToken.objects.all():
            assert stored.token_hash.encode() not in page.content
    assert b'name="_save"' not in detail.content


def test_tokens_cannot_be_added_in_the_admin(admin_client_logged_in: Client) -> None:
    assert admin_client_logged_in.get("/admin/accounts/apitoken/add/").status_code == 403


def test_revoke_action_revokes_the_whole_family(admin_client_logged_in: Client, user: User, other_user: User) -> None:
    token_pair_create(user=user)
    token_pair_create(user=other_user)
    access = ApiToken.objects.get(user=user, kind="access")

    response = admin_client_logged_in.post(
        "/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [access.pk]}
    )

    assert response.status_code == 302
    assert ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() == 0
    assert ApiToken.objects.filter(user=other_user, revoked_at__isnull=True).count() == 2


def test_user_page_shows_the_profile_inline(admin_client_logged_in: Client, user: User) -> None:
    response = admin_client_logged_in.get(f"/admin/auth/user/{user.pk}/change/")

    assert response.status_code == 200
    assert b'name="profile-0-display_name"' in response.content


def test_user_with_tokens_can_still_be_deleted(admin_client_logged_in: Client, user: User) -> None:
    token_pair_create(user=user)

    response = admin_client_logged_in.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(pk=user.pk).exists()
    assert not ApiToken.objects.exists()


def test_profile_form_refuses_opt_in_without_adult_confirmation(user: User) -> None:
    form = ProfileAdminForm(
        data={"display_name": "Sam", "adult_confirmed_at": "", "intimate_opt_in": "on"}, instance=user.profile
    )

    assert not form.is_valid()
    assert form.non_field_errors() == ["Intimate opt-in requires adult confirmation (set its date first)."]


def test_adding_a_user_with_the_profile_inline(admin_client_logged_in: Client) -> None:
    response = admin_client_logged_in.post(
        "/admin/auth/user/add/",
        {
            "username": "kim",
            "usable_password": "true",
            "password1": "plum-orbit-velvet-42",
            "password2": "plum-orbit-velvet-42",
            "profile-TOTAL_FORMS": "1",
            "profile-INITIAL_FORMS": "0",
            "profile-MIN_NUM_FORMS": "0",
            "profile-MAX_NUM_FORMS": "1",
            "profile-0-display_name": "Kim",
            # The form's initial values, as a browser sends them back.
            "profile-0-locale": "US",
            "profile-0-timezone": "UTC",
        },
    )

    assert response.status_code == 302
    kim = User.objects.get(username="kim")
    assert kim.profile.display_name == "Kim"
    assert kim.profile.intimate_opt_in is False
