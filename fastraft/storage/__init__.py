"""fastraft.storage: the durable Raft log, hard state and snapshot marks behind one interface.

Place in the architecture: below the runtime (server), beside the state machine and the
transport. It imports the core (``fastraft.core``: the WAL record codec and the log ring), the
errors and the plain message types of ``fastraft.raft.messages`` — never the engine's logic,
never msgpack.

Modules: ``base`` (the ``LogStore`` protocol, ``RecoveredState`` and ``StoreBase``, what
every backend shares), ``wal`` (the default backend: segment files of checksummed records,
recovery, ``repair``), ``sqlite`` (the SQLite backend: the log, hard state, snapshot mark and
the key-value state in one database, group commit by transaction), ``memory`` (the same
semantics in memory, with a model of what a crash keeps: the simulator's disk and the
engine's unit-test harness both use it), ``snapshot`` (snapshot files), ``_files`` (file
helpers).
"""

from .base import LogStore, RecoveredState
from .memory import MemoryStore
from .sqlite import SqliteStore
from .wal import WalStore, recover, repair

__all__ = ["LogStore", "RecoveredState", "WalStore", "MemoryStore", "SqliteStore", "recover",
           "repair"]
