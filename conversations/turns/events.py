"""The events of a turn, as sent on the websocket and over SSE (CONTRACT.md, "Server to client").

Each event is a small dataclass; `frame()` gives the JSON object clients receive. The
orchestrator emits them in contract order: message.created, mode (only on a change or a
block), notice (the AI notice, when due), safety (a crisis turn), reply.start, token...,
reply.end; error for anything refused or failed.
"""

from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageCreated:
    message: dict[str, Any]

    def frame(self) -> Frame:
        return {"type": "message.created", "message": self.message}


@dataclass(frozen=True, slots=True)
class ModeChanged:
    mode: str
    previous: str
    source: str  # intent | command | user | lock | gate
    matched: str | None = None
    score: float | None = None
    blocked: str | None = None
    blocked_reason: str | None = None
    locked: bool = False

    def frame(self) -> Frame:
        frame: Frame = {
            "type": "mode",
            "mode": self.mode,
            "previous": self.previous,
            "locked": self.locked,
            "reason": {"source": self.source, "matched": self.matched, "score": self.score},
        }
        if self.blocked:
            frame["blocked"] = self.blocked
            frame["reason"]["code"] = self.blocked_reason
        return frame


@dataclass(frozen=True, slots=True)
class SafetyAlert:
    """A crisis turn (CONTRACT.md, "Duty of care"): the crisis lines of the user's locale, before reply.start."""

    message_id: int  # the user message the detector flagged
    resources: tuple[dict[str, str], ...]
    kind: str = "crisis"

    def frame(self) -> Frame:
        return {"type": "safety", "kind": self.kind, "message_id": self.message_id, "resources": list(self.resources)}


@dataclass(frozen=True, slots=True)
class AiNotice:
    """That the companion is an AI: at a conversation's start and again every few hours of use."""

    text: str
    kind: str = "ai"

    def frame(self) -> Frame:
        return {"type": "notice", "kind": self.kind, "text": self.text}


@dataclass(frozen=True, slots=True)
class ReplyStart:
    message_id: int
    mode: str
    # A regeneration: the user message it answers again, and every reply to it (this one last).
    reply_to: int | None = None
    alternatives: tuple[int, ...] = ()

    def frame(self) -> Frame:
        frame: Frame = {"type": "reply.start", "message_id": self.message_id, "mode": self.mode}
        if self.reply_to is not None:
            frame["reply_to"] = self.reply_to
            frame["alternatives"] = list(self.alternatives)
        return frame


@dataclass(frozen=True, slots=True)
class MessageUpdated:
    """A stored message changed: the user edited their last message (before its new reply.start)."""

    message: dict[str, Any]

    def frame(self) -> Frame:
        return {"type": "message.updated", "message": self.message}


@dataclass(frozen=True, slots=True)
class MessagesDeleted:
    """Messages the user forgot (a user message with its replies); gone from every device."""

    message_ids: tuple[int, ...]

    def frame(self) -> Frame:
        return {"type": "message.deleted", "message_ids": list(self.message_ids)}


@dataclass(frozen=True, slots=True)
class AlternativeSelected:
    """The user picked which reply to a message the history uses."""

    message_id: int  # the reply now selected
    reply_to: int
    alternatives: tuple[int, ...]
    message: dict[str, Any]

    def frame(self) -> Frame:
        return {
            "type": "alternative.selected",
            "message_id": self.message_id,
            "reply_to": self.reply_to,
            "alternatives": list(self.alternatives),
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Token:
    message_id: int
    seq: int
    delta: str

    def frame(self) -> Frame:
        return {"type": "token", "message_id": self.message_id, "seq": self.seq, "delta": self.delta}


@dataclass(frozen=True, slots=True)
class Action:
    """A tool the reply ran (secretary mode): what it was asked, and what came of it."""

    message_id: int
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, str] | None

    def frame(self) -> Frame:
        return {
            "type": "action",
            "message_id": self.message_id,
            "name": self.name,
            "arguments": self.arguments,
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    message_id: int
    status: str
    finish_reason: str
    content: str
    prompt_tokens: int | None
    completion_tokens: int | None
    message: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    def frame(self) -> Frame:
        frame: Frame = {
            "type": "reply.end",
            "message_id": self.message_id,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "content": self.content,
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "message": self.message,
        }
        if self.error is not None:
            frame["error"] = self.error
        return frame


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: str
    message: str
    retryable: bool = False
    field: str | None = None
    retry_after: int | None = None  # seconds (`quota_exceeded`: until the user's midnight)

    def frame(self) -> Frame:
        frame: Frame = {"type": "error", "code": self.code, "message": self.message, "retryable": self.retryable}
        if self.field:
            frame["field"] = self.field
        if self.retry_after is not None:
            frame["retry_after"] = self.retry_after
        return frame


TurnEvent = (
    MessageCreated
    | MessageUpdated
    | ModeChanged
    | AiNotice
    | SafetyAlert
    | ReplyStart
    | Token
    | Action
    | ReplyEnd
    | ErrorEvent
)
