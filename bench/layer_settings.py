"""Server settings for comparing channel layers in `bench.realtime --layer ...`: the project's, with another layer.

Used only as the benchmark server's DJANGO_SETTINGS_MODULE; `BENCH_CHANNEL_LAYER` picks:

- "redis-pubsub": channels_redis's RedisPubSubChannelLayer (PUBLISH/SUBSCRIBE; no per-message
  round trip, no per-process capacity);
- "redis-tuned": the project's core Redis layer with a socket timeout longer than its 5 s
  blocking read (redis-py 8 defaults to 5 s) and a capacity of 5,000 messages instead of 100
  (see docs/performance.md).
"""

import os

from companion.settings import *  # noqa: F403
from companion.settings import REDIS_URL

_choice = os.environ.get("BENCH_CHANNEL_LAYER", "")
if _choice == "redis-pubsub":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
elif _choice == "redis-tuned":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
                "capacity": 5000,
                "prefix": "companion",
            },
        }
    }
