"""The configured image provider, built once per process from settings.

IMAGE_PROVIDER: "openai" (any OpenAI-compatible /images/generations), "fake" (drawn locally
with Pillow), or a dotted path to a class taking no arguments that implements
`images.base.ImageProvider`. Unset: "openai" when the chat has a key or a base URL, else
"fake" (companion/settings.py). Interfaces (the task, the admin) call `image_provider_get()`
and hand the provider to services.
"""

import threading
from importlib import import_module

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from images.base import ImageProvider

_provider: ImageProvider | None = None
_lock = threading.Lock()


def image_provider_get() -> ImageProvider:
    global _provider
    with _lock:
        if _provider is None:
            _provider = image_provider_build()
        return _provider


def image_provider_reset() -> None:
    global _provider
    with _lock:
        _provider = None


def image_provider_build() -> ImageProvider:
    choice = (settings.IMAGE_PROVIDER or "fake").strip()
    if choice == "openai":
        from images.providers.openai import OpenAIImageProvider

        return OpenAIImageProvider.from_settings()
    if choice == "fake":
        from images.providers.fake import FakeImageProvider

        return FakeImageProvider()
    module_path, _, class_name = choice.rpartition(".")
    try:
        provider = getattr(import_module(module_path), class_name)()
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"IMAGE_PROVIDER={choice!r} cannot be imported: {exc}") from exc
    if not isinstance(provider, ImageProvider):
        raise ImproperlyConfigured(f"IMAGE_PROVIDER={choice!r} does not implement images.base.ImageProvider")
    return provider
