"""Pictures from any OpenAI-compatible `/images/generations` (OpenAI, LiteLLM, LocalAI, llmock).

One attempt per call (the SDK's retries are off; the task retries once). The answer's
`b64_json` is decoded, a `url` is downloaded (images.download: a timeout, a size cap).
Errors are translated as the chat provider's are (`llm.providers.openai.error_translate`),
then mapped: the content policy (OpenAI's `content_policy_violation`, gpt-image's
`moderation_blocked`) is an `ImageRefused`, never retried; what may pass on a second try
(429, 5xx, timeouts, connection errors) an `ImageFailed` with `retryable`; the rest a
terminal `ImageFailed` carrying the chat error's code.
"""

import re
from typing import TYPE_CHECKING, Any, cast

import httpx
import openai
from django.conf import settings

from images.base import GeneratedImage, ImageUsage
from images.download import b64_decode, image_url_fetch
from images.errors import ImageFailed, ImageInvalid, ImageRefused
from llm.errors import ContentFiltered
from llm.providers.openai import DEFAULT_BASE_URL, KEYLESS_PLACEHOLDER, error_translate

if TYPE_CHECKING:
    import httpx2

_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked", "content_filter"})
_POLICY_HINTS = re.compile(r"content[ _]policy|safety system|moderation", re.IGNORECASE)

PROVIDER_REFUSAL_MESSAGE = "The picture service declined this request under its content policy."


class OpenAIImageProvider:
    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        api_key: str = "",
        base_url: str = "",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        response_format: str = "",
        download_timeout: float = 15.0,
        download_max_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        if response_format not in ("", "url", "b64_json"):
            raise ValueError("response_format must be '', 'url' or 'b64_json'")
        self._model = model
        self._api_key = api_key
        self._response_format = response_format
        self._download_timeout = download_timeout
        self._download_max_bytes = download_max_bytes
        self._client = openai.OpenAI(
            api_key=api_key or KEYLESS_PLACEHOLDER,
            base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
            max_retries=0,
            # A plain httpx client, as the chat provider's (the SDK's annotation names httpx2).
            http_client=cast("httpx2.Client", httpx.Client(timeout=httpx.Timeout(timeout, connect=connect_timeout))),
        )

    @classmethod
    def from_settings(cls) -> "OpenAIImageProvider":
        return cls(
            model=settings.IMAGE_MODEL,
            api_key=settings.IMAGE_API_KEY,
            base_url=settings.IMAGE_BASE_URL,
            timeout=settings.IMAGE_TIMEOUT,
            connect_timeout=settings.LLM_CONNECT_TIMEOUT,
            response_format=settings.IMAGE_RESPONSE_FORMAT,
            download_timeout=settings.IMAGE_DOWNLOAD_TIMEOUT,
            download_max_bytes=settings.IMAGE_DOWNLOAD_MAX_BYTES,
        )

    @property
    def model(self) -> str:
        return self._model

    def generate(self, prompt: str, *, size: str, quality: str) -> GeneratedImage:
        options: dict[str, Any] = {"model": self._model, "prompt": prompt, "n": 1, "size": size}
        if quality:
            options["quality"] = quality
        if self._response_format:
            options["response_format"] = self._response_format
        try:
            response = self._client.images.generate(**options)
        except openai.APIStatusError as exc:
            raise _status_error(exc, self._api_key) from exc
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
            raise _other_error(exc, self._api_key) from exc
        items = response.data or []
        if not items:
            raise ImageInvalid("the answer held no picture", retryable=True)
        item = items[0]
        if item.b64_json:
            data = b64_decode(item.b64_json)
        elif item.url:
            data = image_url_fetch(item.url, timeout=self._download_timeout, max_bytes=self._download_max_bytes)
        else:
            raise ImageInvalid("the answer held neither b64_json nor url", retryable=True)
        usage = ImageUsage(model=self._model, size=size, quality=quality, revised_prompt=item.revised_prompt or "")
        return GeneratedImage(data=data, usage=usage)


def _status_error(exc: openai.APIStatusError, api_key: str) -> Exception:
    code = (exc.code or "").lower()
    body = exc.body if isinstance(exc.body, dict) else {}
    message = str(body.get("message") or "")
    if exc.status_code == 400 and (code in _POLICY_CODES or _POLICY_HINTS.search(message)):
        return ImageRefused(PROVIDER_REFUSAL_MESSAGE, reason="provider")
    return _other_error(exc, api_key)


def _other_error(exc: BaseException, api_key: str) -> Exception:
    error = error_translate(exc, mid_stream=False, secrets=(api_key,))
    if isinstance(error, ContentFiltered):
        return ImageRefused(PROVIDER_REFUSAL_MESSAGE, reason="provider")
    return ImageFailed(error.detail or error.user_message, retryable=error.retryable, code=error.code)
