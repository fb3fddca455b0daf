"""Structured logging: one JSON object per line in production, readable lines in development.

Every record carries the id of the request being served (`X-Request-ID`), kept in a context
variable that the request middleware sets.

Records are written by a thread of their own (`logging.handlers.QueueListener`): the thread that
logs, usually the event loop with its access line per request, only stamps the record with the
request id and puts it on a queue. Formatting and the write to stderr, which blocks when a pipe
reader (docker's log driver, a terminal) falls behind, happen off the loop. `flush_logs` waits
until every record logged so far is written; at a normal exit the writer writes what is queued.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import queue
import sys
import threading
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from service.settings import LogFormat

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Attributes every LogRecord has: anything else was passed in `extra=` and belongs in the output.
# uvicorn adds `color_message`, a copy of the message with terminal colours.
_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback as text: already formatted by the logging thread, or formatted now."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        exception = _exception_text(self, record)
        if exception:
            entry["exception"] = exception
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level [request id] logger: message key=value ...` for a person reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        rid = extras.pop("request_id", None)
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        prefix = f"[{rid}] " if rid else ""
        line = f"{time} {record.levelname:<7} {prefix}{record.name}: {record.getMessage()}"
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        exception = _exception_text(self, record)
        if exception:
            line += "\n" + exception
        return line


class RecordQueueHandler(QueueHandler):
    """Hands records to the writer thread with their message and traceback already fixed as text.

    The message's arguments and the traceback's frames may change or go once the logging call
    returns; the rest of the record (time, level, `extra` fields, the request id the filter
    stamped) is plain data. Unlike the stdlib's `prepare`, the record is not copied and keeps its
    fields, so the formatters see what they would have seen when called directly.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to `sys.stderr` as it is when the record is written, not when configured."""

    def emit(self, record: logging.LogRecord) -> None:
        # Whoever swapped sys.stderr (pytest's capture, a daemon manager) gets the lines; a stream
        # closed since configure_logging ran never does.
        self.stream = sys.stderr
        super().emit(record)


class _Flush:
    """A marker on the record queue: the writer sets `written` once every record before it is out."""

    def __init__(self) -> None:
        self.written = threading.Event()


class LogWriter(QueueListener):
    """The thread that formats and writes the queued records; it answers `_Flush` markers."""

    def handle(self, record: logging.LogRecord) -> None:
        if isinstance(record, _Flush):
            record.written.set()
            return
        super().handle(record)


#: The writer thread of `configure_logging`, if it has run.
_writer: LogWriter | None = None
_records: queue.SimpleQueue[Any] = queue.SimpleQueue()
#: Longest `flush_logs` waits for the writer: a stderr nobody reads must not hang the process.
FLUSH_TIMEOUT_S = 5.0


def configure_logging(log_format: LogFormat, level: str) -> None:
    """Send the service's and uvicorn's logs to stderr in `log_format`, written by their own thread."""
    global _writer
    stream = StderrHandler()
    stream.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler = RecordQueueHandler(_records)
    # The request id is a context variable of the thread that logs: stamp it before the queue.
    handler.addFilter(RequestIdFilter())
    if _writer is None:
        atexit.register(flush_logs)
    else:
        _writer.stop()
    _writer = LogWriter(_records, stream)
    _writer.start()
    # What no formatter here shows, the logging call need not gather: its caller's file and line
    # (a walk up the stack), thread and process (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The request middleware logs one line per request with its id and model; uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def flush_logs() -> None:
    """Wait until every record logged so far is written (before writing to stderr directly, or exiting)."""
    if _writer is None:
        return
    marker = _Flush()
    _records.put(marker)
    marker.written.wait(FLUSH_TIMEOUT_S)
