"""The real services of the PostgreSQL/Redis configuration, used for real.

Outside CI these skip when DATABASE_URL / REDIS_URL are not set; with CI=true a missing
or unreachable service fails them (testing.skip_or_fail).
"""

import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache, caches
from django.db import connection

from testing.support import skip_or_fail


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_is_postgresql_when_configured() -> None:
    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL does not point at PostgreSQL")

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version_num')::int")
        (version,) = cursor.fetchone()

    assert version >= 130000


@pytest.mark.redis
def test_the_channel_layer_and_cache_go_through_redis_when_configured() -> None:
    if not settings.REDIS_URL:
        skip_or_fail("REDIS_URL is not set")
    layer = get_channel_layer()
    assert layer is not None
    assert type(layer).__name__ == "RedisPubSubChannelLayer"
    key = f"probe-{uuid.uuid4().hex}"

    async def round_trip() -> dict[str, str]:
        channel = await layer.new_channel()
        await layer.group_add(key, channel)
        await layer.group_send(key, {"type": "probe.message", "value": key})
        received: dict[str, str] = await layer.receive(channel)
        await layer.group_discard(key, channel)
        return received

    received = async_to_sync(round_trip)()
    cache.set(key, "stored", timeout=30)

    assert received == {"type": "probe.message", "value": key}
    assert cache.get(key) == "stored"
    assert type(caches["default"]).__name__ == "RedisCache"
