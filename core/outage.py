"""Redis away: one name for its errors, one translation to `Unavailable`, one way to name its URL.

With `REDIS_URL` the cache (tickets, turn locks, login counters), the channel layer and the
Celery broker are all that one Redis. When it does not answer, a request that needs it is
refused with `Unavailable` (503 `unavailable`, retryable) instead of failing with whatever
redis-py or kombu raised; the process keeps serving and recovers by itself once Redis
answers again (every client here reconnects on its next use).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import kombu.exceptions
import redis.exceptions

from core.errors import Unavailable

# redis-py's (the cache, channels_redis) and kombu's (Celery's broker) "could not reach it".
# BusyLoadingError (a Redis still loading its data) is a ConnectionError.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)

UNAVAILABLE_MESSAGE = "The service is briefly unavailable (a backing service does not answer). Try again shortly."


@contextmanager
def redis_needed() -> Iterator[None]:
    """Raise `Unavailable` for an outage inside the block (also usable as a decorator)."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        raise Unavailable(UNAVAILABLE_MESSAGE) from exc


def url_redacted(url: str) -> str:
    """The URL without its user and password, for a log line: `redis://:secret@host:6379/0` -> `redis://host:6379/0`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
