"""fastraft.statemachine: the replicated key-value state machine and its client sessions.

Place in the architecture: under the runtime (server), which feeds it the committed entries of
each Ready batch and serves reads from it; beside the storage layer, which keeps its snapshots.
Deterministic: the same log gives the same state and answers on every node (time enters only
through the leader timestamps in the commands). It uses msgpack only through
``fastraft.codec`` and does no IO, except ``snapshotter`` (fork and asyncio, to write snapshots
without stalling the event loop, into the storage layer's snapshot files) and
``sqlite_machine`` (through the SQLite store it is given); it never imports the server.

Modules: ``kv`` (``KVStore``: a dict plus a sorted key index for prefix scans), ``sessions``
(the §6.3 session table: deduplication, cached responses, deterministic expiry), ``machine``
(``KVStateMachine``: apply, reads, snapshot stream and restore), ``snapshotter``
(``take_snapshot`` in a forked child, ``take_snapshot_sync`` in process), ``sqlite_machine``
(``SqliteStateMachine``: the same machine with its state in the SQLite backend's database;
imported by that backend only, not here).
"""

from .kv import KVStore
from .machine import KVStateMachine
from .sessions import Session, SessionTable

__all__ = ["KVStore", "KVStateMachine", "Session", "SessionTable"]
