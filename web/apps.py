from django.apps import AppConfig


class WebConfig(AppConfig):
    """The browser chat page at `/` (a client of the REST API and the websocket) and the admin insight assets."""

    name = "web"
    verbose_name = "Web chat"
