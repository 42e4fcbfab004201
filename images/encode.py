"""What is kept of a provider's picture: decoded, re-encoded, bounded; never the bytes as sent.

- SVG (llmock answers with it; a provider might): it can carry script and external
  references, so it is never stored nor served as SVG. One that refers outside itself
  (`<image>`, `<foreignObject>`, a non-local `href`, `@import`) is refused; the rest is
  rasterized with resvg (which runs no script) at most `max_dimension` wide.
- PNG, JPEG, WEBP, GIF: opened by Pillow, checked against a pixel budget before decoding,
  first frame only.
- Either way the pixels are re-encoded as WEBP into a new image: no metadata survives (EXIF,
  GPS, ICC, text chunks), the longer side is at most `max_dimension`, and the file at most
  `max_bytes` (lower quality, then smaller, until it fits).
"""

import io
import re
from dataclasses import dataclass

import resvg_py
from PIL import Image, UnidentifiedImageError

from images.errors import ImageInvalid

CONTENT_TYPE = "image/webp"
EXTENSION = "webp"
MAX_PIXELS = 40_000_000
_RASTER_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
_SVG_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!DOCTYPE[^>]*>\s*)?<svg[\s>]", re.DOTALL)
_SVG_OUTSIDE = re.compile(
    rb"<image\b|<foreignObject\b|@import|(?:xlink:)?href\s*=\s*[\"'](?!#)|url\(\s*[\"']?(?!#)", re.IGNORECASE
)
_QUALITIES = (85, 70, 55)


@dataclass(frozen=True, slots=True)
class StoredPicture:
    data: bytes
    width: int
    height: int
    content_type: str = CONTENT_TYPE
    extension: str = EXTENSION


def picture_normalize(data: bytes, *, max_dimension: int, max_bytes: int) -> StoredPicture:
    if _SVG_START.match(data[:4096]):
        data = _svg_rasterize(data, max_dimension=max_dimension)
    picture = _raster_open(data)
    picture.thumbnail((max_dimension, max_dimension))
    return _encode_within(picture, max_bytes=max_bytes)


def _svg_rasterize(data: bytes, *, max_dimension: int) -> bytes:
    if _SVG_OUTSIDE.search(data):
        raise ImageInvalid("the SVG refers to something outside itself")
    try:
        text = data.decode("utf-8")
        return bytes(resvg_py.svg_to_bytes(svg_string=text, width=max_dimension))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageInvalid("the SVG could not be drawn") from exc


def _raster_open(data: bytes) -> Image.Image:
    try:
        picture = Image.open(io.BytesIO(data))
        if picture.format not in _RASTER_FORMATS:
            raise ImageInvalid(f"pictures in {picture.format} are not accepted")
        width, height = picture.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise ImageInvalid("the picture's dimensions are out of bounds")
        picture.seek(0)
        picture.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageInvalid("the provider's answer is not a picture we can read") from exc
    mode = "RGBA" if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info else "RGB"
    # A new image holds the pixels only: nothing of the original's metadata comes along.
    clean = Image.new(mode, picture.size)
    clean.paste(picture.convert(mode))
    return clean


def _encode_within(picture: Image.Image, *, max_bytes: int) -> StoredPicture:
    current = picture
    while True:
        for quality in _QUALITIES:
            buffer = io.BytesIO()
            current.save(buffer, format="WEBP", quality=quality, method=4)
            if buffer.tell() <= max_bytes:
                return StoredPicture(data=buffer.getvalue(), width=current.width, height=current.height)
        if max(current.size) <= 64:
            raise ImageInvalid("the picture cannot be made small enough")
        current = current.resize((max(1, current.width // 2), max(1, current.height // 2)))
