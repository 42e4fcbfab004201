"""Background work of conversations (Celery tasks): the automatic title.

A task is an interface: it takes ids, re-fetches and calls one service with the configured
provider. The service is imported inside the task: `conversations.titles` imports this
module to send it.
"""

from celery import shared_task


@shared_task(name="conversations.title_conversation", soft_time_limit=30, time_limit=45, ignore_result=True)
def title_conversation(conversation_id: int) -> str | None:
    """Title the conversation from its first exchange, unless it has a title already. Idempotent."""
    from conversations.titles import conversation_title_generate
    from llm.registry import provider_get

    return conversation_title_generate(conversation_id=conversation_id, provider=provider_get())
