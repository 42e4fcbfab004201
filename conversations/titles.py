"""Automatic titles: after a conversation's first exchange, a short title written in the
background by the cheap model (`LLM_SUMMARY_MODEL`), or the first words of the user's message
when no model is configured or it fails. The call is counted like other background work (an
`llm.UsageRecord` of kind "title", on the user's day).

A conversation's `title_source` says who wrote its title: "avatar" (the avatar's name, at
creation), "auto" (this module) or "user" (a rename). Only a conversation still titled
"avatar" gets an automatic title, and the write is a compare-and-set on that value, so a
rename that lands while the model is writing always wins, and a second run writes nothing.
"""

import logging
from functools import partial

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction

from conversations.models import Conversation, Message, Role, Status
from conversations.tasks import title_conversation
from core import background
from core.logging import exception_data
from llm.base import CompletionParams, LLMProvider
from llm.errors import LLMError, Unavailable
from llm.models import UsageKind
from llm.prompts.titles import title_clean, title_from_words, title_prompt
from llm.quotas import usage_record_add
from memory.config import MemorySettings

logger = logging.getLogger("companion.conversations")

TITLE_MAX_TOKENS = 24


def conversation_title_schedule(*, conversation_id: int) -> None:
    """Queue the automatic title once the conversation has its first exchange and still bears
    the avatar's name; returns at once (the task runs after the transaction commits). Off
    with `CONVERSATION_TITLES_AUTO=false`."""
    if not getattr(settings, "CONVERSATION_TITLES_AUTO", True):
        return
    if not Conversation.objects.filter(pk=conversation_id, title_source="avatar").exists():
        return

    def title_enqueue() -> None:
        background.task_enqueue(title_conversation, conversation_id=conversation_id)

    transaction.on_commit(title_enqueue, robust=True)


def conversation_title_generate(*, conversation_id: int, provider: LLMProvider) -> str | None:
    """Write the automatic title; returns it, or None when the conversation has one already
    (the user's, or an earlier run's) or no exchange yet."""
    owner = Conversation.objects.filter(pk=conversation_id, title_source="avatar").values_list("user_id", "avatar_id")
    whose = owner.first()
    if whose is None:
        return None
    first = (
        Message.objects.filter(conversation_id=conversation_id, role=Role.USER, superseded=False)
        .order_by("id")
        .values_list("id", "content")
        .first()
    )
    if first is None:
        return None
    reply = (
        Message.objects.filter(
            reply_to_id=first[0], role=Role.ASSISTANT, superseded=False, status__in=[Status.COMPLETE, Status.CANCELLED]
        )
        .values_list("content", flat=True)
        .first()
    )
    title = ""
    if provider.configured and reply:
        config = MemorySettings.from_django_settings()
        params = CompletionParams(model=config.summary_model, temperature=0.2, max_tokens=TITLE_MAX_TOKENS)
        record = partial(
            usage_record_add,
            user_id=whose[0],
            avatar_id=whose[1],
            conversation_id=conversation_id,
            kind=UsageKind.TITLE,
            subject=f"conversation:{conversation_id}",
            model=params.model or provider.default_model,
        )
        try:
            completion = async_to_sync(provider.complete)(
                title_prompt(user_message=first[1], reply=reply), params=params
            )
        except LLMError as exc:
            # A title is a nicety: the first words do, no retry into a bill.
            logger.info("title model failed; first words instead", extra={"data": {"code": exc.code}})
            record(prompt_tokens=0, completion_tokens=0, outcome=exc.code)
        except Exception as exc:  # a provider broke its contract; its text may quote the prompt
            logger.error("provider raised an untyped error", extra={"data": exception_data(exc)})
            record(prompt_tokens=0, completion_tokens=0, outcome=Unavailable.code)
        else:
            usage = completion.usage
            if record(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens) is None:
                return None  # the account was erased while the model wrote
            title = title_clean(completion.text)
    title = title or title_from_words(first[1])
    if not title:
        return None
    written = Conversation.objects.filter(pk=conversation_id, title_source="avatar").update(
        title=title, title_source="auto"
    )
    return title if written else None
