"""CompiledQuery: the ORM's SQL compiled once, run with new arguments, rows converted as the ORM does."""

from typing import Any

import pytest
from django.db import connection
from django.db.models import QuerySet
from django.test.utils import CaptureQueriesContext

from avatars.models import Avatar
from conversations.models import Conversation
from core.db import CompiledQuery
from testing.support import AvatarFactory, ConversationFactory, UserFactory

pytestmark = pytest.mark.django_db


def _conversations(*, user_id: int, avatar_id: int, shape: int) -> QuerySet[Conversation, Any]:
    return (
        Conversation.objects.filter(user_id=user_id, avatar_id=avatar_id, mode="secretary")
        .order_by("-id")
        .values_list("id", "mode_locked", "created_at", "avatar__fallback_lines")[:shape]
    )


def _as_orm(*, user_id: int, avatar_id: int, shape: int) -> list[tuple[Any, ...]]:
    return list(_conversations(user_id=user_id, avatar_id=avatar_id, shape=shape))


def test_rows_are_what_the_orm_returns_converted_the_same_way() -> None:
    user = UserFactory()
    avatar = AvatarFactory(fallback_lines=["one moment", "sorry"])
    made = [ConversationFactory(user=user, avatar=avatar, mode="secretary", mode_locked=i == 1) for i in range(3)]
    ConversationFactory(user=user, avatar=avatar, mode="intimate")  # filtered out by a constant
    ConversationFactory(avatar=avatar, mode="secretary")  # another user's
    query = CompiledQuery(_conversations, arguments=("user_id", "avatar_id"))

    rows = query.rows(shape=2, user_id=user.pk, avatar_id=avatar.pk)

    assert rows == _as_orm(user_id=user.pk, avatar_id=avatar.pk, shape=2)
    assert [row[0] for row in rows] == [made[2].pk, made[1].pk]
    assert rows[1][1] is True  # a boolean, not SQLite's 1
    assert rows[0][2] == made[2].created_at  # an aware datetime, not a string
    assert rows[0][3] == ["one moment", "sorry"]  # JSON decoded


def test_it_compiles_once_per_shape_and_sends_the_same_sql() -> None:
    user = UserFactory()
    avatar = AvatarFactory()
    other = AvatarFactory()
    ConversationFactory(user=user, avatar=other, mode="secretary")
    built: list[int] = []

    def build(**arguments: Any) -> QuerySet[Conversation, Any]:
        built.append(arguments["shape"])
        return _conversations(**arguments)

    query = CompiledQuery(build, arguments=("user_id", "avatar_id"))
    with CaptureQueriesContext(connection) as orm:
        _as_orm(user_id=user.pk, avatar_id=other.pk, shape=5)
    with CaptureQueriesContext(connection) as ours:
        first = query.rows(shape=5, user_id=user.pk, avatar_id=avatar.pk)
        second = query.rows(shape=5, user_id=user.pk, avatar_id=other.pk)
        query.rows(shape=1, user_id=user.pk, avatar_id=other.pk)

    assert (first, len(second)) == ([], 1)  # the arguments of each call, not the first call's
    assert built == [5, 1]
    assert [q["sql"] for q in ours.captured_queries][1] == orm.captured_queries[0]["sql"]


def test_arguments_must_be_exactly_the_declared_ones() -> None:
    query = CompiledQuery(_conversations, arguments=("user_id", "avatar_id"))

    with pytest.raises(TypeError):
        query.rows(shape=1, user_id=1)
    with pytest.raises(TypeError):
        query.rows(shape=1, user_id=1, avatar_id=2, mode=3)


def test_an_argument_the_query_does_not_use_is_refused_when_compiling() -> None:
    def ignores_avatar(*, user_id: int, avatar_id: int) -> QuerySet[Avatar, Any]:
        return Avatar.objects.filter(owner_id=user_id).values_list("id")

    query = CompiledQuery(ignores_avatar, arguments=("user_id", "avatar_id"))

    with pytest.raises(ValueError, match="avatar_id"):
        query.rows(user_id=1, avatar_id=2)
