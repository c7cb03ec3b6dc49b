"""How the operator's log lines look: text for a terminal, one JSON object a line for a pipeline.

``LOG_FORMAT=text`` (the default) is ``time LEVEL logger: message``. With
``LOG_FORMAT=json`` every line is one JSON object with ``time``, ``level``,
``logger`` and ``message``, plus, for a recorded transition, ``namespace``,
``name``, ``uid``, ``from``, ``to`` and ``reason`` (the controllers pass them as
``extra={"transition": {...}}``), and ``exception`` when there is a traceback.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Final, Literal

TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
Format = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        transition = getattr(record, "transition", None)
        if isinstance(transition, dict):
            line |= transition
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(format_: Format = "text", level: int = logging.INFO) -> None:
    """Send every log line to stderr in ``format_``; quiet kopf's per-event chatter."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if format_ == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf reports every handled watch event at INFO; the controllers log what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
