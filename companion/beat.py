"""The Celery beat schedule: `CELERY_BEAT_SCHEDULE = BEAT_SCHEDULE` in settings.

Run with `celery -A companion beat` beside the worker (only with `REDIS_URL`; without it
there is no beat, and each turn checks for a due summary itself). Plain values only: the
settings module imports this, so nothing here may import Django apps or tasks; the tasks
are named by their explicit Celery names.
"""

from typing import Any

from celery.schedules import crontab

SUMMARY_SWEEP_SECONDS = 5 * 60
# A reminder is delivered within 5 s of its time (CONTRACT.md): beat sends the delivery every 2 s.
REMINDERS_DELIVER_SECONDS = 2.0
PROACTIVE_SWEEP_SECONDS = 60.0

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Catches conversations whose summary enqueue was lost (memory.services.summary_sweep).
    "summarize-sweep": {
        "task": "conversations.summarize_sweep",
        "schedule": float(SUMMARY_SWEEP_SECONDS),
        # A sweep still queued when the next one is due is worth nothing: drop it.
        "options": {"expires": SUMMARY_SWEEP_SECONDS - 30},
    },
    # Due reminders (secretary.delivery): claimed, so overlapping runs never send twice.
    "reminders-deliver-due": {
        "task": "secretary.reminders_deliver_due",
        "schedule": REMINDERS_DELIVER_SECONDS,
        "options": {"expires": REMINDERS_DELIVER_SECONDS},
    },
    # Check-ins after a silence (secretary.proactive).
    "proactive-sweep": {
        "task": "secretary.proactive_sweep",
        "schedule": PROACTIVE_SWEEP_SECONDS,
        "options": {"expires": PROACTIVE_SWEEP_SECONDS - 10},
    },
    # Pictures whose task was lost or whose attempt died (images.services.images_stalled_requeue).
    "images-stalled-requeue": {
        "task": "images.stalled_requeue",
        "schedule": 60.0,
        "options": {"expires": 50},
    },
    # Expired API tokens (accounts.services.api_token_delete_expired), at a quiet hour.
    "api-token-delete-expired": {
        "task": "accounts.api_token_delete_expired",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 6 * 3600},
    },
}
