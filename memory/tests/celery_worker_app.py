"""The project's Celery app as the worker tests start it: `celery -A memory.tests.celery_worker_app worker`.

The same app, settings and tasks as `celery -A companion worker`; the environment only
narrows it for a test run:

- `MEMORY_TEST_QUEUE`: the queue the test's worker consumes and every task (including the
  follow-ups tasks send themselves) goes to, so concurrent runs on one Redis never meet;
- `MEMORY_TEST_VISIBILITY_TIMEOUT`: seconds before Redis hands an unacknowledged message
  (its worker was killed) to another worker, instead of kombu's default hour; the restore
  scan then runs every second.
"""

import os

from companion.celery import app

queue = os.environ.get("MEMORY_TEST_QUEUE")
if queue:
    app.conf.task_default_queue = queue

visibility_timeout = os.environ.get("MEMORY_TEST_VISIBILITY_TIMEOUT")
if visibility_timeout:
    app.conf.broker_transport_options = {
        "visibility_timeout": int(visibility_timeout),
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }

__all__ = ("app",)
