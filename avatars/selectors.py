"""Reads of avatars, always through what the user may see.

Visibility: the public catalogue plus the user's own avatars. Another user's private avatar
does not exist as far as this user can tell (`NotFound`, a 404, never a 403). A visible
avatar the user does not own (the catalogue) can be read but not written: `AvatarReadOnly`.
"""

from typing import Final

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet
from django.db.models.functions import Lower

from avatars.errors import AvatarReadOnly
from avatars.models import Avatar
from core.errors import NotFound

DEFAULT_FALLBACK_LINES: Final = (
    "Sorry, I lost my train of thought for a moment. Could you say that again in a little while?",
    "Give me a moment, my head is somewhere else right now. Try me again shortly?",
    "I can't find my words just now. Let's pick this up again in a minute.",
)


def _visible_filter(user: User | AnonymousUser) -> Q:
    if not user.is_authenticated:
        return Q(is_public=True)
    return Q(is_public=True) | Q(owner_id=user.pk)


def avatar_list_visible(
    *, user: User | AnonymousUser, q: str | None = None, tag: str | None = None
) -> QuerySet[Avatar]:
    """The public catalogue and the user's own avatars, by name.

    `q` matches name, tagline or description (case-insensitive); `tag` matches one tag
    exactly, ignoring case.
    """
    avatars = Avatar.objects.filter(_visible_filter(user))
    if q and q.strip():
        term = q.strip()
        avatars = avatars.filter(Q(name__icontains=term) | Q(tagline__icontains=term) | Q(description__icontains=term))
    if tag and tag.strip():
        # JSON `contains` does not exist on SQLite, so the (small) id/tags pairs are matched here;
        # the result stays a queryset for the caller.
        wanted = tag.strip().casefold()
        ids = [
            avatar_id
            for avatar_id, tags in avatars.values_list("id", "tags")
            if isinstance(tags, list) and any(isinstance(t, str) and t.casefold() == wanted for t in tags)
        ]
        avatars = avatars.filter(id__in=ids)
    return avatars.select_related("portrait").order_by(Lower("name"), "id")


def avatar_get_visible(*, user: User | AnonymousUser, avatar_id: int) -> Avatar:
    avatar = Avatar.objects.filter(_visible_filter(user), id=avatar_id).first()
    if avatar is None:
        raise NotFound("Avatar not found.")
    return avatar


def avatar_get_owned(*, user: User | AnonymousUser, avatar_id: int) -> Avatar:
    """The user's own avatar, for writes.

    A catalogue avatar the user can see but does not own raises `AvatarReadOnly` (403,
    code "read_only"): telling them it exists leaks nothing. Anything else not theirs is
    `NotFound`.
    """
    avatar = avatar_get_visible(user=user, avatar_id=avatar_id)
    if avatar.owner_id is None or avatar.owner_id != user.pk:
        raise AvatarReadOnly("This avatar belongs to the catalogue and cannot be changed.")
    return avatar


def avatar_count_owned(*, user: User) -> int:
    return Avatar.objects.filter(owner_id=user.pk).count()


def avatar_fallback_lines(avatar: Avatar) -> list[str]:
    """What the avatar says when the language model cannot answer: its own lines, else defaults."""
    stored = avatar.fallback_lines if isinstance(avatar.fallback_lines, list) else []
    lines = [line.strip() for line in stored if isinstance(line, str) and line.strip()]
    return lines or list(DEFAULT_FALLBACK_LINES)
