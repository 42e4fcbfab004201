"""Background work of accounts (Celery tasks): interfaces that call one service."""

from celery import shared_task

from accounts import services


# The name is what beat and the queue know it by: it stays whatever this module is called.
@shared_task(name="accounts.api_token_delete_expired", soft_time_limit=300, time_limit=360, ignore_result=True)
def api_token_delete_expired() -> int:
    """Beat, daily: delete expired API tokens; returns how many."""
    return services.api_token_delete_expired()
