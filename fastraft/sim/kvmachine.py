"""The simulator's kv mode: the real state machine on every simulated node, fed real commands
(sessions, puts with leases, lease grants, renewals, revocations, revision cas, clock ticks)
stamped by the clocks of leaders that disagree.

Place in the architecture: part of ``fastraft.sim`` (deterministic, no IO), used by
``runner.Simulation`` when ``SimConfig.kv`` is set (``fastraft sim --kv``). ``KVSimMachine``
stands in for the digest machine of ``cluster.SimStateMachine``: its digest chains, at every
applied index, the payload, the answer and the change events (revision, put/delete, key,
value) of the entry, so the checker's state-machine safety invariant ("every node that
applied index i reached the same digest") becomes: every node gave the same answers and made
the same changes at the same revisions, lease expiries included, across crashes, restarts and
snapshot installs (a snapshot carries the machine's real snapshot stream, restored with
``KVStateMachine.restore``).

``KVCommands`` makes the payloads: each node has a clock skew of its own (up to
``MAX_SKEW_MS`` ahead or behind), and a command is stamped with the proposing node's clock,
so a new leader's first command may jump the log's clock forward or lag it: the lease refresh
of a new term and the clock's monotonicity are exercised, not assumed.
"""

from __future__ import annotations

import random
from zlib import crc32

from .. import codec
from ..statemachine import KVStateMachine

__all__ = ["KVSimMachine", "KVCommands", "MAX_SKEW_MS"]

#: The farthest a simulated node's clock is from the true time (ms), either way.
MAX_SKEW_MS = 400
#: Simulated milliseconds per step of the simulation's time.
MS_PER_STEP = 10
_KEYS = 6


class KVSimMachine:
    """The real ``KVStateMachine`` behind the simulator's machine interface (``index``,
    ``digest``, ``apply``, ``data``, ``from_data``)."""

    __slots__ = ("m", "digest")

    def __init__(self, m: KVStateMachine, digest: int) -> None:
        self.m = m
        self.digest = digest
        m.events = []

    @property
    def index(self) -> int:
        return self.m.applied_index

    @classmethod
    def from_data(cls, data) -> KVSimMachine:
        if data is None:
            return cls(KVStateMachine(session_timeout_ms=60_000), 0)
        digest, stream = data
        return cls(KVStateMachine.restore([stream]), digest)

    def data(self):
        return (self.digest, b"".join(self.m.snapshot_chunks()))

    def apply(self, index: int, payload: bytes, term: int = 0) -> None:
        m = self.m
        answer = m.apply(index, payload, term)
        events = m.events
        m.events = []
        self.digest = crc32(repr((answer, events)).encode(), crc32(payload, self.digest))


class KVCommands:
    """The payloads of the kv mode's writes (``Workload.make_payload``), from ``now()`` (the
    simulation's step) and each node's clock skew; it learns session and lease ids from what
    the nodes apply (``learn``)."""

    def __init__(self, rng: random.Random, now, node_ids) -> None:
        self.rng = rng
        self.now = now
        self.skew = {i: rng.randint(-MAX_SKEW_MS, MAX_SKEW_MS) for i in node_ids}
        self.sessions: list[int] = []
        self.leases: list[int] = []
        self.seq = 0

    def ts(self, node_id: int) -> int:
        return max(0, 10_000 + self.now() * MS_PER_STEP + self.skew.get(node_id, 0))

    def __call__(self, node_id: int, counter: int) -> bytes:
        rng = self.rng
        ts = self.ts(node_id)
        if not self.sessions or rng.random() < 0.02:
            return codec.encode_command([codec.CMD_REGISTER, ts])
        sid = rng.choice(self.sessions[-3:])
        self.seq += 1
        s = (sid, self.seq, self.seq)
        key = b"k%d" % rng.randrange(_KEYS)
        lease = rng.choice(self.leases[-4:]) if self.leases and rng.random() < 0.6 else 0
        r = rng.random()
        if r < 0.10:
            return codec.encode_command([codec.CMD_LEASE_GRANT, ts, *s,
                                         rng.choice((50, 200, 1000, 5000))])
        if r < 0.20 and lease:
            return codec.encode_command([codec.CMD_LEASE_KEEPALIVE, ts, lease])
        if r < 0.24 and lease:
            return codec.encode_command([codec.CMD_LEASE_REVOKE, ts, *s, lease])
        if r < 0.30:
            return codec.encode_command([codec.CMD_TICK, ts])
        if r < 0.40:
            return codec.encode_command([codec.CMD_CAS_REV, ts, *s, key,
                                         rng.choice((0, counter - 3, counter)) if counter > 3
                                         else 0, b"r%d" % counter, lease])
        if r < 0.50:
            return codec.encode_command([codec.CMD_DELETE, ts, *s, key])
        cmd = [codec.CMD_PUT, ts, *s, key, b"v%d" % counter]
        return codec.encode_command(cmd + [lease] if lease else cmd)

    def tick(self, node_id: int) -> bytes:
        """A clock entry stamped by ``node_id`` (the liveness probe of the kv mode)."""
        return codec.encode_command([codec.CMD_TICK, self.ts(node_id)])

    def learn(self, index: int, payload: bytes) -> None:
        """An entry applied somewhere: a REGISTER or LEASE_GRANT made an id (its index)."""
        if payload[:1] == b"\x92" and payload[1:2] == bytes([codec.CMD_REGISTER]):
            if index not in self.sessions:
                self.sessions.append(index)
        elif payload[:1] == b"\x96" and payload[1:2] == bytes([codec.CMD_LEASE_GRANT]):
            if index not in self.leases:
                self.leases.append(index)
