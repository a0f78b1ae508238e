"""Logging for every a10tts process: text lines (journald adds the time) or JSON lines.

Torch-free, so the supervisor and the HTTP workers can use it without loading the engine.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import sys


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": record.created, "level": record.levelname.lower(), "logger": record.name,
                 "process": getattr(record, "process_name", None), "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "info", fmt: str = "text", process_name: str | None = None) -> None:
    """Configure the root logger; `process_name` (e.g. "decode-1") tags a child's lines. SIGUSR1
    then dumps the process's stacks to stderr instead of killing it."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        if process_name:
            handler.addFilter(lambda record: setattr(record, "process_name", process_name) or True)
    else:
        # journald stamps every line itself; a terminal needs the time.
        stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
        who = f"{process_name}[%(process)d] " if process_name else ""
        handler.setFormatter(logging.Formatter(f"{stamp}{who}%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # `kill -USR1 PID` writes every thread's Python stack to the log: where a process is stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
