"""Fixtures of the secretary's tests: the real Celery workers of memory's worker tests, reused."""

from memory.tests.test_celery_worker import queue, redis_client, services, start_worker

__all__ = ["queue", "redis_client", "services", "start_worker"]
