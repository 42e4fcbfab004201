"""Counters against password guessing and sign-up floods, kept in Django's cache.

The cache is local memory by default and Redis when `REDIS_URL` is set, so with Redis every
server process shares the counts. Each counter is a window that opens at its first hit and
closes `window` seconds later, when the cache expires it; `cache.add` and `cache.incr` keep
the counting atomic on both backends. Keys carry a hash of the username, never the name.
"""

import contextlib
import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from core.errors import Throttled
from core.outage import redis_needed

_KEY_PREFIX = "accounts:throttle"
_REGISTER_WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class _Counter:
    key: str
    limit: int
    window: int

    @property
    def deadline_key(self) -> str:
        return f"{self.key}:deadline"


def _now() -> float:
    # One seam, so tests can pin the clock that Retry-After is computed from.
    return time.time()


def client_ip(request: HttpRequest) -> str | None:
    """The address the request came from, as the server saw it.

    `X-Forwarded-For` is ignored on purpose: any client can write it, so trusting it would let
    an attacker pick a fresh address for every guess. Behind a reverse proxy, the proxy must
    set `REMOTE_ADDR` (uvicorn's `--proxy-headers` with `--forwarded-allow-ips`).
    """
    address = request.META.get("REMOTE_ADDR")
    return address or None


def _ip_key_part(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return hashlib.sha256(address.encode()).hexdigest()[:32]
    if parsed.version == 6:
        # One IPv6 host usually holds a whole /64; counting single addresses would be no limit.
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False).network_address)
    return str(parsed)


def _username_key_part(username: str) -> str:
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


def _counter_hit(counter: _Counter) -> int:
    """Count one hit and return the count in the current window."""
    for _ in range(2):
        if cache.add(counter.key, 1, timeout=counter.window):
            cache.set(counter.deadline_key, _now() + counter.window, timeout=counter.window)
            return 1
        try:
            return int(cache.incr(counter.key))
        except ValueError:
            # The window closed between `add` and `incr`: open a new one.
            continue
    return 1


def _counter_undo(counter: _Counter) -> None:
    # A ValueError means the window already closed: nothing is left to undo.
    with contextlib.suppress(ValueError):
        cache.decr(counter.key)


def _counter_retry_after(counter: _Counter) -> int:
    deadline = cache.get(counter.deadline_key)
    if deadline is None:
        return counter.window
    return max(1, math.ceil(float(deadline) - _now()))


@redis_needed()
def _counters_hit(counters: list[_Counter], *, message: str) -> None:
    counts = [_counter_hit(counter) for counter in counters]
    spent = [counter for counter, count in zip(counters, counts, strict=True) if count > counter.limit]
    if spent:
        # A refused attempt was never tried, so it must not count (nor lock the other key).
        for counter in counters:
            _counter_undo(counter)
        raise Throttled(message, retry_after=max(_counter_retry_after(counter) for counter in spent))


def _login_counters(*, username: str, ip: str | None) -> list[_Counter]:
    window = settings.LOGIN_THROTTLE_WINDOW_SECONDS
    counters = [
        _Counter(
            key=f"{_KEY_PREFIX}:login:user:{_username_key_part(username)}",
            limit=settings.LOGIN_THROTTLE_PER_USERNAME,
            window=window,
        )
    ]
    if ip:
        counters.append(
            _Counter(
                key=f"{_KEY_PREFIX}:login:ip:{_ip_key_part(ip)}", limit=settings.LOGIN_THROTTLE_PER_IP, window=window
            )
        )
    return counters


def login_throttle_hit(*, username: str, ip: str | None) -> None:
    """Count a login attempt for this username (any case) and this address, before checking it.

    Raises `Throttled` when either has used up its failures in the window
    (`LOGIN_THROTTLE_PER_USERNAME`, `LOGIN_THROTTLE_PER_IP`, `LOGIN_THROTTLE_WINDOW_SECONDS`).
    Counting before the password is checked keeps parallel guesses within the limit; call
    `login_throttle_forgive` after a successful login so that only failures count.
    """
    _counters_hit(
        _login_counters(username=username, ip=ip),
        message="Too many failed sign-in attempts. Try again later.",
    )


@redis_needed()
def login_throttle_forgive(*, username: str, ip: str | None) -> None:
    """Take back the count of a login attempt that succeeded."""
    for counter in _login_counters(username=username, ip=ip):
        _counter_undo(counter)


def register_throttle_hit(*, ip: str) -> None:
    """Count a registration attempt from this address; `REGISTER_THROTTLE_PER_IP` per hour.

    Every attempt counts, successful or not, so that probing for taken usernames is bounded too.
    """
    _counters_hit(
        [
            _Counter(
                key=f"{_KEY_PREFIX}:register:ip:{_ip_key_part(ip)}",
                limit=settings.REGISTER_THROTTLE_PER_IP,
                window=_REGISTER_WINDOW_SECONDS,
            )
        ],
        message="Too many registrations from this address. Try again later.",
    )
