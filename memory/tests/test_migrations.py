"""An existing database upgrades to the memory app without losing a summary, a fact or a permission."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.apps.registry import Apps
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from conversations.models import Conversation
from memory.models import Memory, Summary

LAST_WITH_MEMORY_IN_CONVERSATIONS = ("conversations", "0002_summary_covers_until_cascade")


def migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()


def _latest_before(executor: MigrationExecutor, leaf: tuple[str, str], later: tuple[str, ...]) -> tuple[str, str]:
    """The app's latest migration that needs no later app (an avatars migration that refers to a
    picture needs images, hence a newer conversations: the one before it)."""
    graph = executor.loader.graph
    allowed = set(graph.forwards_plan(LAST_WITH_MEMORY_IN_CONVERSATIONS))
    node = leaf
    while any(n[0] in later and n not in allowed for n in graph.forwards_plan(node)):
        [node] = [parent.key for parent in graph.node_map[node].parents if parent.key[0] == node[0]]
    return node


@pytest.fixture
def old_database(transactional_db: None) -> Iterator[Apps]:
    """Every app at its latest migration that needs no later app but memory, secretary, llm, images and
    recall (none; they came later and need a newer conversations) and conversations (0002); back to the
    latest after."""
    executor = MigrationExecutor(connection)
    later = ("conversations", "memory", "secretary", "llm", "images", "recall")
    before = [
        *(_latest_before(executor, node, later) for node in executor.loader.graph.leaf_nodes() if node[0] not in later),
        LAST_WITH_MEMORY_IN_CONVERSATIONS,
    ]
    executor.migrate([*before, *((app, None) for app in later if app != "conversations")])
    yield executor.loader.project_state(before).apps
    migrate_to_latest()


def test_an_existing_database_keeps_its_summaries_facts_and_permissions(old_database: Apps) -> None:
    # Given a database from before: a summary, a pinned fact, and a group allowed to change facts
    old: Any = old_database  # its models are the historical ones: Summary and Memory of conversations
    user = old.get_model("auth", "User").objects.create(username="sam")
    avatar = old.get_model("avatars", "Avatar").objects.create(name="Luna", slug="luna", owner_id=user.pk)
    conversation = old.get_model("conversations", "Conversation").objects.create(user_id=user.pk, avatar_id=avatar.pk)
    message = old.get_model("conversations", "Message").objects.create(
        conversation_id=conversation.pk, role="user", content="My name is Sam.", mode="secretary"
    )
    old.get_model("conversations", "Summary").objects.create(
        conversation_id=conversation.pk, text="They met.", covers_until_id=message.pk
    )
    old.get_model("conversations", "Memory").objects.create(
        user_id=user.pk, avatar_id=avatar.pk, key="name", text="Sam.", pinned=True, source_message_id=message.pk
    )
    old_types = old.get_model("contenttypes", "ContentType").objects
    memory_type = old_types.get(app_label="conversations", model="memory")
    permission = old.get_model("auth", "Permission").objects.get(content_type=memory_type, codename="change_memory")
    editors = old.get_model("auth", "Group").objects.create(name="memory editors")
    editors.permissions.add(permission)

    # When the new migrations run
    migrate_to_latest()

    # Then the rows are read through the memory app, by the same related names
    assert list(Summary.objects.values_list("conversation_id", "text", "covers_until_id")) == [
        (conversation.pk, "They met.", message.pk)
    ]
    assert list(Memory.objects.values_list("user_id", "avatar_id", "key", "text", "pinned", "source_message_id")) == [
        (user.pk, avatar.pk, "name", "Sam.", True, message.pk)
    ]
    assert list(Conversation.objects.values_list("summary__text", flat=True)) == ["They met."]
    # and the content types moved, ids and all, so the group keeps its permission and no stale one is left
    assert ContentType.objects.get_for_model(Memory).pk == memory_type.pk
    assert not ContentType.objects.filter(app_label="conversations", model__in=["summary", "memory"]).exists()
    assert list(
        Group.objects.get(name="memory editors").permissions.values_list("content_type__app_label", "codename")
    ) == [("memory", "change_memory")]
