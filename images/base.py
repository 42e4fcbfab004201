"""The image provider Protocol and the values that cross it.

A provider makes one picture from a prompt, once: no retries (the task does those), no
storage (images.storage does that). It raises `images.errors.ImageRefused` for a content
policy refusal and `images.errors.ImageFailed` (with `retryable`) for anything else.
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ImageUsage:
    model: str
    size: str
    quality: str
    revised_prompt: str = ""


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """The bytes as the provider sent them (PNG, JPEG, WEBP or SVG): never stored as they are."""

    data: bytes
    usage: ImageUsage


@runtime_checkable
class ImageProvider(Protocol):
    name: str

    @property
    def model(self) -> str: ...

    def generate(self, prompt: str, *, size: str, quality: str) -> GeneratedImage: ...
