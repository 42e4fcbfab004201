"""ASGI entry point: HTTP through Django, websockets through Channels, and the lifespan.

Django's ASGI handler ignores the `lifespan` scope: `companion.lifespan.Lifespan` answers it
(the in-process scheduler of embedded defaults starts and stops with the server).
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "companion.settings")

# Django must be set up before anything imports models (the websocket routing does).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from companion.lifespan import Lifespan  # noqa: E402
from conversations.routing import websocket_urlpatterns  # noqa: E402


class BrowserOriginValidator(OriginValidator):
    """Browsers always send Origin: theirs must be an allowed host (no cross-site sockets).

    Native apps send none; they are let through, since a socket still needs a one-time
    ticket that only a bearer token can buy. Otherwise as Channels' AllowedHostsOriginValidator.
    """

    def valid_origin(self, parsed_origin: object) -> bool:
        return parsed_origin is None or bool(super().valid_origin(parsed_origin))


allowed_hosts = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])


application = Lifespan(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": BrowserOriginValidator(URLRouter(websocket_urlpatterns), allowed_hosts),
        }
    )
)

# Everything loaded so far (Django, the apps, openai, pydantic) lives as long as the process:
# keep it out of the cyclic garbage collector's full collections. Without this each full
# collection walked the whole heap and stalled the event loop, every stream and every stop
# for 115-141 ms under load (docs/performance.md); now it walks only what came after.
gc.collect()
gc.freeze()
