"""What is kept of a provider's picture: re-encoded, bounded, stripped; SVG rasterized, never kept."""

import base64
import io

import pytest
from llmock.simulation import build_fake_image_data_uri
from PIL import Image

from images.encode import picture_normalize
from images.errors import ImageInvalid

LIMITS = {"max_dimension": 512, "max_bytes": 512 * 1024}


def _svg(prompt: str = "at the beach") -> bytes:
    return base64.b64decode(build_fake_image_data_uri(prompt).split(",", 1)[1])


def test_an_svg_is_rasterized_and_kept_as_webp() -> None:
    picture = picture_normalize(_svg(), **LIMITS)

    opened = Image.open(io.BytesIO(picture.data))
    assert opened.format == "WEBP"
    assert opened.size == (512, 512)
    assert b"<svg" not in picture.data


@pytest.mark.parametrize(
    "svg",
    [
        b"<svg xmlns='http://www.w3.org/2000/svg'><image href='file:///etc/passwd'/></svg>",
        b"<svg xmlns='http://www.w3.org/2000/svg'><use xlink:href='http://example.com/a.svg#x'/></svg>",
        b"<svg xmlns='http://www.w3.org/2000/svg'><rect fill='url(http://example.com/p)'/></svg>",
        b"<svg xmlns='http://www.w3.org/2000/svg'><foreignObject><p>hi</p></foreignObject></svg>",
    ],
)
def test_an_svg_that_refers_outside_itself_is_refused(svg: bytes) -> None:
    with pytest.raises(ImageInvalid):
        picture_normalize(svg, **LIMITS)


def test_metadata_is_stripped_and_the_size_bounded() -> None:
    original = Image.new("RGB", (2048, 1024), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", exif=exif.tobytes())
    assert b"SecretCam" in buffer.getvalue()

    picture = picture_normalize(buffer.getvalue(), **LIMITS)

    opened = Image.open(io.BytesIO(picture.data))
    assert opened.size == (512, 256)
    assert b"SecretCam" not in picture.data
    assert not opened.getexif()


def test_bytes_that_are_not_a_picture_are_refused() -> None:
    with pytest.raises(ImageInvalid):
        picture_normalize(b"<html><script>alert(1)</script></html>", **LIMITS)
    with pytest.raises(ImageInvalid):
        picture_normalize(b"GIF89a" + b"\x00" * 20, **LIMITS)
