"""Fixtures of the storage tests (tests/storage), handed out as the ``sh`` namespace.

Place in the architecture: test infrastructure only; no fastraft module imports it. pytest runs
with ``--import-mode=importlib``, so the test modules share helpers through fixtures only.

- ``sh.Model``: a plain in-memory model of the storage semantics (base.py's module docstring),
  written independently of the backends (lists, no LogRing): the reference the WAL is checked
  against, including what a restart returns (``model.recovered()`` / ``model.restart()``).
- ``sh.batch(first, terms)``: an EntryBatch whose payloads name index and term.
- ``sh.crash(store)``: drop a WalStore like a killed process would (no sync, no close).
- ``sh.faults``: inject OSError(errno) into ``os.write`` / ``os.fsync`` calls on the store's
  open segment (or on any file of the WAL directory) from the next call on.
- ``any_store``: a fresh store of each backend (WAL, memory, SQLite) for the shared semantics.
"""

from __future__ import annotations

import copy
import os
from types import SimpleNamespace

import pytest

from fastraft.errors import CompactedError, UnavailableError
from fastraft.raft.messages import EntryBatch, HardState, SnapshotMeta
from fastraft.storage import MemoryStore, RecoveredState, SqliteStore, WalStore
from fastraft.storage import wal as wal_module


def payload(index: int, term: int, size: int = 0) -> bytes:
    p = f"{index}@{term}".encode()
    return p + b"." * max(0, size - len(p))


def batch(first: int, terms, size: int = 0) -> EntryBatch:
    return EntryBatch(first, [(t, payload(first + k, t, size)) for k, t in enumerate(terms)])


def meta(index: int, term: int, voters=(1, 2, 3), outgoing=(), learners=(),
         context=b"") -> SnapshotMeta:
    return SnapshotMeta(index, term, frozenset(voters), frozenset(outgoing),
                        frozenset(learners), context)


class Model:
    """The storage semantics on plain lists: entries ``base+1 ..`` after ``base``/``base_term``."""

    def __init__(self) -> None:
        self.base = 0
        self.base_term = 0
        self.log: list = []
        self.hs = HardState()
        self.mark: SnapshotMeta | None = None

    def copy(self) -> Model:
        return copy.deepcopy(self)

    @property
    def mark_index(self) -> int:
        return self.mark.index if self.mark is not None else 0

    @property
    def last_index(self) -> int:
        return self.base + len(self.log)

    @property
    def first_index(self) -> int:
        return self.base + 1

    def term(self, i: int) -> int:
        if i == self.base:
            return self.base_term
        if i < self.base:
            raise CompactedError(i)
        if i > self.last_index:
            raise UnavailableError(i)
        return self.log[i - self.base - 1][0]

    def append(self, b: EntryBatch) -> None:
        assert self.mark_index < b.first_index <= self.last_index + 1
        del self.log[b.first_index - self.base - 1:]
        self.log.extend(b.entries)

    def save_hard_state(self, hs: HardState) -> None:
        self.hs = hs

    def save_snapshot_mark(self, m: SnapshotMeta) -> None:
        keep = self.base <= m.index <= self.last_index and self.term(m.index) == m.term
        if not keep:
            self.base, self.base_term, self.log = m.index, m.term, []
        self.mark = m

    def compact(self, i: int) -> None:
        assert i <= self.mark_index
        if i > self.base:
            self.base_term = self.term(i)
            del self.log[:i - self.base]
            self.base = i

    def recovered(self) -> RecoveredState:
        s = self.mark_index
        return RecoveredState(self.mark, self.log[s - self.base:], self.hs)

    def restart(self) -> None:
        """What a restart keeps: the log from the snapshot mark on."""
        self.compact(self.mark_index)


def crash(store: WalStore) -> None:
    """Abandon ``store`` as a killed process would: no sync, no close (its fd is released).
    The records it buffered are handed to the kernel first — the worst case for recovery,
    as if the crash came just after a write that preceded its fsync; the crash tests then
    cut the file anywhere after the synced size (what the kernel may lose)."""
    if store._fd is not None:
        store._flush()
        os.close(store._fd)
        store._fd = None
    store._closed = True


def segment_paths(directory) -> list[str]:
    return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
            if wal_module.parse_segment_name(n) is not None]


def random_op(rng, store, model, compact: bool = True) -> tuple[str, EntryBatch | None]:
    """Apply one random valid operation to ``store`` and ``model``; returns its description
    and, for an append, the batch."""
    roll = rng.random()
    last = model.last_index
    mark = model.mark_index
    if roll < 0.55:
        first = rng.randint(max(mark, model.base) + 1, last + 1) if rng.random() < 0.3 \
            else last + 1
        term = model.term(first - 1)
        terms = []
        for _ in range(rng.randint(0, 4)):
            term += rng.random() < 0.2
            terms.append(term)
        b = batch(first, terms, size=rng.choice((0, 10, 60, 200)))
        store.append(b)
        model.append(b)
        return f"append {first}+{len(terms)}", b
    if roll < 0.75:
        hs = HardState(rng.randint(0, 9), rng.randint(0, 3), rng.randint(0, 9))
        store.save_hard_state(hs)
        model.save_hard_state(hs)
        return f"hard state {hs}", None
    if roll < 0.9:
        lo = max(mark, model.base)
        if rng.random() < 0.7 and last >= lo:
            i = rng.randint(lo, last)
            ids = rng.sample(range(1, 8), 5)       # 3 voters, up to 2 learners, a context
            m = meta(i, model.term(i), voters=ids[:3], learners=ids[3:rng.randint(3, 5)],
                     context=rng.randbytes(rng.choice((0, 5, 40))))
        else:
            i = rng.randint(max(mark, last), last + 5)
            m = meta(i, model.term(last) + rng.randint(1, 2), outgoing=(7,), learners=(8,),
                     context=b"joint")
        store.save_snapshot_mark(m)
        model.save_snapshot_mark(m)
        return f"snapshot mark {m.index}@{m.term}", None
    if compact and mark:
        i = rng.randint(0, mark)
        store.compact(i)
        model.compact(i)
        return f"compact {i}", None
    store.sync()
    return "sync", None


class Faults:
    """Make ``os.write`` / ``os.fsync`` raise OSError(errno) on chosen descriptors."""

    def __init__(self, monkeypatch) -> None:
        self.write_errno = None
        self.fsync_errno = None
        self.only_fd = None         # restrict to this fd (None: every fd)
        real_write, real_fsync = os.write, os.fsync

        def write(fd, data):
            if self.write_errno is not None and self.only_fd in (None, fd):
                raise OSError(self.write_errno, os.strerror(self.write_errno))
            return real_write(fd, data)

        def fsync(fd):
            if self.fsync_errno is not None and self.only_fd in (None, fd):
                raise OSError(self.fsync_errno, os.strerror(self.fsync_errno))
            return real_fsync(fd)

        monkeypatch.setattr(wal_module.os, "write", write)
        monkeypatch.setattr(wal_module.os, "fsync", fsync)

    def clear(self) -> None:
        self.write_errno = self.fsync_errno = self.only_fd = None


@pytest.fixture(scope="session")
def sh():
    """The helpers above (immutable; session scope so hypothesis tests may take it)."""
    return SimpleNamespace(Model=Model, batch=batch, random_op=random_op, payload=payload,
                           meta=meta, crash=crash,
                           segment_paths=segment_paths, HardState=HardState,
                           EntryBatch=EntryBatch, WalStore=WalStore, MemoryStore=MemoryStore,
                           SqliteStore=SqliteStore, wal=wal_module)


@pytest.fixture
def faults(monkeypatch):
    return Faults(monkeypatch)


@pytest.fixture
def wal_dir(tmp_path):
    return str(tmp_path / "wal")


@pytest.fixture(params=["wal", "memory", "sqlite"])
def any_store(request, tmp_path):
    """A fresh store of each backend, for the semantics shared by all of them."""
    if request.param == "wal":
        store = WalStore.open(str(tmp_path / "wal"), segment_size=512)
    elif request.param == "sqlite":
        store = SqliteStore(str(tmp_path / "raft.db"))
    else:
        store = MemoryStore()
    yield store
    store.close()
