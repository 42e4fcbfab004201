"""Pictures in a conversation, over the websocket: asked in words or with an `image` frame, sent
to every device, stored, paid once; a forbidden one refused in the chat with no call made."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations.models import Conversation, Message, Role
from core.background import in_process_tasks_wait
from images.models import Image
from images.providers.fake import FakeImageProvider
from llm.models import UsageDay
from llm.testing import provider_configured
from testing.support import AvatarFactory, ConversationFactory, UserFactory, ws_connect, ws_receive_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fake_model() -> Iterator[None]:
    with provider_configured("fake"):
        yield


def _conversations() -> tuple[Conversation, Conversation]:
    user = UserFactory(username="sam")
    avatar = AvatarFactory(name="Mia", appearance="red hair, green eyes")
    return ConversationFactory(user=user, avatar=avatar), ConversationFactory(user=user, avatar=avatar)


@pytest.fixture
async def conversations() -> tuple[Conversation, Conversation]:
    return await database_sync_to_async(_conversations)()


async def test_asking_for_a_picture_in_words_brings_it_to_every_device(
    conversations: tuple[Conversation, Conversation], fake_pictures: FakeImageProvider
) -> None:
    conversation, elsewhere = conversations
    phone, tablet = await ws_connect(conversation), await ws_connect(conversation)
    other_chat = await ws_connect(elsewhere)  # the same user, another conversation: told when it is ready too

    await phone.send_to(text_data=json.dumps({"type": "message", "content": "send me a picture of you at the beach"}))

    for socket in (phone, tablet):
        frames = await ws_receive_until(socket, "reply.end")
        assert frames[-1]["status"] == "complete"
        created = (await ws_receive_until(socket, "message.created"))[-1]["message"]
        assert created["role"] == "assistant"
        assert created["image"]["status"] == "pending"
        ready = (await ws_receive_until(socket, "image.ready"))[-1]
        assert ready["message_id"] == created["id"]
        assert ready["image"]["status"] == "ready"
        assert ready["image"]["url"] == f"/api/images/{created['image']['id']}/file"
    told = (await ws_receive_until(other_chat, "image.ready"))[-1]
    assert told["message_id"] == created["id"]

    assert len(fake_pictures.calls) == 1
    assert "at the beach" in fake_pictures.calls[0]
    image = await database_sync_to_async(Image.objects.get)()
    assert image.conversation_id == conversation.pk
    assert image.request_text == "you at the beach"
    message = await database_sync_to_async(Message.objects.get)(pk=created["id"])
    assert message.image_id == image.pk
    for socket in (phone, tablet, other_chat):
        await socket.disconnect()


async def test_the_same_message_delivered_twice_makes_one_picture(
    conversations: tuple[Conversation, Conversation], fake_pictures: FakeImageProvider
) -> None:
    conversation, _ = conversations
    phone = await ws_connect(conversation)
    frame = {"type": "message", "content": "can you send a selfie?", "client_id": "c-1"}

    await phone.send_to(text_data=json.dumps(frame))
    await ws_receive_until(phone, "image.ready")
    await phone.send_to(text_data=json.dumps(frame))
    await ws_receive_until(phone, "reply.end")
    await database_sync_to_async(in_process_tasks_wait)()

    assert len(fake_pictures.calls) == 1
    assert await database_sync_to_async(Image.objects.count)() == 1
    await phone.disconnect()


async def test_an_image_frame_asks_for_a_picture_directly(
    conversations: tuple[Conversation, Conversation], fake_pictures: FakeImageProvider
) -> None:
    conversation, _ = conversations
    phone = await ws_connect(conversation)

    await phone.send_to(text_data=json.dumps({"type": "image", "prompt": "you reading in a café", "client_id": "i-1"}))

    created = (await ws_receive_until(phone, "message.created"))[-1]["message"]
    assert created["image"]["status"] == "pending"
    ready = (await ws_receive_until(phone, "image.ready"))[-1]
    assert ready["image"]["status"] == "ready"
    assert "reading in a café" in fake_pictures.calls[0]

    await phone.send_to(text_data=json.dumps({"type": "image", "prompt": "you reading in a café", "client_id": "i-1"}))
    again = (await ws_receive_until(phone, "message.created"))[-1]["message"]
    assert again["id"] == created["id"]
    assert len(fake_pictures.calls) == 1
    await phone.disconnect()


async def test_a_forbidden_picture_is_refused_in_the_chat_with_no_call(
    conversations: tuple[Conversation, Conversation], fake_pictures: FakeImageProvider
) -> None:
    conversation, _ = conversations
    phone = await ws_connect(conversation)

    await phone.send_to(text_data=json.dumps({"type": "image", "prompt": "you naked in the shower"}))
    refused = (await ws_receive_until(phone, "message.created"))[-1]["message"]

    assert refused["image"]["status"] == "refused"
    assert refused["image"]["error"]["code"] == "image_refused"
    assert refused["content"] == refused["image"]["error"]["message"]
    assert "never sexual" in refused["content"]

    await phone.send_to(text_data=json.dumps({"type": "message", "content": "send me a photo of you with my ex"}))
    await ws_receive_until(phone, "reply.end")
    in_words = (await ws_receive_until(phone, "message.created"))[-1]["message"]
    assert in_words["image"]["status"] == "refused"
    assert "real people" in in_words["content"]

    await database_sync_to_async(in_process_tasks_wait)()
    assert fake_pictures.calls == []
    assert await database_sync_to_async(lambda: UsageDay.objects.filter(images__gt=0).exists())() is False
    await phone.disconnect()


async def test_over_the_image_quota_the_chat_says_so_and_nothing_is_called(
    conversations: tuple[Conversation, Conversation], fake_pictures: FakeImageProvider, settings: Any
) -> None:
    settings.QUOTA_DAILY_IMAGES = 0
    conversation, _ = conversations
    phone = await ws_connect(conversation)

    await phone.send_to(text_data=json.dumps({"type": "image", "prompt": "you in the park"}))
    # this socket's error frame may come before the message, which goes round every socket's group
    frames = await ws_receive_until(phone, "message.created")
    if "error" not in [frame["type"] for frame in frames]:
        frames += await ws_receive_until(phone, "error")
    refused = next(frame["message"] for frame in frames if frame["type"] == "message.created")
    error = next(frame for frame in frames if frame["type"] == "error")

    assert refused["image"]["status"] == "refused"
    assert refused["image"]["error"]["code"] == "quota_exceeded"
    # and, as for any spent quota (CONTRACT.md), an error frame saying when it resets
    assert (error["code"], error["retryable"]) == ("quota_exceeded", False)
    assert 0 < error["retry_after"] <= 24 * 3600 + 3600

    # asked for in words: the reply comes, then the refused picture and the same error frame
    await phone.send_to(text_data=json.dumps({"type": "message", "content": "send me a photo of you at the beach"}))
    frames = await ws_receive_until(phone, "error")
    assert "reply.end" in [frame["type"] for frame in frames]
    assert frames[-1]["code"] == "quota_exceeded"
    assert frames[-2]["message"]["image"]["error"]["code"] == "quota_exceeded"

    await database_sync_to_async(in_process_tasks_wait)()
    assert fake_pictures.calls == []
    await phone.disconnect()


async def test_a_bad_image_frame_is_an_error_frame(conversations: tuple[Conversation, Conversation]) -> None:
    conversation, _ = conversations
    phone = await ws_connect(conversation)

    await phone.send_to(text_data=json.dumps({"type": "image", "prompt": "x" * 401}))
    error = (await ws_receive_until(phone, "error"))[-1]

    assert (error["code"], error["field"]) == ("invalid", "prompt")
    assert await database_sync_to_async(Message.objects.filter(role=Role.ASSISTANT).count)() == 0
    await phone.disconnect()


def test_the_messages_page_carries_the_picture(client: Any, bearer_for: Any, fake_pictures: FakeImageProvider) -> None:
    from images.services import chat_picture_request

    conversation, _ = _conversations()
    picture = chat_picture_request(conversation=conversation, request_text="you at the beach")
    in_process_tasks_wait()

    page = client.get(f"/api/conversations/{conversation.pk}/messages", headers=bearer_for(conversation.user)).json()

    [item] = [m for m in page["items"] if m["id"] == picture.message.pk]
    assert item["image"] == {
        "id": picture.image.pk,
        "status": "ready",
        "url": f"/api/images/{picture.image.pk}/file",
        "error": None,
    }


def test_erasing_the_account_deletes_the_picture_files(picture_storage: Any, fake_pictures: FakeImageProvider) -> None:
    from accounts.erasure import user_erase_unchecked
    from images.services import chat_picture_request

    conversation, _ = _conversations()
    chat_picture_request(conversation=conversation, request_text="you at the beach")
    in_process_tasks_wait()
    [stored] = list(picture_storage.rglob("*.webp"))

    user_erase_unchecked(user_id=conversation.user_id)

    assert not stored.exists()
    assert not Image.objects.exists()


def test_deleting_the_conversation_deletes_its_picture_files(
    picture_storage: Any, fake_pictures: FakeImageProvider
) -> None:
    from conversations.services import conversation_delete
    from images.services import chat_picture_request

    conversation, elsewhere = _conversations()
    chat_picture_request(conversation=conversation, request_text="you at the beach")
    chat_picture_request(conversation=elsewhere, request_text="you in the rain")
    in_process_tasks_wait()
    kept = Image.objects.get(conversation=elsewhere).file.name or ""

    conversation_delete(conversation=conversation)

    assert [path.name for path in picture_storage.rglob("*.webp")] == [kept.rsplit("/", 1)[-1]]
    assert Image.objects.count() == 1


def test_the_reply_to_a_picture_request_is_told_the_picture_follows(fake_pictures: FakeImageProvider) -> None:
    from llm.fake import FakeProvider
    from testing.support import turn_frames

    conversation, _ = _conversations()
    model = FakeProvider()

    frames = turn_frames(conversation, "can you send me a selfie?", model)
    turn_frames(conversation, "what a lovely day", model)

    asked, plain = ("\n".join(m.content for m in call if m.role == "system") for call in model.calls)
    assert "the app sends it right after your reply" in asked
    assert "the app sends it" not in plain
    picture = next(
        f["message"] for f in frames if f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    assert picture["image"]["status"] == "pending"
    assert len(fake_pictures.calls) == 1
