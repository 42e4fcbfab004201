"""Asking for a picture, making it, and telling the user: the writes of the images app.

    portrait_request / chat_picture_request      the doors (REST, admin, the socket, the turn)
      picture_policy_check                       refused here: no row paid for, no call made
      _image_admit                               idempotency (request_id), the cache, the quota
      -> Image(pending), task queued on commit   images.tasks.image_generate
    image_generate (the task's service)           claim, one provider call, store or refuse
      -> ready | refused | failed, `image.ready` to every socket of the owner

The daily image quota is taken at admission in one conditional UPDATE of the user's
`UsageDay` (`images < limit`), as the token quota is (llm/quotas.py); a picture that ends
refused or failed gives its count back. Its cost is added to the day when it is ready.
"""

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.selectors import user_group_name
from avatars.models import Avatar
from conversations.models import Conversation, Message, Origin, Role, Status
from conversations.realtime import group_event_send_from_thread
from core import background
from core.errors import NotFound
from images.base import ImageProvider
from images.encode import picture_normalize
from images.errors import ImageFailed, ImageRefused
from images.models import Image, ImageKind, ImageStatus
from images.pricing import image_cost_usd
from images.prompts import (
    chat_picture_prompt_build,
    picture_policy_check,
    portrait_prompt_build,
)
from images.selectors import image_ref
from images.storage import picture_delete, picture_save
from llm.models import UsageDay
from llm.quotas import QuotaExceeded, quota_limits_get, seconds_to_midnight, usage_day_add, user_day, user_zone_get

logger = logging.getLogger("companion.images")

CLAIM_LEASE = timedelta(minutes=5)
ATTEMPTS_MAX = 2  # provider calls per picture, whatever redelivers its task
STALLED_AFTER = timedelta(minutes=2)  # queued this long and never claimed: its task was lost
IMAGE_READY_TYPE = "image.ready"
PICTURE_LINE = "Here's a picture for you."
QUOTA_MESSAGE = "You have made today's pictures. More tomorrow, after midnight."


@dataclass(frozen=True, slots=True)
class ChatPicture:
    image: Image
    message: Message


def portrait_request(
    *,
    owner_id: int | None,
    avatar: Avatar,
    extra: str = "",
    request_id: str | None = None,
    fresh: bool = False,
    by_staff: bool = False,
) -> Image:
    """A portrait of `avatar` from its appearance and style; it becomes the avatar's portrait when ready.

    `owner_id` None: a catalogue avatar's, made from the admin. `by_staff`: outside the
    owner's quota. `fresh`: skip the cache (the admin's "regenerate"). Raises `ImageRefused`
    (no call made) or `QuotaExceeded`.
    """
    refusal = picture_policy_check(extra, avatar.appearance, avatar.style)
    if refusal is not None:
        raise ImageRefused(refusal.message, field="prompt")
    prompt = portrait_prompt_build(name=avatar.name, appearance=avatar.appearance, style=avatar.style, extra=extra)
    return _image_admit(
        owner_id=owner_id,
        avatar=avatar,
        conversation=None,
        kind=ImageKind.PORTRAIT,
        prompt=prompt,
        request_text=extra,
        request_id=request_id,
        fresh=fresh,
        count=not by_staff,
    )


def chat_picture_request(
    *, conversation: Conversation, request_text: str, request_id: str | None = None, reply_to_id: int | None = None
) -> ChatPicture:
    """A picture in a conversation: an assistant message carrying it, stored now, the picture made later.

    A request the policy forbids, or one over the daily quota, still gets its message, whose
    picture is `refused` with the reason (no call made): the user reads why in the chat.
    """
    if request_id:
        existing = Message.objects.filter(
            image__owner_id=conversation.user_id, image__request_id=request_id, conversation=conversation
        ).first()
        if existing is not None and existing.image is not None:
            return ChatPicture(image=existing.image, message=existing)
    avatar = conversation.avatar
    prompt = chat_picture_prompt_build(
        name=avatar.name,
        appearance=avatar.appearance,
        style=avatar.style,
        request=request_text,
        mode=conversation.mode,
    )
    refusal = picture_policy_check(request_text, avatar.appearance, avatar.style)
    with transaction.atomic():
        if refusal is not None:
            image = _image_refused_create(
                conversation=conversation,
                prompt=prompt,
                request_text=request_text,
                request_id=request_id,
                code=ImageRefused.code,
                message=refusal.message,
            )
        else:
            try:
                image = _image_admit(
                    owner_id=conversation.user_id,
                    avatar=avatar,
                    conversation=conversation,
                    kind=ImageKind.CHAT,
                    prompt=prompt,
                    request_text=request_text,
                    request_id=request_id,
                )
            except QuotaExceeded as exc:
                image = _image_refused_create(
                    conversation=conversation,
                    prompt=prompt,
                    request_text=request_text,
                    request_id=request_id,
                    code=exc.code,
                    message=exc.message,
                )
        content = image.error if image.status == ImageStatus.REFUSED else PICTURE_LINE
        message = Message.objects.create(
            conversation=conversation,
            role=Role.ASSISTANT,
            content=content,
            mode=conversation.mode,
            status=Status.COMPLETE,
            origin=Origin.REPLY,
            reply_to_id=reply_to_id,
            image=image,
        )
        Conversation.objects.filter(pk=conversation.pk).update(
            message_count=F("message_count") + 1, last_message_at=message.created_at
        )
    return ChatPicture(image=image, message=message)


def chat_picture_for_message(
    *, user_id: int, conversation_id: int, request_text: str, message_id: int
) -> dict[str, Any]:
    """The turn's door: a picture for a user message that asked for one (idempotent per message);
    the picture's message as clients see it."""
    from conversations.selectors import message_dict

    conversation = Conversation.objects.select_related("avatar").get(pk=conversation_id, user_id=user_id)
    picture = chat_picture_request(
        conversation=conversation, request_text=request_text, request_id=f"message-{message_id}"
    )
    return message_dict(picture.message)


def picture_quota_refusal(*, user_id: int, message: dict[str, Any]) -> QuotaExceeded | None:
    """The daily image quota a refused picture's message stands for, or None: the contract tells
    a spent quota with an `error` frame (`quota_exceeded`, when it resets) beside the message."""
    error = (message.get("image") or {}).get("error") or {}
    if error.get("code") != QuotaExceeded.code:
        return None
    zone = user_zone_get(user_id=user_id)
    return QuotaExceeded(error["message"], retry_after=seconds_to_midnight(zone=zone), limit="images")


def chat_picture_from_frame(*, user_id: int, conversation_id: int, request_text: str, client_id: str | None) -> dict:
    """The socket's `{"type": "image"}`: the picture's message as clients see it."""
    from conversations.selectors import message_dict

    conversation = Conversation.objects.select_related("avatar").filter(pk=conversation_id, user_id=user_id).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    picture = chat_picture_request(
        conversation=conversation, request_text=request_text, request_id=f"client-{client_id}" if client_id else None
    )
    return message_dict(picture.message)


def picture_cache_key(*, provider: str, model: str, prompt: str, size: str, quality: str) -> str:
    return hashlib.sha256("\x1f".join((provider, model, size, quality, prompt)).encode()).hexdigest()


def _image_refused_create(
    *, conversation: Conversation, prompt: str, request_text: str, request_id: str | None, code: str, message: str
) -> Image:
    return Image.objects.create(
        owner_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation=conversation,
        kind=ImageKind.CHAT,
        status=ImageStatus.REFUSED,
        prompt=prompt,
        request_text=request_text[:400],
        size=settings.IMAGE_SIZE,
        quality=settings.IMAGE_QUALITY,
        error_code=code,
        error=message[:300],
        cache_key="",
        request_id=request_id or None,
        finished_at=timezone.now(),
    )


def _image_admit(
    *,
    owner_id: int | None,
    avatar: Avatar,
    conversation: Conversation | None,
    kind: str,
    prompt: str,
    request_text: str,
    request_id: str | None,
    fresh: bool = False,
    count: bool = True,
) -> Image:
    from images.registry import image_provider_get

    if request_id:
        existing = Image.objects.filter(owner_id=owner_id, request_id=request_id).first()
        if existing is not None:
            return existing
    provider = image_provider_get()
    size, quality = settings.IMAGE_SIZE, settings.IMAGE_QUALITY
    key = picture_cache_key(provider=provider.name, model=provider.model, prompt=prompt, size=size, quality=quality)
    fields = {
        "owner_id": owner_id,
        "avatar": avatar,
        "conversation": conversation,
        "kind": kind,
        "prompt": prompt,
        "request_text": request_text[:400],
        "size": size,
        "quality": quality,
        "provider": provider.name,
        "model": provider.model,
        "cache_key": key,
        "request_id": request_id or None,
    }
    cached = None if fresh else _cached_get(owner_id=owner_id, cache_key=key)
    try:
        with transaction.atomic():
            if cached is not None:
                # The same picture, asked again: the stored file again, no call, nothing to pay.
                image = Image.objects.create(
                    **fields,
                    status=ImageStatus.READY,
                    file=cached.file.name,
                    width=cached.width,
                    height=cached.height,
                    cached_from=cached,
                    finished_at=timezone.now(),
                )
                if kind == ImageKind.PORTRAIT:
                    Avatar.objects.filter(pk=avatar.pk).update(portrait=image)
                transaction.on_commit(lambda: image_ready_send(image_id=image.pk))
                return image
            counted_day = _image_quota_take(owner_id=owner_id) if owner_id is not None and count else None
            image = Image.objects.create(**fields, counted_day=counted_day)
    except IntegrityError:
        # The same request_id, stored by a concurrent request: that one is the answer.
        existing = Image.objects.filter(owner_id=owner_id, request_id=request_id).first()
        if existing is None:
            raise
        return existing
    transaction.on_commit(lambda: image_generate_enqueue(image_id=image.pk), robust=True)
    return image


def _cached_get(*, owner_id: int | None, cache_key: str) -> Image | None:
    return (
        Image.objects.filter(owner_id=owner_id, cache_key=cache_key, status=ImageStatus.READY)
        .exclude(file="")
        .order_by("-id")
        .first()
    )


def _image_quota_take(*, owner_id: int) -> date:
    """Count one picture on the owner's day, or raise `QuotaExceeded` (one conditional UPDATE)."""
    zone = user_zone_get(user_id=owner_id)
    day = user_day(zone=zone)
    limit = quota_limits_get(user_id=owner_id).images
    UsageDay.objects.get_or_create(user_id=owner_id, day=day)
    under = Q() if limit is None else Q(images__lt=limit)
    if not UsageDay.objects.filter(under, user_id=owner_id, day=day).update(images=F("images") + 1):
        raise QuotaExceeded(
            f"{QUOTA_MESSAGE} (at most {limit} a day)",
            retry_after=seconds_to_midnight(zone=zone),
            limit="images",
        )
    return day


def _image_quota_give_back(image: Image) -> None:
    if image.owner_id is not None and image.counted_day is not None:
        UsageDay.objects.filter(user_id=image.owner_id, day=image.counted_day, images__gt=0).update(
            images=F("images") - 1
        )


def image_generate_enqueue(*, image_id: int) -> None:
    from images import tasks

    background.task_enqueue(tasks.image_generate, image_id=image_id)


# --- Making the picture (the task's service) --------------------------------------------------


def image_generate(*, image_id: int, provider: ImageProvider, last_attempt: bool) -> str:
    """Make a pending picture: one provider call. Returns the picture's status afterwards.

    Idempotent: the attempt first claims the row (pending, unclaimed or its lease expired); a
    picture already made, or being made by another attempt, is left alone ("skipped").
    Raises `ImageFailed` (retryable) when one more attempt may help and this is not the last.
    """
    now = timezone.now()
    claimed = Image.objects.filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE), pk=image_id, status=ImageStatus.PENDING
    ).update(claimed_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return "skipped"
    image = Image.objects.get(pk=image_id)
    last_attempt = last_attempt or image.attempts >= ATTEMPTS_MAX
    try:
        generated = provider.generate(image.prompt, size=image.size, quality=image.quality)
        picture = picture_normalize(
            generated.data, max_dimension=settings.IMAGE_MAX_DIMENSION, max_bytes=settings.IMAGE_STORED_MAX_BYTES
        )
    except ImageRefused as exc:
        return _image_end(image, ImageStatus.REFUSED, code=exc.code, error=exc.message)
    except ImageFailed as exc:
        logger.warning(
            "picture attempt failed",
            extra={"data": {"image_id": image_id, "code": exc.error_code, "retryable": exc.retryable}},
        )
        if exc.retryable and not last_attempt:
            Image.objects.filter(pk=image_id).update(claimed_at=None)
            raise
        return _image_end(image, ImageStatus.FAILED, code=exc.error_code, error=exc.user_message)
    name = picture_save(picture, image_id=image.pk)
    cost = image_cost_usd(model=generated.usage.model, size=image.size, quality=image.quality)
    with transaction.atomic():
        stored = Image.objects.filter(pk=image_id, status=ImageStatus.PENDING).update(
            status=ImageStatus.READY,
            file=name,
            width=picture.width,
            height=picture.height,
            cost_usd=cost,
            model=generated.usage.model[:200],
            finished_at=timezone.now(),
        )
        if not stored:
            transaction.on_commit(lambda: picture_delete(name))
            return "skipped"
        if image.kind == ImageKind.PORTRAIT:
            Avatar.objects.filter(pk=image.avatar_id).update(portrait_id=image_id, updated_at=timezone.now())
        if image.owner_id is not None and cost:
            usage_day_add(
                user_id=image.owner_id,
                day=image.counted_day or user_day(zone=user_zone_get(user_id=image.owner_id)),
                tokens=0,
                cost_usd=cost,
            )
        transaction.on_commit(lambda: image_ready_send(image_id=image_id))
    return ImageStatus.READY


def images_stalled_requeue(*, now: datetime | None = None) -> int:
    """The beat's sweep: pictures whose task was lost (never claimed) or whose attempt died (its
    claim expired) are queued again, or end `failed` once their attempts are spent. How many."""
    now = now or timezone.now()
    stalled = Image.objects.filter(
        Q(claimed_at__isnull=True, created_at__lt=now - STALLED_AFTER) | Q(claimed_at__lt=now - CLAIM_LEASE),
        status=ImageStatus.PENDING,
    )
    found = list(stalled.order_by("id")[:100])
    for image in found:
        if image.attempts >= ATTEMPTS_MAX:
            _image_end(image, ImageStatus.FAILED, code="image_stalled", error=ImageFailed.user_message)
    # Queued once the writes above are done: the task writes the same table.
    for image in found:
        if image.attempts < ATTEMPTS_MAX:
            image_generate_enqueue(image_id=image.pk)
    return len(found)


def image_give_up(*, image_id: int, code: str, error: str) -> None:
    """End a picture whose task could not finish (its time limit): failed, the count given back."""
    image = Image.objects.filter(pk=image_id, status=ImageStatus.PENDING).first()
    if image is not None:
        _image_end(image, ImageStatus.FAILED, code=code, error=error)


def _image_end(image: Image, status: str, *, code: str, error: str) -> str:
    with transaction.atomic():
        ended = Image.objects.filter(pk=image.pk, status=ImageStatus.PENDING).update(
            status=status, error_code=code[:64], error=error[:300], finished_at=timezone.now()
        )
        if not ended:
            return "skipped"
        _image_quota_give_back(image)
        transaction.on_commit(lambda: image_ready_send(image_id=image.pk))
    return status


def image_ready_send(*, image_id: int) -> None:
    """`{"type": "image.ready", "message_id", "image"}` to every socket of the owner (best effort:
    the picture is stored, a client that missed it reads it with the message or `GET /api/images/{id}`)."""
    image = Image.objects.filter(pk=image_id).first()
    if image is None or image.owner_id is None:
        return
    message_id = Message.objects.filter(image_id=image_id).values_list("id", flat=True).first()
    frame = {
        "type": IMAGE_READY_TYPE,
        "message_id": message_id,
        "conversation_id": image.conversation_id,
        "avatar_id": image.avatar_id,
        "kind": image.kind,
        "image": image_ref(image),
    }
    group_event_send_from_thread(group=user_group_name(image.owner_id), frame=frame)


def picture_files_delete_on_commit(*, images: "QuerySet[Image]") -> None:
    """Delete the files of these pictures once the caller's transaction commits (their rows go with
    an avatar or a conversation); a file another picture still uses (the cache) stays."""
    names = set(images.exclude(file="").values_list("file", flat=True))
    if not names:
        return
    shared = set(
        Image.objects.filter(file__in=names).exclude(pk__in=images.values("pk")).values_list("file", flat=True)
    )
    for name in names - shared:
        transaction.on_commit(_picture_deleter(name))


def _picture_deleter(name: str) -> Callable[[], None]:
    def delete() -> None:
        try:
            picture_delete(name)
        except OSError:
            logger.warning("could not delete a picture file", exc_info=True)

    return delete
