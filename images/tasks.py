"""Making pictures in the background (Celery): the task takes an id, re-fetches, calls one service.

- Idempotent: `images.services.image_generate` claims the row before its one provider call,
  so a redelivered task (acks_late, a worker killed) or a second send of the same id makes no
  second call while the first holds the claim, and none once the picture is made.
- Two attempts at most: a failure that may pass (a timeout, a 429, a 5xx, a download that did
  not answer) is retried once after `IMAGE_RETRY_SECONDS` (doubled with a broker, jittered);
  a content-policy refusal is never retried; the second failure ends the picture `failed`.
- Time limits: the soft one ends the picture `failed` (`image_timeout`), the hard one kills
  the attempt; beat's `images.stalled_requeue` queues again a picture whose claim expired (or
  whose task was lost), at most `ATTEMPTS_MAX` provider calls in all.

Without `REDIS_URL` the task runs on the project's in-process background thread
(`core.background.task_enqueue`), which does the retry after the pause the task asks for.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from django.conf import settings

from images.errors import ImageFailed

logger = logging.getLogger("companion.images")

RETRY_MAX = 1


@shared_task(
    name="images.generate",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=RETRY_MAX,
    ignore_result=True,
    soft_time_limit=110,
    time_limit=150,
)
def image_generate(self: Task[Any, Any], image_id: int) -> str:
    from images.registry import image_provider_get
    from images.services import image_generate as generate
    from images.services import image_give_up

    retries = self.request.retries or 0
    try:
        return generate(image_id=image_id, provider=image_provider_get(), last_attempt=retries >= RETRY_MAX)
    except SoftTimeLimitExceeded:
        image_give_up(image_id=image_id, code="image_timeout", error="Making the picture took too long.")
        return "failed"
    except ImageFailed as exc:
        pause = float(settings.IMAGE_RETRY_SECONDS) * (2**retries)
        logger.info("picture will be tried again", extra={"data": {"image_id": image_id, "code": exc.error_code}})
        if self.request.is_eager:
            raise Retry(exc=exc, when=datetime.now(UTC) + timedelta(seconds=pause)) from exc
        raise self.retry(exc=exc, countdown=pause) from exc


@shared_task(name="images.stalled_requeue", soft_time_limit=30, time_limit=60, ignore_result=True)
def images_stalled_requeue() -> int:
    """Beat, every minute: pictures whose task was lost or whose attempt died, queued again (or failed)."""
    from images.services import images_stalled_requeue as requeue

    return requeue()
