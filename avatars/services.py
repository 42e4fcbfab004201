"""Writes of avatars: create, update, delete, and create from a character card.

Rules kept here, whatever the interface:
- a user's own avatar is private; only staff may make an avatar public (`PublicNotAllowed`,
  422 on field "is_public");
- a user owns at most `settings.AVATAR_MAX_PER_USER` avatars (default 50;
  `AvatarLimitReached`, 409); catalogue avatars (no owner) are not counted;
- the slug comes from the name once, at creation (`ada`, `ada-2`, ...), and stays when the
  avatar is renamed, so links and `--avatar SLUG` keep working.
"""

from collections.abc import Iterable, Mapping
from typing import Final

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from avatars.cards import CardPhrase, ParsedCard, card_parse
from avatars.errors import AvatarLimitReached, CardInvalidField, PublicNotAllowed
from avatars.models import Avatar, AvatarPhrase
from avatars.selectors import avatar_count_owned
from avatars.validation import avatar_data_clean
from core.errors import Forbidden, InvalidInput

AVATAR_MAX_PER_USER_DEFAULT: Final = 50
CARD_IMAGE_MAX_PIXELS_DEFAULT: Final = 4096 * 4096
SLUG_MAX: Final = 100
SLUG_FALLBACK: Final = "avatar"
SLUG_ATTEMPTS: Final = 5


def avatar_max_per_user() -> int:
    return int(getattr(settings, "AVATAR_MAX_PER_USER", AVATAR_MAX_PER_USER_DEFAULT))


def _is_staff(user: User) -> bool:
    return user.is_active and user.is_staff


@transaction.atomic
def avatar_create(
    *,
    user: User,
    data: Mapping[str, object],
    catalogue: bool = False,
    image_png: bytes | None = None,
    phrases: Iterable[CardPhrase] = (),
    card_extensions: Mapping[str, object] | None = None,
) -> Avatar:
    """Create an avatar owned by `user`, or with `catalogue=True` (staff only) a public one owned by nobody."""
    fields = avatar_data_clean(data)
    if "name" not in fields:
        raise InvalidInput("name is required.", field="name")
    if catalogue:
        if not _is_staff(user):
            raise Forbidden("Only staff can add avatars to the catalogue.")
        fields["is_public"] = True
        owner: User | None = None
    else:
        if fields.get("is_public") and not _is_staff(user):
            raise PublicNotAllowed("Only staff can make an avatar public.", field="is_public")
        _check_room_for_one_more(user)
        owner = user

    avatar = Avatar(owner=owner, card_extensions=dict(card_extensions or {}), **fields)
    _save_with_unique_slug(avatar)
    if image_png is not None:
        avatar.image.save(f"{avatar.slug}.png", ContentFile(image_png), save=True)
    AvatarPhrase.objects.bulk_create(
        [AvatarPhrase(avatar=avatar, mode=phrase.mode, text=phrase.text) for phrase in phrases],
        ignore_conflicts=True,
    )
    return avatar


@transaction.atomic
def avatar_update(*, avatar: Avatar, user: User, data: Mapping[str, object]) -> Avatar:
    """Change the given fields only. The caller has checked ownership (`avatar_get_owned`)."""
    fields = avatar_data_clean(data)
    if fields.get("is_public") and not avatar.is_public and not _is_staff(user):
        raise PublicNotAllowed("Only staff can make an avatar public.", field="is_public")
    if fields.get("is_public") is False and avatar.owner_id is None:
        raise InvalidInput("A catalogue avatar without an owner must stay public.", field="is_public")
    for name, value in fields.items():
        setattr(avatar, name, value)
    if fields:
        avatar.save(update_fields=[*fields, "updated_at"])
    return avatar


def avatar_delete(*, avatar: Avatar) -> None:
    """Delete the avatar with its conversations, phrases and pictures; the files go once the delete commits."""
    from images.models import Image
    from images.services import picture_files_delete_on_commit

    image_name = avatar.image.name if avatar.image else ""
    storage = avatar.image.storage
    with transaction.atomic():
        picture_files_delete_on_commit(images=Image.objects.filter(avatar_id=avatar.pk))
        avatar.delete()
        if image_name:
            transaction.on_commit(lambda: storage.delete(image_name))


def avatar_import_card(*, user: User, content: bytes, catalogue: bool = False) -> Avatar:
    """Create an avatar from a character card (JSON bytes, or a PNG carrying one).

    The avatar is the user's own, private (or with `catalogue=True`, staff only, public and
    owned by nobody). A PNG card becomes the avatar's image.
    """
    parsed = card_parse(
        content,
        max_bytes=settings.CARD_MAX_BYTES,
        max_pixels=int(getattr(settings, "CARD_IMAGE_MAX_PIXELS", CARD_IMAGE_MAX_PIXELS_DEFAULT)),
    )
    try:
        avatar_data_clean(parsed.fields)
    except InvalidInput as exc:
        raise _card_field_error(parsed, exc) from exc
    return avatar_create(
        user=user,
        data=parsed.fields,
        catalogue=catalogue,
        image_png=parsed.image_png,
        phrases=parsed.phrases,
        card_extensions=parsed.card_extensions,
    )


def _card_field_error(parsed: ParsedCard, exc: InvalidInput) -> CardInvalidField:
    source = parsed.sources.get(exc.field or "", exc.field)
    return CardInvalidField(f"Card field {source}: {exc.message}", field=source)


def _check_room_for_one_more(user: User) -> None:
    # Locking the owner's row serialises concurrent creations by the same user on PostgreSQL;
    # SQLite runs write transactions one at a time already (IMMEDIATE mode).
    User.objects.select_for_update().filter(pk=user.pk).first()
    limit = avatar_max_per_user()
    if avatar_count_owned(user=user) >= limit:
        raise AvatarLimitReached(f"You already have {limit} avatars, the most allowed; delete one to add another.")


def avatar_slug_base(*, name: str) -> str:
    base = slugify(name)[: SLUG_MAX - 10].strip("-")
    return base or SLUG_FALLBACK


def avatar_slug_next_free(*, base: str) -> str:
    taken = set(Avatar.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    if base not in taken:
        return base
    suffix = 2
    while f"{base}-{suffix}" in taken:
        suffix += 1
    return f"{base}-{suffix}"


def _save_with_unique_slug(avatar: Avatar) -> None:
    base = avatar_slug_base(name=avatar.name)
    for _ in range(SLUG_ATTEMPTS):
        avatar.slug = avatar_slug_next_free(base=base)
        try:
            # A savepoint, so that losing the race for a slug does not spoil the outer transaction.
            with transaction.atomic():
                avatar.save()
            return
        except IntegrityError:
            if not Avatar.objects.filter(slug=avatar.slug).exists():
                raise
    raise InvalidInput("Could not find a free slug for this name; try again.", field="name")
