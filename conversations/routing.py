from django.urls import URLPattern, path

from conversations.consumers import ConversationConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/conversations/<int:conversation_id>/", ConversationConsumer.as_asgi()),
]
