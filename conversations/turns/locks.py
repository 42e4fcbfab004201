"""How many turns may run: a message rate per user, one reply at a time per conversation,
and a few at once per user.

All three live in the cache (Redis across processes) with a time to live, so a crashed
process cannot hold a lock longer than TURN_LOCK_SECONDS. A cache that does not answer
refuses the turn with `Unavailable` (nothing is stored); a lock that cannot be given back
because Redis went away mid-turn is left to its time to live.
"""

import contextlib
import logging
import time
from collections.abc import Iterator

from django.conf import settings
from django.core.cache import cache

from core.errors import DomainError, Throttled
from core.outage import OUTAGE_ERRORS, redis_needed

logger = logging.getLogger("companion.turns")


class Busy(DomainError):
    code = "busy"
    status_code = 409
    retryable = True


@redis_needed()
def message_rate_check(*, user_id: int) -> None:
    """Count one message of the user in this minute; `Throttled` past MESSAGE_RATE_PER_MINUTE."""
    limit: int = getattr(settings, "MESSAGE_RATE_PER_MINUTE", 30)
    window = int(time.time() // 60)
    key = f"msg-rate:{user_id}:{window}"
    cache.add(key, 0, timeout=70)
    if cache.incr(key) > limit:
        raise Throttled(f"Too many messages: at most {limit} a minute.", retry_after=60 - int(time.time() % 60))


@redis_needed()
def turn_locks_acquire(*, user_id: int, conversation_id: int) -> None:
    """Take the conversation's lock and one of the user's reply slots, or raise `Busy` / `Throttled`."""
    lock_seconds: int = getattr(settings, "TURN_LOCK_SECONDS", 300)
    if not cache.add(_conversation_key(conversation_id), 1, timeout=lock_seconds):
        raise Busy("A reply is still being generated in this conversation; wait for it or stop it.")
    replies_key = _user_replies_key(user_id)
    cache.add(replies_key, 0, timeout=lock_seconds)
    limit: int = getattr(settings, "REPLIES_CONCURRENT_PER_USER", 3)
    if cache.incr(replies_key) > limit:
        turn_locks_release(user_id=user_id, conversation_id=conversation_id)
        raise Throttled(f"At most {limit} replies can be generated at once; wait for one to finish.", retry_after=5)


@contextlib.contextmanager
def conversation_lock_held(*, conversation_id: int) -> Iterator[None]:
    """The conversation's lock for a short write that must not cross a reply in flight
    (forgetting a message, selecting an alternative): `Busy` while a reply streams."""
    lock_seconds: int = getattr(settings, "TURN_LOCK_SECONDS", 300)
    if not cache.add(_conversation_key(conversation_id), 1, timeout=lock_seconds):
        raise Busy("A reply is still being generated in this conversation; wait for it or stop it.")
    try:
        yield
    finally:
        cache.delete(_conversation_key(conversation_id))


def turn_locks_release(*, user_id: int, conversation_id: int) -> None:
    """Give the locks back. Never raises for an outage: it runs after the reply is stored, and in
    cleanups whose own error must not be hidden; the locks then expire with their time to live."""
    try:
        cache.delete(_conversation_key(conversation_id))
        with contextlib.suppress(ValueError):  # the counter expired meanwhile: nothing to give back
            cache.decr(_user_replies_key(user_id))
    except OUTAGE_ERRORS:
        logger.warning(
            "the cache did not answer: the turn's locks expire on their own",
            extra={"data": {"conversation_id": conversation_id}},
        )


def _conversation_key(conversation_id: int) -> str:
    return f"turn-lock:{conversation_id}"


def _user_replies_key(user_id: int) -> str:
    return f"user-replies:{user_id}"
