"""The turn: a user's message in, the avatar's reply streamed out and stored.

Every interface (the websocket consumer, SSE and batch REST in `conversations.api`, the
terminal chat, scheduled work) starts a turn through one door, `turn_start`, and differs
only in what it does with the running turn it gets back. Read the package in this order:

    request.py   what a client may send: the one validator and its limits
    locks.py     how many turns may run: rate, one per conversation, a few per user
    prepare.py   the reads, the mode decision and the prompt: a frozen `TurnPlan`
    stream.py    the model call and its tokens, stop at any point: a `ReplyOutcome`
    store.py     the writes: the messages when the turn starts, the outcome when it ends
    events.py    the frames the turn emits, in contract order (CONTRACT.md)
    run.py       the door, `turn_start`, and the task that runs a started turn

docs/architecture.md draws a turn: who calls whom, on which thread.
"""

from conversations.turns.events import TurnEvent
from conversations.turns.locks import Busy
from conversations.turns.request import TurnRequest, turn_request_parse
from conversations.turns.run import RunningTurn, TurnResult, turn_cancel_local, turn_running, turn_start
from conversations.turns.stream import EventSink, StoreFailed, TurnError

__all__ = [
    "Busy",
    "EventSink",
    "RunningTurn",
    "StoreFailed",
    "TurnError",
    "TurnEvent",
    "TurnRequest",
    "TurnResult",
    "turn_cancel_local",
    "turn_request_parse",
    "turn_running",
    "turn_start",
]
