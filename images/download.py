"""Fetching the picture a provider answered with a `url`: a `data:` URI, or HTTP(S) with a timeout and a size cap.

The URL comes from the configured provider (a trusted server), never from a client. Only
`http`, `https` and `data` are read; the body is read in pieces and abandoned past
`max_bytes`, so a huge or endless answer costs at most that much memory.
"""

import base64
import binascii

import httpx

from images.errors import ImageFailed, ImageInvalid

_CHUNK = 64 * 1024


def image_url_fetch(url: str, *, timeout: float, max_bytes: int) -> bytes:
    if url.startswith("data:"):
        return _data_uri_decode(url, max_bytes=max_bytes)
    if not url.startswith(("http://", "https://")):
        raise ImageInvalid("the provider's url has an unsupported scheme")
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True, max_redirects=3) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                raise ImageFailed(
                    f"downloading the picture answered HTTP {response.status_code}",
                    retryable=response.status_code >= 500 or response.status_code == 429,
                    code="image_download_failed",
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise ImageInvalid(f"the picture is larger than {max_bytes} bytes")
            body = bytearray()
            for chunk in response.iter_bytes(_CHUNK):
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise ImageInvalid(f"the picture is larger than {max_bytes} bytes")
            return bytes(body)
    except httpx.TimeoutException as exc:
        raise ImageFailed("downloading the picture timed out", retryable=True, code="image_download_timeout") from exc
    except httpx.HTTPError as exc:
        raise ImageFailed(
            f"downloading the picture failed ({type(exc).__name__})", retryable=True, code="image_download_failed"
        ) from exc


def _data_uri_decode(url: str, *, max_bytes: int) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ImageInvalid("the provider's data URI is not base64")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise ImageInvalid(f"the picture is larger than {max_bytes} bytes")
    return b64_decode(payload)


def b64_decode(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInvalid("the provider's base64 picture does not decode") from exc
