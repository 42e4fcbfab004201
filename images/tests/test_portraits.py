"""Portraits over REST and from the admin: made in the background, stored, shown, paid once, checked first."""

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from avatars.models import Avatar
from core.background import in_process_tasks_wait
from images.models import Image, ImageStatus
from images.providers.fake import FakeImageProvider
from images.tests.conftest import image_requests
from llm.models import UsageDay
from llm.testing import LlmockServer
from testing.support import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

Headers = dict[str, str]


@pytest.fixture
def own_avatar(user: User) -> Avatar:
    return AvatarFactory(owner=user, is_public=False, name="Mia", appearance="red hair, green eyes", style="")


def _portrait(client: Client, headers: Headers, avatar_id: int, **body: Any) -> Any:
    return client.post(f"/api/avatars/{avatar_id}/portrait", body, content_type="application/json", headers=headers)


def _read(client: Client, headers: Headers, image_id: int) -> Any:
    return client.get(f"/api/images/{image_id}", headers=headers)


def test_a_portrait_is_made_in_the_background_and_shown_with_the_avatar(
    client: Client, user: User, own_avatar: Avatar, bearer_for: Any, fake_pictures: FakeImageProvider
) -> None:
    headers = bearer_for(user)

    answer = _portrait(client, headers, own_avatar.pk)
    assert answer.status_code == 202
    image_id = answer.json()["image_id"]
    in_process_tasks_wait()

    image = _read(client, headers, image_id).json()
    assert image["status"] == "ready"
    assert image["url"] == f"/api/images/{image_id}/file"
    assert "Appearance: red hair, green eyes." in image["prompt"]
    served = client.get(image["url"], headers=headers)
    assert served.status_code == 200
    assert served["Content-Type"] == "image/webp"
    assert served.getvalue()[:4] == b"RIFF"
    avatar = client.get(f"/api/avatars/{own_avatar.pk}", headers=headers).json()
    assert avatar["portrait"] == {"id": image_id, "status": "ready", "url": image["url"], "error": None}
    assert len(fake_pictures.calls) == 1


def test_the_same_portrait_asked_again_is_not_paid_twice(
    client: Client, user: User, own_avatar: Avatar, bearer_for: Any, fake_pictures: FakeImageProvider
) -> None:
    headers = bearer_for(user)
    first = _portrait(client, headers, own_avatar.pk).json()["image_id"]
    in_process_tasks_wait()

    second = _portrait(client, headers, own_avatar.pk).json()
    in_process_tasks_wait()

    assert second["status"] == "ready"  # from the cache, at once
    assert second["image_id"] != first
    assert len(fake_pictures.calls) == 1
    assert Image.objects.get(pk=second["image_id"]).cost_usd == 0
    assert UsageDay.objects.get(user=user).images == 1


def test_a_forbidden_portrait_is_refused_before_any_call(
    client: Client, user: User, own_avatar: Avatar, bearer_for: Any, fake_pictures: FakeImageProvider
) -> None:
    answer = _portrait(client, bearer_for(user), own_avatar.pk, prompt="topless on a beach")

    assert answer.status_code == 422
    assert answer.json()["code"] == "image_refused"
    assert answer.json()["field"] == "prompt"
    assert "never sexual" in answer.json()["detail"]
    assert fake_pictures.calls == []
    assert not Image.objects.exists()


def test_a_catalogue_avatar_cannot_be_portrayed_by_a_user(
    client: Client, user: User, bearer_for: Any, fake_pictures: FakeImageProvider
) -> None:
    catalogue = AvatarFactory(is_public=True)

    assert _portrait(client, bearer_for(user), catalogue.pk).status_code == 403
    assert fake_pictures.calls == []


def test_another_users_picture_is_a_404(
    client: Client, user: User, other_user: User, own_avatar: Avatar, bearer_for: Any
) -> None:
    image_id = _portrait(client, bearer_for(user), own_avatar.pk).json()["image_id"]
    in_process_tasks_wait()

    assert _read(client, bearer_for(other_user), image_id).status_code == 404
    assert client.get(f"/api/images/{image_id}/file", headers=bearer_for(other_user)).status_code == 404
    assert client.get(f"/api/images/{image_id}/file").status_code == 401
    assert _portrait(client, bearer_for(other_user), own_avatar.pk).status_code == 404


def test_a_catalogue_portrait_is_served_to_every_signed_in_user(
    client: Client, other_user: User, bearer_for: Any
) -> None:
    from images.services import portrait_request

    catalogue = AvatarFactory(is_public=True, appearance="silver hair")
    image = portrait_request(owner_id=None, avatar=catalogue, by_staff=True)
    in_process_tasks_wait()

    listed = client.get("/api/avatars", headers=bearer_for(other_user)).json()
    [shown] = [a for a in listed if a["id"] == catalogue.pk]
    assert shown["portrait"]["status"] == "ready"
    assert client.get(shown["portrait"]["url"], headers=bearer_for(other_user)).status_code == 200
    assert _read(client, bearer_for(other_user), image.pk).json()["status"] == "ready"


def test_the_files_are_never_under_media_url(client: Client, user: User, own_avatar: Avatar, bearer_for: Any) -> None:
    image_id = _portrait(client, bearer_for(user), own_avatar.pk).json()["image_id"]
    in_process_tasks_wait()
    name = Image.objects.get(pk=image_id).file.name

    assert client.get(f"/media/images/{name}").status_code == 404
    assert client.get(f"/media/{name}").status_code == 404


def test_a_request_id_sent_twice_makes_one_picture(
    client: Client, user: User, own_avatar: Avatar, bearer_for: Any, fake_pictures: FakeImageProvider
) -> None:
    headers = bearer_for(user)
    first = _portrait(client, headers, own_avatar.pk, prompt="smiling", request_id="r-1").json()
    second = _portrait(client, headers, own_avatar.pk, prompt="smiling", request_id="r-1").json()
    in_process_tasks_wait()

    assert first["image_id"] == second["image_id"]
    assert Image.objects.count() == 1
    assert len(fake_pictures.calls) == 1


def test_a_task_delivered_twice_calls_the_provider_once(
    user: User, own_avatar: Avatar, fake_pictures: FakeImageProvider
) -> None:
    from images.services import portrait_request
    from images.tasks import image_generate

    image = portrait_request(owner_id=user.pk, avatar=own_avatar)
    in_process_tasks_wait()

    assert image_generate.apply(kwargs={"image_id": image.pk}).result == "skipped"
    assert len(fake_pictures.calls) == 1


def test_the_daily_image_quota_refuses_before_any_call(
    client: Client, user: User, own_avatar: Avatar, bearer_for: Any, fake_pictures: FakeImageProvider, settings: Any
) -> None:
    settings.QUOTA_DAILY_IMAGES = 1
    headers = bearer_for(user)
    assert _portrait(client, headers, own_avatar.pk, prompt="smiling").status_code == 202
    in_process_tasks_wait()

    refused = _portrait(client, headers, own_avatar.pk, prompt="laughing")

    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert refused.json()["limit"] == "images"
    assert int(refused["Retry-After"]) > 0
    assert len(fake_pictures.calls) == 1
    usage = client.get("/api/me/usage", headers=headers).json()
    assert usage["images"] == 1
    assert usage["limit"]["images"] == 1


def test_a_refused_picture_gives_its_count_back(
    client: Client, user: User, own_avatar: Avatar, bearer_for: Any, fake_pictures: FakeImageProvider
) -> None:
    image_id = _portrait(client, bearer_for(user), own_avatar.pk, prompt="FAKE_REFUSE").json()["image_id"]
    in_process_tasks_wait()

    image = _read(client, bearer_for(user), image_id).json()
    assert image["status"] == "refused"
    assert image["error"]["code"] == "image_refused"
    assert image["url"] is None
    assert UsageDay.objects.get(user=user).images == 0


# --- against llmock: the answer is an SVG (rasterized), faults retried once, never a refusal -----


@pytest.mark.llmock
def test_a_portrait_from_llmock_is_rasterized_priced_and_counted(
    client: Client,
    user: User,
    own_avatar: Avatar,
    bearer_for: Any,
    llmock_pictures: LlmockServer,
    picture_storage: Path,
) -> None:
    headers = bearer_for(user)
    image_id = _portrait(client, headers, own_avatar.pk).json()["image_id"]
    in_process_tasks_wait()

    image = _read(client, headers, image_id).json()
    assert image["status"] == "ready"
    assert image["cost_usd"] == "0.0420000000"  # gpt-image-1, 1024x1024, medium
    assert (image["width"], image["height"]) == (1024, 1024)
    stored = Image.objects.get(pk=image_id).file.name or ""
    assert (picture_storage / stored).read_bytes()[:4] == b"RIFF"
    day = UsageDay.objects.get(user=user)
    assert (day.images, day.cost_usd) == (1, Decimal("0.042"))
    assert client.get("/api/me/usage", headers=headers).json()["cost_usd"] == "0.0420000000"


@pytest.mark.llmock
def test_a_failure_is_retried_once_then_succeeds(user: User, own_avatar: Avatar, llmock_pictures: LlmockServer) -> None:
    from images.services import portrait_request

    llmock_pictures.scenario({"type": "fail", "status": 500, "match": {"path": "*/images/generations"}})
    image = portrait_request(owner_id=user.pk, avatar=own_avatar)
    in_process_tasks_wait()

    image.refresh_from_db()
    assert image.status == ImageStatus.READY
    assert image.attempts == 2
    assert len(image_requests(llmock_pictures)) == 2


@pytest.mark.llmock
@pytest.mark.parametrize("fault", [{"type": "fail", "status": 429}, {"type": "delay", "seconds": 3.0}])
def test_two_failures_end_the_picture_failed_and_free(
    user: User, own_avatar: Avatar, llmock_pictures: LlmockServer, fault: dict[str, Any]
) -> None:
    from images.services import portrait_request

    llmock_pictures.scenario({**fault, "times": 2, "match": {"path": "*/images/generations"}})
    image = portrait_request(owner_id=user.pk, avatar=own_avatar)
    in_process_tasks_wait()

    image.refresh_from_db()
    assert image.status == ImageStatus.FAILED
    assert image.error == "The picture could not be made."
    assert len(image_requests(llmock_pictures)) == 2
    assert UsageDay.objects.get(user=user).images == 0
    assert image.cost_usd == 0


@pytest.mark.llmock
def test_the_providers_content_policy_is_never_retried(
    user: User, own_avatar: Avatar, llmock_pictures: LlmockServer
) -> None:
    from images.services import portrait_request

    llmock_pictures.scenario(
        {"type": "fail", "status": 400, "code": "content_policy_violation", "match": {"path": "*/images/generations"}}
    )
    image = portrait_request(owner_id=user.pk, avatar=own_avatar)
    in_process_tasks_wait()

    image.refresh_from_db()
    assert image.status == ImageStatus.REFUSED
    assert "content policy" in image.error
    assert len(image_requests(llmock_pictures)) == 1


def test_the_admin_makes_and_remakes_a_catalogue_portrait(client: Client, fake_pictures: FakeImageProvider) -> None:
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(staff)
    catalogue = AvatarFactory(is_public=True, appearance="silver hair")
    url = "/admin/avatars/avatar/"

    client.post(url, {"action": "portrait_make", "_selected_action": [catalogue.pk]})
    in_process_tasks_wait()
    client.post(url, {"action": "portrait_make", "_selected_action": [catalogue.pk]})
    in_process_tasks_wait()
    assert len(fake_pictures.calls) == 1  # the second is the same picture, from the cache

    client.post(url, {"action": "portrait_remake", "_selected_action": [catalogue.pk]})
    in_process_tasks_wait()

    catalogue.refresh_from_db()
    assert len(fake_pictures.calls) == 2
    assert catalogue.portrait is not None
    assert catalogue.portrait.status == ImageStatus.READY
    assert catalogue.portrait.owner_id is None
    page = client.get(f"/admin/avatars/avatar/{catalogue.pk}/change/")
    assert f"/admin/images/image/{catalogue.portrait_id}/file/".encode() in page.content
    assert client.get(f"/admin/images/image/{catalogue.portrait_id}/file/").status_code == 200


def test_the_admin_usage_report_counts_pictures_and_their_cost(
    client: Client, user: User, own_avatar: Avatar, settings: Any
) -> None:
    from images.services import portrait_request

    settings.IMAGE_PRICES = '[{"model": "fake-image", "size": "*", "quality": "*", "usd": "0.05"}]'
    portrait_request(owner_id=user.pk, avatar=own_avatar, extra="smiling")
    in_process_tasks_wait()
    portrait_request(owner_id=user.pk, avatar=own_avatar, extra="smiling")  # the cache: no cost
    portrait_request(owner_id=user.pk, avatar=own_avatar, extra="FAKE_REFUSE")
    in_process_tasks_wait()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    page = client.get("/admin/conversations/conversation/usage/")

    [total, mia] = page.context["report"].pictures
    assert (total.made, total.reused, total.refused, total.failed) == (1, 1, 1, 0)
    assert total.cost_usd == Decimal("0.05")
    assert mia.label == "Mia"
    assert b'id="usage-pictures"' in page.content


def test_a_picture_past_its_time_limit_ends_failed_and_free(
    user: User, own_avatar: Avatar, monkeypatch: pytest.MonkeyPatch, fake_pictures: FakeImageProvider
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from images.services import portrait_request

    def too_slow(prompt: str, *, size: str, quality: str) -> Any:
        raise SoftTimeLimitExceeded

    monkeypatch.setattr(fake_pictures, "generate", too_slow)
    image = portrait_request(owner_id=user.pk, avatar=own_avatar)
    in_process_tasks_wait()

    image.refresh_from_db()
    assert (image.status, image.error_code) == (ImageStatus.FAILED, "image_timeout")
    assert UsageDay.objects.get(user=user).images == 0


def test_on_postgresql_two_requests_at_the_image_limit_only_one_is_admitted(
    user: User, own_avatar: Avatar, settings: Any, fake_pictures: FakeImageProvider
) -> None:
    import threading

    from django.db import close_old_connections, connection

    from images.services import portrait_request
    from llm.quotas import QuotaExceeded
    from testing.support import skip_or_fail

    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL is not PostgreSQL: two threads cannot share SQLite's in-memory test database")
    settings.QUOTA_DAILY_IMAGES = 1
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def ask(extra: str) -> None:
        try:
            start.wait(timeout=10)
            portrait_request(owner_id=user.pk, avatar=own_avatar, extra=extra)
            outcomes.append("admitted")
        except QuotaExceeded:
            outcomes.append("refused")
        finally:
            close_old_connections()

    threads = [threading.Thread(target=ask, args=(extra,)) for extra in ("smiling", "laughing")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    in_process_tasks_wait()

    assert sorted(outcomes) == ["admitted", "refused"]
    assert UsageDay.objects.get(user=user).images == 1
    assert len(fake_pictures.calls) == 1


def test_a_picture_whose_attempt_died_is_made_by_the_sweep_within_two_calls(
    user: User, own_avatar: Avatar, fake_pictures: FakeImageProvider
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from images.services import images_stalled_requeue

    long_ago = timezone.now() - timedelta(minutes=10)
    common = {"owner": user, "avatar": own_avatar, "kind": "portrait", "size": "1024x1024", "cache_key": "k"}
    died_once = Image.objects.create(**common, prompt="a", attempts=1, claimed_at=long_ago)
    died_twice = Image.objects.create(**common, prompt="b", attempts=2, claimed_at=long_ago)
    being_made = Image.objects.create(**common, prompt="c", attempts=1, claimed_at=timezone.now())

    assert images_stalled_requeue() == 2
    in_process_tasks_wait()

    died_once.refresh_from_db()
    died_twice.refresh_from_db()
    being_made.refresh_from_db()
    assert died_once.status == ImageStatus.READY
    assert (died_twice.status, died_twice.error_code) == (ImageStatus.FAILED, "image_stalled")
    assert being_made.status == ImageStatus.PENDING
    assert fake_pictures.calls == ["a"]
