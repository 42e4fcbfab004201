"""The web chat page: one template and a static script, a client of the API like any other.

The page holds no data of its own: it signs in with the REST API (bearer tokens, kept in
memory and localStorage, shared by the browser's tabs: docs/api.md, "The web page's
session"), and chats over the websocket with a one-time ticket. The limits it shows (a
message's length) are the server's own, handed to it in the shell.
So the view only serves the shell, with a content security policy that allows nothing but
this origin: no inline script, no third-party host.
"""

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from conversations.turns.request import CONTENT_MAX_CHARS
from llm.registry import provider_get

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        # 'self' covers ws:/wss: of this origin in CSP 3; the explicit schemes keep older browsers working.
        "connect-src 'self' ws: wss:",
        "img-src 'self' data: blob:",
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@never_cache
@require_safe
def chat_page(request: HttpRequest) -> HttpResponse:
    context = {"model_configured": _model_configured(), "message_max_chars": CONTENT_MAX_CHARS}
    response = render(request, "web/chat.html", context)
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def _model_configured() -> bool:
    # A broken LLM setting must not take the page down with it: the page says no model is set.
    try:
        return provider_get().configured
    except ImproperlyConfigured:
        return False
