"""Builders shared by the LLM tests: SSE bodies, chunks, deterministic retry randomness."""

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from llm.base import ChatMessage, StreamEvent

BASE_URL = "http://llm.test/v1"
API_KEY = "sk-test-0123456789abcdefWXYZ"
HELLO = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Say hello")]


def chunk(
    content: str | None = None,
    *,
    finish: str | None = None,
    role: str | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
    model: str = "served-model",
    **delta_extra: Any,
) -> dict[str, Any]:
    delta: dict[str, Any] = {**delta_extra}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def sse(*events: dict[str, Any] | bytes | str) -> bytes:
    out = b""
    for event in events:
        if isinstance(event, dict):
            payload = json.dumps(event).encode()
        elif isinstance(event, str):
            payload = event.encode()
        else:
            payload = event
        out += b"data: " + payload + b"\n\n"
    return out


def hello_stream(*, usage: bool = True) -> bytes:
    events: list[dict[str, Any] | str] = [
        chunk("", role="assistant"),
        chunk("Hel"),
        chunk("lo!"),
        chunk(finish="stop"),
    ]
    if usage:
        events.append(chunk(choices=False, usage={"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}))
    events.append("[DONE]")
    return sse(*events)


def sse_response(body: bytes | httpx.AsyncByteStream, status: int = 200) -> httpx.Response:
    headers = {"content-type": "text/event-stream"}
    if isinstance(body, bytes):
        return httpx.Response(status, content=body, headers=headers)
    return httpx.Response(status, stream=body, headers=headers)


class ScriptedBody(httpx.AsyncByteStream):
    """An SSE body sent piece by piece: bytes are sent, floats are pauses, exceptions are raised.

    Records whether the client closed it, which is what closing a real HTTP response does.
    """

    def __init__(self, *parts: bytes | float | BaseException) -> None:
        self.parts = parts
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if isinstance(part, BaseException):
                raise part
            if isinstance(part, float):
                await asyncio.sleep(part)
                continue
            self.sent += 1
            yield part

    async def aclose(self) -> None:
        self.closed = True


def completion_body(
    text: str | None = "Hello!", *, finish: str = "stop", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class UpperJitter(random.Random):
    """Full jitter at its upper bound: waits grow 1x, 2x, 4x, as llmock's backoff check expects."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def drain(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


async def consume(stream: AsyncIterator[StreamEvent], into: list[StreamEvent]) -> None:
    """Like `drain`, but what arrived before an error stays in `into`."""
    async for event in stream:
        into.append(event)


def request_json(route_call: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route_call.request.content)
    return body


def texts(events: Iterable[StreamEvent]) -> list[str]:
    return [event.text for event in events if hasattr(event, "text")]
