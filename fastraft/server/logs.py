"""One-line logging for node processes: human-readable by default, JSON lines on request, and
a helper that logs a repeated condition (a peer refusing us, a client sending garbage) once.

Place in the architecture: a leaf of ``fastraft.server``; ``main`` configures it, every other
server module logs through the standard ``logging`` module.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["setup_logging", "LogOnce", "LogEvery", "reason_kind"]


class _JsonFormatter(logging.Formatter):
    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 6), "level": record.levelname.lower(),
               "node": self.node_id, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


class _TextFormatter(logging.Formatter):
    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.prefix = f"node {node_id}"

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = (f"{t}.{int(record.msecs):03d} {self.prefix} {record.levelname:<7} "
                f"{record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(node_id: int, json_lines: bool = False, level: str = "INFO") -> None:
    """Send every fastraft log record to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(node_id) if json_lines else _TextFormatter(node_id))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


class LogOnce:
    """Log each distinct key once (bounded memory: forgets everything past ``limit`` keys),
    so a peer that keeps being refused or a client flood yields one line, not a storm."""

    def __init__(self, logger: logging.Logger, limit: int = 10_000) -> None:
        self.logger = logger
        self.limit = limit
        self._seen: set = set()

    def __call__(self, key, level: int, msg: str, *args) -> bool:
        if key in self._seen:
            return False
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen.add(key)
        self.logger.log(level, msg, *args)
        return True

    def forget(self, key) -> None:
        self._seen.discard(key)


class LogEvery:
    """Log each distinct key at most once per ``period`` seconds (a source refused again and
    again: one line a minute, saying how many were not logged), bounded memory."""

    def __init__(self, logger: logging.Logger, period: float = 60.0,
                 limit: int = 10_000, clock=time.monotonic) -> None:
        self.logger = logger
        self.period = period
        self.limit = limit
        self.clock = clock
        self._last: dict = {}         # key -> [time logged, occurrences not logged since]

    def __call__(self, key, level: int, msg: str, *args) -> bool:
        now = self.clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.period:
            seen[1] += 1
            return False
        if seen is None and len(self._last) >= self.limit:
            self._last.clear()
        if seen is not None and seen[1]:
            msg += " (and %d more since the last such line)"
            args += (seen[1],)
        self._last[key] = [now, 0]
        self.logger.log(level, msg, *args)
        return True


def reason_kind(reason: str) -> str:
    """The stable part of a rejection reason (its words before the first digit, quote or
    colon), so that "frame of 123 bytes ..." and "frame of 456 bytes ..." count as one."""
    out = []
    for ch in reason[:60]:
        if ch.isdigit() or ch in ":'\"[{(":
            break
        out.append(ch)
    return "".join(out).strip()
