"""The embedded channel layer: the same deliveries as Channels' in-memory layer, swept less often."""

import asyncio

import pytest
from asgiref.sync import async_to_sync

from core.layers import InMemoryChannelLayer


def test_a_group_send_reaches_every_member_with_its_own_copy_in_order() -> None:
    layer = InMemoryChannelLayer()

    async def scenario() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        phone, tablet = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("conversation.1", phone)
        await layer.group_add("conversation.1", tablet)
        await layer.group_add("conversation.2", await layer.new_channel())
        for seq in range(3):
            await layer.group_send("conversation.1", {"type": "turn.event", "seq": seq})
        return [await layer.receive(phone) for _ in range(3)], [await layer.receive(tablet) for _ in range(3)]

    phone, tablet = async_to_sync(scenario)()

    assert [m["seq"] for m in phone] == [0, 1, 2]
    assert [m["seq"] for m in tablet] == [0, 1, 2]
    assert phone[0] is not tablet[0]


def test_a_full_member_misses_the_message_and_the_others_still_get_it() -> None:
    layer = InMemoryChannelLayer(capacity=1)

    async def scenario() -> tuple[dict[str, object], dict[str, object], bool]:
        full, free = await layer.new_channel(), await layer.new_channel()
        await layer.send(full, {"type": "first"})
        await layer.group_add("g", full)
        await layer.group_add("g", free)
        await layer.group_send("g", {"type": "second"})
        return await layer.receive(full), await layer.receive(free), full in layer.channels

    on_full, on_free, full_has_more = async_to_sync(scenario)()

    assert on_full == {"type": "first"}
    assert on_free == {"type": "second"}
    assert full_has_more is False


def test_expired_messages_are_still_swept_and_their_channel_leaves_its_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = InMemoryChannelLayer(expiry=0)
    monkeypatch.setattr(InMemoryChannelLayer, "clean_interval_seconds", 0.0)

    async def scenario() -> tuple[bool, bool]:
        gone = await layer.new_channel()
        await layer.group_add("g", gone)
        await layer.send(gone, {"type": "stale"})
        await asyncio.sleep(0.01)
        await layer.group_send("g2", {"type": "anything"})  # any send sweeps
        return gone in layer.channels, gone in layer.groups.get("g", {})

    still_queued, still_member = async_to_sync(scenario)()

    assert still_queued is False
    assert still_member is False


def test_between_sweeps_nothing_is_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = InMemoryChannelLayer()
    sweeps: list[int] = []
    monkeypatch.setattr(
        "channels.layers.InMemoryChannelLayer._clean_expired", lambda self: sweeps.append(1), raising=True
    )

    async def scenario() -> None:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        for _ in range(100):
            await layer.group_send("g", {"type": "token"})
            await layer.receive(channel)

    async_to_sync(scenario)()

    assert sweeps == [1]
