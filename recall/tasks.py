"""Background work of recall: writing the documents of a stored turn (no model call)."""

from celery import shared_task


@shared_task(name="recall.index_conversation", acks_late=True, soft_time_limit=60, time_limit=90)
def index_conversation(*, conversation_id: int) -> int:
    from recall.services import recall_index_conversation

    return recall_index_conversation(conversation_id=conversation_id)
