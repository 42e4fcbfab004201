"""JSON log lines (callers pass structured fields in `extra={"data": {...}}`), and what keeps
secrets out of records: a filter for the server's own lines, exception fields without text."""

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            payload.update(data)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


# Query parameters that carry a secret or the user's words: the socket's one-time ticket and
# the conversation search's text.
_SECRET_IN_QUERY = re.compile(r"([?&](?:ticket|q)=)[^&\s\"']+")


class QueryRedacted(logging.Filter):
    """Hides secret query values in a record's text: `?ticket=[redacted]`, `&q=[redacted]`.

    The socket URL carries a one-time ticket in its query string (CONTRACT.md), and uvicorn
    logs every handshake, accepted or refused, with the path and query string; its access log
    does the same for HTTP requests, a conversation search's words (`?q=`) included. A ticket
    is short-lived and single-use, but it is a credential until redeemed: no log keeps it, nor
    what the user searched for.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _SECRET_IN_QUERY.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_IN_QUERY.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def exception_data(exc: BaseException, *, frames: int = 6) -> dict[str, object]:
    """An exception as log fields without its text: its type and where it was raised.

    For errors raised by code we do not own (a provider, an SDK): their text may quote the
    request they refused, the user's message in it, so a record carries the type and the
    innermost frames (file:line function) instead of `exc_info`.
    """
    where = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)[-frames:]]
    return {"error": type(exc).__qualname__, "where": where}
