"""Background work of the secretary (Celery tasks, sent by beat: companion/beat.py).

Interfaces only: each runs one service with the configured provider. Both are idempotent
(a claimed reminder or a check-in is spent with its message, in one transaction:
secretary/delivery.py, secretary/proactive.py), so they run with `acks_late` and
`reject_on_worker_lost`: a worker killed mid-run leaves the message to be delivered again,
and the redelivered run sends nothing twice. Beat's entries expire within their period: a
run still queued when the next one is due is worth nothing.
"""

from typing import Any

from asgiref.sync import async_to_sync
from celery import shared_task

from memory.tasks import provider_for_tasks

_OPTIONS: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(name="secretary.reminders_deliver_due", soft_time_limit=50, time_limit=60, **_OPTIONS)
def reminders_deliver_due() -> int:
    """Deliver the due reminders; returns how many messages were stored."""
    from secretary import delivery

    report = async_to_sync(delivery.reminders_deliver_due)(provider=provider_for_tasks())
    return report.delivered


@shared_task(name="secretary.proactive_sweep", soft_time_limit=50, time_limit=60, **_OPTIONS)
def proactive_sweep() -> int:
    """Send the check-ins that are due; returns how many were stored."""
    from secretary import proactive

    sent: int = async_to_sync(proactive.proactive_sweep)(provider=provider_for_tasks())
    return sent
