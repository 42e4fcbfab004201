"""A seam into Channels' in-memory layer: the embedded layer without its sweep on every message.

It overrides `_clean_expired`, a private method (docs/architecture.md, "Seams"). Measured
gain, `bench.realtime stop --background 50` on SQLite (2026-12-07): stop p50 / p90 1.3-5x
and 1.4-9x lower than with Channels' own layer (e.g. 5.7 / 17 / 28 ms against 31 / 161 /
279 ms); with one turn at a time there is no difference. It serves embedded defaults only:
with `REDIS_URL` the layer is channels_redis'. core/tests/test_layers.py checks it delivers what Channels'
layer delivers (every member, its own copy, in order; expiry), so a Channels upgrade that
changes the private method shows there.

`channels.layers.InMemoryChannelLayer` walks every channel and every group membership
(`_clean_expired`) on each `receive` and each `group_send`, and its `group_send` starts one
task per member. With one `group_send` per streamed token and a `receive` pending per
socket, that was the largest single cost of the event loop under load
(docs/performance.md). Here the sweep runs at most once a second: messages expire after
60 s and group memberships after a day, so expiring up to a second late changes nothing a
client can see. A group send puts the message on each member's queue in turn, which is all
`send` does (it never waits), so members get the same messages in the same order as before.
"""

import contextlib
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    clean_interval_seconds = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cleaned_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < self.clean_interval_seconds:
            return
        self._cleaned_at = now
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, {})):
            # As in Channels: a full member misses this message, the others still get it.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)
