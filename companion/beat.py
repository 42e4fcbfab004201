"""The Celery beat schedule: `CELERY_BEAT_SCHEDULE = BEAT_SCHEDULE` in settings.

Run with `celery -A companion beat` beside the worker (only with `REDIS_URL`; without it
there is no beat, and each turn checks for a due summary itself). Plain values only: the
settings module imports this, so nothing here may import Django apps or tasks; the tasks
are named by their explicit Celery names.
"""

from typing import Any

from celery.schedules import crontab

SUMMARY_SWEEP_SECONDS = 5 * 60

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Catches conversations whose summary enqueue was lost (memory.services.summary_sweep).
    "summarize-sweep": {
        "task": "conversations.summarize_sweep",
        "schedule": float(SUMMARY_SWEEP_SECONDS),
        # A sweep still queued when the next one is due is worth nothing: drop it.
        "options": {"expires": SUMMARY_SWEEP_SECONDS - 30},
    },
    # Expired API tokens (accounts.services.api_token_delete_expired), at a quiet hour.
    "api-token-delete-expired": {
        "task": "accounts.api_token_delete_expired",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 6 * 3600},
    },
}
