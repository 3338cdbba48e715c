"""What the parts of a node need from each other, as typed Protocols.

Place in the architecture: part of the runtime (``fastraft.server``), imported by ``node``,
``requests``, ``snapshots`` and ``wiring`` (type checking only: nothing here runs). The parts
are built by ``wiring.build_node`` and handed to ``node.Node`` (as hashicorp/raft's
``NewRaft(conf, fsm, logs, stable, snaps, trans)`` is handed its parts):

- ``Backend``: the storage of a node (``backends.WalBackend`` or ``backends.SqliteBackend``):
  the log store, the snapshot files and the state machine, recovered by ``open``.
- ``Peers`` / ``PeerHandler``: what the node uses of the peer transport
  (``peers.PeerTransport``), and what the transport calls back on the node.
- ``Clients`` / ``RequestHandler`` / ``Responder``: the same for the client port
  (``clients.ClientServer``, whose handler is ``requests.Requests``) and a client connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..codec import Request
    from ..raft import HardState, Message, RaftLog, Snapshot, SnapshotMeta
    from ..statemachine import KVStateMachine
    from ..storage.snapshot import SnapshotStore

__all__ = ["Backend", "Peers", "PeerHandler", "Clients", "RequestHandler", "Responder"]


class Backend(Protocol):
    """A node's storage: ``open`` recovers it once; after that ``store`` takes the engine's
    entries and hard state and ``machine`` is the state machine in force (it changes when a
    snapshot is installed). Every method may raise StorageError: the node must stop."""

    name: str
    store: Any                      # a storage.base.LogStore: append, save_hard_state, sync...
    snaps: SnapshotStore
    machine: KVStateMachine

    def open(self) -> tuple[RaftLog, HardState, Snapshot | None]:
        """Recover: the engine's log, its hard state and the newest snapshot file (if it is
        newer than the log's mark). RecoveryError when the directory cannot be recovered."""

    def persist_snapshot(self, snap: Snapshot) -> None:
        """A snapshot from the leader, in the Ready, before the sync."""

    def install(self, snap: Snapshot) -> float | None:
        """After the sync: make the leader's snapshot the state machine's state (the state
        built off the loop by ``snaps.prepare``, when there is one). Returns how long
        building it off the loop took, None when it was restored here."""

    def drop_prepared(self, applied: int) -> None:
        """Free a state built ahead from a received snapshot the log has been applied up to
        or past (called once per Ready pass)."""

    async def snapshot(self, meta: SnapshotMeta) -> tuple[SnapshotMeta, str]:
        """Write a snapshot file of the state machine without stalling the loop."""

    def after_snapshot(self, meta: SnapshotMeta, fsync: bool) -> int:
        """Release the storage the new snapshot covers; returns the WAL segments deleted."""

    def close(self) -> None:
        """Close the store (after the node's last sync)."""


class PeerHandler(Protocol):
    """What the peer transport calls on the node (the names and meanings ``PeerTransport``
    relies on)."""

    def on_peer_message(self, m: Message) -> str | None:
        """Step a validated message; returns why it is refused (the transport then closes
        the connection), or None."""

    def on_unreachable(self, pid: int) -> None:
        """A message to ``pid`` could not be sent."""

    def on_snapshot_sent(self, pid: int, ok: bool) -> None:
        """The snapshot stream to ``pid`` ended, delivered or not."""

    def fatal(self, reason: str) -> None:
        """Stop at once (a received snapshot could not be stored)."""

    def peer_refused(self, pid: int, addr: str = "") -> str | None:
        """Why a connection from node ``pid`` (which says it listens at ``addr``) is
        refused (removed, unknown), or None."""

    def peer_address(self, pid: int) -> tuple[str, int] | None:
        """Where to dial node ``pid`` when it is not among the peers (or None)."""

    def removed(self, why: str) -> None:
        """A peer refused this node as removed from the cluster: stop."""


class Peers(Protocol):
    """The peer transport as the node uses it."""

    async def start(self) -> None:
        """Listen for peers and start dialling them."""

    def send(self, msgs: list) -> None:
        """Send the engine's messages, in order per peer."""

    def connected(self, pid: int) -> bool:
        """Whether the connection to ``pid`` is up (a leadership successor must be)."""

    def set_peers(self, peers: dict) -> None:
        """Dial exactly these peers (id -> (host, port)) from now on."""

    def abort(self) -> None:
        """Drop every connection at once (the node is failing)."""

    async def close(self) -> None:
        """Close every connection and stop dialling."""


class Responder(Protocol):
    """A client connection: where the answer to a request goes."""

    def respond(self, req_id: int, status: int, *values) -> None:
        """Queue the answer ``(req_id, status, *values)``; a closed connection drops it."""


class RequestHandler(Protocol):
    """What the client port calls for each decoded request."""

    def on_request(self, conn: Responder, req: Request) -> None:
        """Take one decoded request; its answer goes to ``conn`` (now or later)."""


class Clients(Protocol):
    """The client port as the node uses it."""

    conns: set                      # the open connections (each has ``transport.abort()``)

    async def start(self) -> None:
        """Listen for clients."""

    def stop_accepting(self) -> None:
        """Accept no new connection (the open ones stay)."""

    def flush(self) -> None:
        """Write the answers queued so far (else they leave in the next loop turn)."""

    async def close(self) -> None:
        """Graceful: tell every connection the node is going away, then close them."""
