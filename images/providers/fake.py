"""A picture drawn locally with Pillow, for development and tests: no network, no cost.

The colours come from the prompt's hash, so the same prompt draws the same picture and two
prompts draw two different ones. A prompt containing `FAKE_REFUSE` is refused as a content
policy would, so the refusal path can be tried without a provider.
"""

import hashlib
import io

from PIL import Image, ImageDraw

from images.base import GeneratedImage, ImageUsage
from images.errors import ImageRefused
from images.providers.openai import PROVIDER_REFUSAL_MESSAGE

REFUSE_MARKER = "FAKE_REFUSE"


class FakeImageProvider:
    name = "fake"

    def __init__(self, *, model: str = "fake-image") -> None:
        self._model = model
        self.calls: list[str] = []

    @property
    def model(self) -> str:
        return self._model

    def generate(self, prompt: str, *, size: str, quality: str) -> GeneratedImage:
        self.calls.append(prompt)
        if REFUSE_MARKER in prompt:
            raise ImageRefused(PROVIDER_REFUSAL_MESSAGE, reason="provider")
        width, height = _dimensions(size)
        digest = hashlib.sha256(prompt.encode()).digest()
        top, bottom, accent = digest[0:3], digest[3:6], digest[6:9]
        picture = Image.new("RGB", (width, height))
        draw = ImageDraw.Draw(picture)
        for y in range(height):
            share = y / max(1, height - 1)
            draw.line(
                [(0, y), (width, y)],
                fill=tuple(int(a + (b - a) * share) for a, b in zip(top, bottom, strict=True)),
            )
        radius = min(width, height) // 5
        cx, cy = width // 2, height * 2 // 5
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=tuple(accent))
        draw.rectangle([cx - radius, cy + radius, cx + radius, height], fill=tuple(255 - c for c in accent))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return GeneratedImage(data=buffer.getvalue(), usage=ImageUsage(model=self._model, size=size, quality=quality))


def _dimensions(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    if width.isdigit() and height.isdigit():
        return max(16, min(int(width), 1024)) // 4, max(16, min(int(height), 1024)) // 4
    return 256, 256
