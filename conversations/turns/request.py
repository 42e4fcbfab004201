"""What a client may send to start a turn: the one validator every interface calls, and its limits.

The websocket hands over its `message` frame, the REST endpoint its JSON body, the terminal
chat the line typed: each as a mapping, checked here and nowhere else (types, lengths,
ranges, the model's name), before anything is read, locked or stored. A refusal is an
`InvalidInput` naming the field; each interface answers it its own way (a 422, an error
frame, a line on the terminal).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import InvalidInput
from llm.base import CompletionParams
from llm.catalog import model_get
from llm.params import completion_params_validate

CONTENT_MAX_CHARS = 8000  # the web page reads it from its shell (web/views.py): its counter and refusal
CLIENT_ID_MAX_CHARS = 64
FIELDS = frozenset({"content", "client_id", "model", "temperature", "max_tokens"})


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """A checked request: build it with `turn_request_parse`."""

    content: str
    client_id: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def params(self) -> CompletionParams:
        return CompletionParams(model=self.model, temperature=self.temperature, max_tokens=self.max_tokens)


@dataclass(frozen=True, slots=True)
class ScheduledMessage:
    """A message the avatar writes first, with no user message: a reminder falling due or a
    proactive check-in. Built by the server only (`secretary.delivery`, `secretary.proactive`),
    never parsed from a client's JSON; `turn_start` takes it in place of a client's mapping and
    runs `conversations.turns.scheduled`.

    `brief` tells the model what the message is about; `fallback` is the text stored when the
    model is down or not configured. `commit` is called with the new message's id inside the
    transaction that stores it: False rolls the message back. It is how the caller's claim
    (a reminder's, a check-in's) is checked and spent, exactly once, with the message.
    """

    origin: Literal["reminder", "proactive"]
    user_id: int
    conversation_id: int
    brief: str
    fallback: str
    commit: Callable[[int], bool]
    reminder_id: int | None = None
    late: bool = False  # a reminder sent more than a minute after its time (clients may say so)


@dataclass(frozen=True, slots=True)
class Regenerate:
    """A new reply to the conversation's last user message, the earlier replies kept as
    alternatives (websocket `regenerate`, `POST /api/conversations/{id}/regenerate`); with
    `content`, that message edited first and answered again (websocket `edit`,
    `PATCH /api/messages/{id}`), its earlier replies replaced.

    Built by an interface from its own checked fields, never parsed from a client's JSON
    mapping: `turn_start` takes it in place of a message and checks it (`regenerate_check`).
    `message_id`, when given, names the user message the client means: anything but the
    conversation's last user message is refused (a `Conflict`: the client's view is stale).
    """

    message_id: int | None = None
    content: str | None = None

    @property
    def edit(self) -> bool:
        return self.content is not None


def regenerate_check(regenerate: Regenerate) -> Regenerate:
    """The request with its content stripped, or `InvalidInput` naming the field at fault."""
    message_id = regenerate.message_id
    if message_id is not None and (isinstance(message_id, bool) or not isinstance(message_id, int) or message_id < 1):
        raise InvalidInput("message_id must be a message id (a positive integer).", field="message_id")
    if regenerate.content is None:
        return regenerate
    return Regenerate(message_id=message_id, content=_content(regenerate.content))


def turn_request_parse(payload: Mapping[str, Any]) -> TurnRequest:
    """The request in `payload`, or `InvalidInput` naming the first field that is wrong.

    `payload` holds the fields of CONTRACT.md's message (`content`, `client_id`, `model`,
    `temperature`, `max_tokens`); a missing optional field and an explicit null are the same.
    """
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown field {unknown[0]!r}.", field=unknown[0])
    request = TurnRequest(
        content=_content(payload.get("content")),
        client_id=_client_id(payload.get("client_id")),
        model=_model(payload.get("model")),
        temperature=_temperature(payload.get("temperature")),
        max_tokens=_max_tokens(payload.get("max_tokens")),
    )
    # The bounds of model, temperature and max_tokens are the LLM layer's own (llm/params.py),
    # which the provider applies again when it builds the call: a value it would refuse is
    # refused here (an `InvalidParams`, which is an `InvalidInput`), before a lock or a row.
    completion_params_validate(params=request.params)
    return request


def _content(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("content must be a string.", field="content")
    content = value.strip()
    if not content:
        raise InvalidInput("content must not be empty.", field="content")
    if len(content) > CONTENT_MAX_CHARS:
        raise InvalidInput(f"content is longer than {CONTENT_MAX_CHARS:,} characters.", field="content")
    return content


def _client_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput("client_id must be a string.", field="client_id")
    client_id = str(value)
    if not 0 < len(client_id) <= CLIENT_ID_MAX_CHARS:
        raise InvalidInput(f"client_id must be 1 to {CLIENT_ID_MAX_CHARS} characters.", field="client_id")
    return client_id


def _model(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("model must be a string.", field="model")
    if model_get(value) is None:
        # Checked against the list GET /api/models shows (llm/catalog.py): any other id is refused.
        raise InvalidInput("model is not one this server offers (GET /api/models lists them).", field="model")
    return value


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("temperature must be a number.", field="temperature")
    return float(value)


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("max_tokens must be an integer.", field="max_tokens")
    return value
