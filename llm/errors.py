"""Typed LLM errors: every provider failure becomes one of these, with a code and a safe message.

`user_message` is written for the person chatting: it never carries the API key nor the
server's own text (which may echo prompts or secrets). `detail` is for operators: a short,
redacted description (status, server error code, a trimmed server message) that is logged
at DEBUG only and shown by `manage.py llm_check`.

`InvalidParams` is not a provider failure: it is the caller's bad model / temperature /
max_tokens, raised before any network call, and it is a `core.errors.InvalidInput`
(so the API answers 422 with the field) as well as a `ValueError`.
"""

from typing import ClassVar

from core.errors import InvalidInput


class LLMError(Exception):
    code: ClassVar[str] = "llm_error"
    retryable: ClassVar[bool] = False
    user_message: ClassVar[str] = "The language model could not answer."

    def __init__(self, detail: str = "", *, retry_after: float | None = None, status_code: int | None = None) -> None:
        super().__init__(detail or self.user_message)
        self.detail = detail
        self.retry_after = retry_after
        self.status_code = status_code  # the upstream HTTP status, when there was one

    def as_dict(self) -> dict[str, object]:
        """What a client may see: the shape of the socket `error` frame."""
        return {"code": self.code, "message": self.user_message, "retryable": self.retryable}


class NotConfigured(LLMError):
    code = "llm_not_configured"
    user_message = (
        "No language model is configured. Set LLM_API_KEY (and LLM_BASE_URL for a server other "
        "than OpenAI's, e.g. Ollama or vLLM) and restart."
    )


class AuthenticationFailed(LLMError):
    code = "llm_auth"
    user_message = "The language model rejected our API key."


class PermissionDenied(LLMError):
    code = "llm_permission"
    user_message = "The API key is not allowed to use this model."


class ModelNotFound(LLMError):
    code = "llm_model_not_found"
    user_message = "The configured model does not exist on the language model server."


class BadRequest(LLMError):
    code = "llm_bad_request"
    user_message = "The language model refused the request."


class ToolsUnsupported(BadRequest):
    """The server or model refused the request because it offered tools: send it again without them."""

    code = "tools_unsupported"
    user_message = "The language model cannot use tools."


class ContextTooLong(LLMError):
    code = "llm_context_too_long"
    user_message = "The conversation is too long for the model's context window."


class ContentFiltered(LLMError):
    code = "llm_content_filtered"
    user_message = "The model's content filter stopped this reply."


class QuotaExceeded(LLMError):
    """A 429 that waiting will not fix: the account is out of credit (OpenAI's `insufficient_quota`)."""

    code = "llm_quota_exceeded"
    user_message = "The language model account has run out of credit."


class RateLimited(LLMError):
    code = "llm_rate_limited"
    retryable = True
    user_message = "The language model is busy (rate limited). Try again shortly."


class Timeout(LLMError):
    code = "llm_timeout"
    retryable = True
    user_message = "The language model took too long to answer."


class Unavailable(LLMError):
    code = "llm_unavailable"
    retryable = True
    user_message = "The language model is unavailable right now."


class Unreachable(Unavailable):
    """No connection could be made at all (refused, DNS, connect timeout): usually a wrong LLM_BASE_URL."""

    code = "llm_unreachable"
    user_message = "The language model server cannot be reached right now."


class ConnectionDropped(LLMError):
    code = "llm_connection_dropped"
    retryable = True
    user_message = "The connection to the language model dropped mid-reply."


class StreamIncomplete(LLMError):
    code = "llm_stream_incomplete"
    retryable = True
    user_message = "The model's reply ended before it was finished."


class MalformedResponse(LLMError):
    code = "llm_malformed"
    retryable = True
    user_message = "The language model sent a reply we could not read."


class CircuitOpen(LLMError):
    code = "llm_circuit_open"
    retryable = True
    user_message = "The language model is failing repeatedly; we paused calls to it for a moment."


class InvalidParams(InvalidInput, ValueError):
    """A per-request model, temperature or max_tokens out of bounds; `field` names which."""

    code = "invalid"
