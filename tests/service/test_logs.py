"""Log lines as an operator reads them: written by the logging thread, in order, none lost at exit.

Each case runs in a fresh interpreter (the logging setup is process-wide) and reads its stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, sys
from service.logs import configure_logging, flush_logs, request_id
configure_logging(sys.argv[1], "INFO")
log = logging.getLogger("service.access")
token = request_id.set("req-1")
log.info("%s %s %s", "GET", "/x", 200, extra={"status": 200, "model": "m"})
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed on %s", "/y")
request_id.reset(token)
flush_logs()
print("printed after flush_logs", file=sys.stderr)
log.warning("logged last, written at exit")
"""


def run(log_format: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, log_format], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr.splitlines()


def test_json_lines_keep_fields_request_id_and_traceback() -> None:
    lines = run("json")
    first, second = json.loads(lines[0]), json.loads(lines[1])
    assert first.pop("time")
    assert first == {
        "level": "INFO",
        "logger": "service.access",
        "message": "GET /x 200",
        "status": 200,
        "model": "m",
        "request_id": "req-1",
    }
    assert (second["level"], second["message"], second["request_id"]) == ("ERROR", "failed on /y", "req-1")
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert second["exception"].endswith("ZeroDivisionError: division by zero")
    # flush_logs wrote both before the direct print; the last record was written at exit.
    assert lines[2] == "printed after flush_logs"
    last = json.loads(lines[3])
    assert (last["message"], last["request_id"]) == ("logged last, written at exit", None)
    assert len(lines) == 4


def test_text_lines_keep_fields_request_id_and_traceback() -> None:
    lines = run("text")
    assert lines[0].endswith("INFO    [req-1] service.access: GET /x 200 status=200 model=m")
    assert lines[1].endswith("ERROR   [req-1] service.access: failed on /y")
    assert lines[2] == "Traceback (most recent call last):"
    traceback_end = lines.index("ZeroDivisionError: division by zero")
    assert lines[traceback_end + 1] == "printed after flush_logs"
    assert lines[traceback_end + 2].endswith("WARNING service.access: logged last, written at exit")
