"""The seed_demo and welcome management commands."""

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from accounts.models import Profile
from avatars.models import Avatar, AvatarPhrase
from llm.errors import NotConfigured

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {
        "avatars": Avatar.objects.count(),
        "phrases": AvatarPhrase.objects.count(),
        "users": User.objects.count(),
        "profiles": Profile.objects.count(),
    }


def test_seed_demo_creates_the_demo_data():
    output = run("seed_demo", "--with-logins")

    assert {k: v for k, v in counts().items() if k != "profiles"} == {"avatars": 2, "phrases": 12, "users": 2}
    assert Profile.objects.filter(user__username="demo").count() == 1
    ada, milo = Avatar.objects.get(slug="ada"), Avatar.objects.get(slug="milo")
    for avatar in (ada, milo):
        assert (avatar.owner, avatar.is_public, avatar.intimate_allowed) == (None, True, True)
        texts = ["secretary_instructions", "intimate_instructions", "first_message", "example_dialogue"]
        texts += ["personality", "description", "tagline", "scenario"]
        assert [name for name in texts if not getattr(avatar, name)] == []
        assert (len(avatar.fallback_lines), len(avatar.alternate_greetings), len(avatar.tags)) == (3, 3, 4)
        assert set(avatar.phrases.values_list("mode", flat=True)) == {"secretary", "intimate"}
    assert (ada.default_mode, milo.default_mode) == ("secretary", "intimate")
    assert "created   avatar ada" in output
    assert "Demo logins: demo / demo-password-123 (app), admin / admin-password-123 (admin)." in output


def test_seed_demo_logins():
    run("seed_demo", "--with-logins")

    demo = User.objects.get(username="demo")
    admin = User.objects.get(username="admin")
    assert demo.check_password("demo-password-123")
    assert (demo.is_staff, demo.is_superuser) == (False, False)
    assert admin.check_password("admin-password-123")
    assert (admin.is_staff, admin.is_superuser) == (True, True)
    profile = Profile.objects.get(user=demo)
    assert (profile.display_name, profile.adult_confirmed, profile.intimate_opt_in) == ("Demo", True, True)


def test_seed_demo_twice_changes_nothing():
    run("seed_demo", "--with-logins")
    before = counts()
    stamps = dict(Avatar.objects.values_list("slug", "updated_at"))
    password_hash = User.objects.get(username="demo").password

    output = run("seed_demo", "--with-logins")

    assert counts() == before
    assert dict(Avatar.objects.values_list("slug", "updated_at")) == stamps
    assert User.objects.get(username="demo").password == password_hash
    assert output.splitlines()[:6] == [
        "unchanged avatar ada",
        "unchanged avatar milo",
        "unchanged user demo",
        "unchanged profile demo",
        "unchanged user admin",
        "Demo data: 0 created, 0 updated, 17 unchanged, 0 skipped.",
    ]


def test_seed_demo_repairs_what_was_changed_and_keeps_extra_phrases():
    run("seed_demo", "--with-logins")
    Avatar.objects.filter(slug="ada").update(name="Edited", is_public=True)
    ada = Avatar.objects.get(slug="ada")
    AvatarPhrase.objects.create(avatar=ada, mode="secretary", text="added by hand")
    User.objects.filter(username="admin").update(is_staff=False)

    output = run("seed_demo", "--with-logins")

    assert Avatar.objects.get(slug="ada").name == "Ada"
    assert AvatarPhrase.objects.filter(text="added by hand").exists()
    assert User.objects.get(username="admin").is_staff is True
    assert "updated   avatar ada" in output
    assert "unchanged avatar milo" in output


def test_seed_demo_leaves_a_users_avatar_with_a_demo_slug_alone(user):
    Avatar.objects.create(slug="ada", name="My Ada", owner=user, is_public=False)

    output = run("seed_demo", "--no-logins")

    mine = Avatar.objects.get(slug="ada")
    assert (mine.name, mine.owner, mine.is_public) == ("My Ada", user, False)
    assert "skipped   avatar ada (the slug belongs to a user's own avatar)" in output


def test_seed_demo_creates_no_logins_without_debug(settings):
    settings.DEBUG = False

    output = run("seed_demo")

    assert User.objects.count() == 0
    assert Avatar.objects.count() == 2
    assert "Demo logins not created" in output


def test_seed_demo_creates_logins_in_debug(settings):
    settings.DEBUG = True

    run("seed_demo")

    assert sorted(User.objects.values_list("username", flat=True)) == ["admin", "demo"]


def test_welcome_prints_the_urls_logins_and_llm_hint(settings):
    settings.LLM_API_KEY = ""
    settings.LLM_BASE_URL = ""
    run("seed_demo", "--with-logins")

    output = run("welcome", "--host", "0.0.0.0", "--port", "9000")

    assert "Web chat:  http://0.0.0.0:9000/" in output
    assert "Admin:     http://0.0.0.0:9000/admin/" in output
    assert "API docs:  http://0.0.0.0:9000/api/docs" in output
    assert "demo / demo-password-123" in output
    assert "admin / admin-password-123" in output
    assert NotConfigured.user_message in output
    assert "LLM_BASE_URL=http://127.0.0.1:11434/v1 LLM_MODEL=llama3.2 make run" in output


def test_welcome_without_llm_hint_when_configured(settings):
    settings.LLM_API_KEY = ""
    settings.LLM_BASE_URL = "http://127.0.0.1:11434/v1"

    output = run("welcome")

    assert "Web chat:  http://127.0.0.1:8000/" in output
    assert NotConfigured.user_message not in output
    assert "demo-password-123" not in output  # no such login yet
