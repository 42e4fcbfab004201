"""IANA time zones by name: the one check of a zone a user or a model gives."""

from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from core.errors import InvalidInput

ZONE_NAME_MAX = 64


def zone_get(name: object) -> ZoneInfo:
    """The zone of an IANA name (`Europe/Paris`, `UTC`); `InvalidInput` (field `timezone`) for anything else."""
    if not isinstance(name, str) or not 0 < len(name) <= ZONE_NAME_MAX or name not in _zone_names():
        shown = str(name)[:ZONE_NAME_MAX]
        raise InvalidInput(f"Unknown time zone {shown!r}: use an IANA name such as Europe/Paris.", field="timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"Unknown time zone {name!r}.", field="timezone") from None


def zone_or_utc(name: str | None) -> ZoneInfo:
    """A stored zone name's zone, UTC for none or one no longer known: for reading, never refusing."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@cache
def _zone_names() -> frozenset[str]:
    # From the tzdata wheel when installed (requirements.txt), so a slim machine without
    # /usr/share/zoneinfo knows the same zones.
    return frozenset(available_timezones()) | {"UTC"}
