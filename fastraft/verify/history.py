"""Client histories: recording operations as JSON lines and reading them back for the checker.

Place in the architecture: part of the verification framework (``fastraft.verify``), between
a workload (which calls the client and records what it saw) and the checks that judge it
(``linearizability.py``, ``final_state.py``). Standard library only: it never imports the
client or the server.

A history is a file of JSON lines, one per invocation and one per completion, in the order
they happened (Jepsen's model)::

    {"process": 3, "type": "invoke", "f": "cas",  "key": "k1", "value": [1, 2], "time": 1.2034}
    {"process": 3, "type": "ok",     "f": "cas",  "key": "k1", "value": true,   "time": 1.2101}

- ``process``: the logical client. It has at most one operation in flight: a completion
  belongs to the last invocation of its process. After an ``info`` a workload should move
  on to a fresh process id (the abandoned operation may still be in flight), as Jepsen does.
- ``type``: ``invoke``, then ``ok`` (done, ``value`` is the result), ``fail`` (certainly not
  applied) or ``info`` (unknown outcome). An invocation never completed counts as ``info``.
- ``f``: ``read`` (linearizable), ``stale_read`` (``get(stale=True)``: checked only for
  what it promises), ``write``, ``cas``; other names (for other workloads) are kept and
  passed over by the conversion.
- ``value`` on an invocation is the argument (write: the value, cas: ``[expected, new]``,
  reads: null); on an ``ok`` it is the result (reads: the value read, cas: whether it
  swapped, write: null).
- ``time``: seconds on a monotonic clock since the writer started.

Values: JSON numbers, strings, booleans and null stand for themselves; ``bytes`` are written
as ``{"b": text}`` when they are UTF-8 and ``{"x": hex}`` otherwise; lists and tuples as
arrays, which read back as tuples (hashable, as the checker's states must be).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, NamedTuple

from .linearizability import Operation

__all__ = ["Event", "HistoryWriter", "Operations", "read_history", "to_operations",
           "encode_value", "decode_value", "TYPES"]

TYPES = ("invoke", "ok", "fail", "info")
_COMPLETIONS = frozenset(TYPES[1:])


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history."""

    process: Hashable
    type: str
    f: str
    key: Any
    value: Any
    time: float

    def to_json(self) -> str:
        """The event as one history line (without the newline)."""
        return json.dumps({"process": self.process, "type": self.type, "f": self.f,
                           "key": encode_value(self.key), "value": encode_value(self.value),
                           "time": self.time}, separators=(", ", ": "))

    @classmethod
    def from_json(cls, line: str) -> Event:
        """The event of one history line; ValueError when it is not one."""
        d = json.loads(line)
        if not isinstance(d, dict):
            raise ValueError("a history line must be a JSON object")
        missing = {"process", "type", "f", "time"} - d.keys()
        if missing:
            raise ValueError(f"history line lacks {sorted(missing)}")
        if d["type"] not in TYPES:
            raise ValueError(f"unknown event type {d['type']!r}")
        process = d["process"]
        if isinstance(process, list):
            process = tuple(process)
        return cls(process, d["type"], d["f"], decode_value(d.get("key")),
                   decode_value(d.get("value")), float(d["time"]))


def encode_value(v: Any) -> Any:
    """A value as JSON can hold it (see the module docstring)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            return {"b": b.decode("utf-8")}
        except UnicodeDecodeError:
            return {"x": b.hex()}
    if isinstance(v, (list, tuple)):
        return [encode_value(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot record a value of type {type(v).__name__}")


def decode_value(v: Any) -> Any:
    """The value ``encode_value`` wrote (arrays come back as tuples); ValueError for an
    object it does not know."""
    if isinstance(v, dict):
        if len(v) == 1 and "b" in v:
            return v["b"].encode("utf-8")
        if len(v) == 1 and "x" in v:
            return bytes.fromhex(v["x"])
        raise ValueError(f"unknown encoded value {v!r}")
    if isinstance(v, list):
        return tuple(decode_value(x) for x in v)
    return v


class HistoryWriter:
    """Appends events to a JSON-lines file (``path``; None keeps them in memory only) and,
    with ``keep``, to ``self.events``.

    Safe from many threads and from asyncio tasks alike: each append takes a lock around a
    short, non-blocking-in-practice write and never awaits, so the file order is the order in
    which the calls happened, and each ``time`` is read under the lock (so times never go
    backwards along the file). Each line is flushed to the OS as it is written (a crash of the
    verifier loses no recorded operation)."""

    def __init__(self, path: str | Path | None = None, clock: Callable[[], float] = time.monotonic,
                 keep: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self._file = open(self.path, "a", encoding="utf-8") if self.path is not None else None
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._pending: dict = {}   # process -> its invoke Event
        self.keep = keep
        self.events: list[Event] = []
        self.closed = False

    def now(self) -> float:
        """Seconds since the writer started, on its clock."""
        return self._clock() - self._t0

    def _append(self, make: Callable[[float], Event]) -> Event:
        with self._lock:
            if self.closed:
                raise ValueError("the history is closed")
            ev = make(self.now())
            if self._file is not None:
                self._file.write(ev.to_json() + "\n")
                self._file.flush()
            if self.keep:
                self.events.append(ev)
            return ev

    def invoke(self, process: Hashable, f: str, key: Any = None, value: Any = None) -> Event:
        """Record that ``process`` starts operation ``f`` on ``key`` with argument ``value``."""
        encode_value(key)
        encode_value(value)

        def make(t: float) -> Event:
            if process in self._pending:
                raise ValueError(f"process {process!r} already has an operation in flight")
            ev = Event(process, "invoke", f, key, value, t)
            self._pending[process] = ev
            return ev

        return self._append(make)

    def complete(self, process: Hashable, type: str, value: Any = None) -> Event:
        """Record the completion (``ok``, ``fail`` or ``info``) of ``process``'s operation."""
        if type not in _COMPLETIONS:
            raise ValueError(f"a completion is ok, fail or info, not {type!r}")
        encode_value(value)

        def make(t: float) -> Event:
            inv = self._pending.pop(process, None)
            if inv is None:
                raise ValueError(f"process {process!r} has no operation in flight")
            return Event(process, type, inv.f, inv.key, value, t)

        return self._append(make)

    def ok(self, process: Hashable, value: Any = None) -> Event:
        """``process``'s operation completed with result ``value``."""
        return self.complete(process, "ok", value)

    def fail(self, process: Hashable, value: Any = None) -> Event:
        """``process``'s operation certainly did not take effect (``value``: why)."""
        return self.complete(process, "fail", value)

    def info(self, process: Hashable, value: Any = None) -> Event:
        """``process``'s operation has an unknown outcome (``value``: why); the process
        should not invoke again."""
        return self.complete(process, "info", value)

    @property
    def in_flight(self) -> dict:
        """Processes with an invocation not yet completed -> that invocation."""
        with self._lock:
            return dict(self._pending)

    def close(self) -> None:
        """Close the file (events are no longer written); safe to call twice."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._file is not None:
                self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_history(path: str | Path) -> list[Event]:
    """Every event of a JSON-lines history file. A torn last line (the writer was killed
    mid-write) is ignored; a bad line elsewhere raises ValueError naming the file and line."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    events = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(Event.from_json(line))
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines) - 1:   # no newline after it: torn
                break
            raise ValueError(f"{path}:{i + 1}: bad history line: {exc}") from None
    return events


class Operations(NamedTuple):
    """A history as the checker takes it: ``linearizable`` (read / write / cas) for
    ``linearizability.check``, ``stale_reads`` (as ``read`` operations) for
    ``linearizability.check_stale_reads``, and ``other`` (pairs of events of other kinds, the
    completion None when missing)."""

    linearizable: list[Operation]
    stale_reads: list[Operation]
    other: list[tuple[Event, Event | None]]


def to_operations(events: Iterable[Event]) -> Operations:
    """Pair each invocation with its process's next completion and make checker operations.
    An invocation never completed becomes ``info``; a completion without an invocation
    raises ValueError. ``Operation.index`` is the invocation's position in ``events``."""
    pending: dict = {}
    pairs: list = []
    for i, ev in enumerate(events):
        if ev.type == "invoke":
            if ev.process in pending:
                raise ValueError(f"event {i}: process {ev.process!r} invokes {ev.f} with an "
                                 "operation still in flight")
            pending[ev.process] = (i, ev)
            pairs.append([i, ev, None])
        else:
            if ev.process not in pending:
                raise ValueError(f"event {i}: {ev.type} of process {ev.process!r} without an "
                                 "invocation")
            j, inv = pending.pop(ev.process)
            if ev.f != inv.f:
                raise ValueError(f"event {i}: completes {ev.f} but process {ev.process!r} "
                                 f"invoked {inv.f}")
            pairs.append([j, inv, ev])
    # Keep one record per operation: the completed one, or the bare invocation.
    ops: dict = {}
    for j, inv, comp in pairs:
        if comp is not None or j not in ops:
            ops[j] = (inv, comp)
    linearizable, stale, other = [], [], []
    for j in sorted(ops):
        inv, comp = ops[j]
        status = comp.type if comp is not None else "info"
        ret = comp.time if comp is not None and status != "info" else math.inf
        output = comp.value if comp is not None and status == "ok" else None
        f = inv.f
        if f in ("read", "stale_read"):
            op = Operation(inv.process, "read", inv.key, None, output, inv.time, ret, status, j)
            (linearizable if f == "read" else stale).append(op)
        elif f == "write":
            linearizable.append(Operation(inv.process, "write", inv.key, inv.value, None,
                                          inv.time, ret, status, j))
        elif f == "cas":
            exp, new = inv.value
            linearizable.append(Operation(inv.process, "cas", inv.key, (exp, new), output,
                                          inv.time, ret, status, j))
        else:
            other.append((inv, comp))
    return Operations(linearizable, stale, other)
