"""Safety invariants of Raft, checked by the simulator after every step.

Place in the architecture: part of the deterministic simulator (``fastraft.sim``). It only
reads engine state (through ``RawNode._raft``: a white-box checker) and the simulator's
records; it never changes them. Each violation is a sentence; the simulator prints it with the
seed that replays it.

The properties (Raft paper, Figure 3, plus the client-visible ones):

1. Election safety: at most one leader per term.
2. Leader append-only: a leader never overwrites or deletes entries in its own term.
3. Log matching: two entries with the same index and term hold the same command and are
   preceded by identical logs (checked inductively: every entry a node persists must agree
   with the first one seen at that (index, term) on its payload and on the previous term).
4. Leader completeness: a node elected leader of term T holds every entry known committed
   at a term below T. (Entries committed in a later term are not required: a leader of a
   stale term may still be elected when its vote answers were delayed; it cannot commit.)
5. State machine safety: every node that applied index i reached the same state digest.
6. Commit monotonicity: a running node's commit index never decreases, and a committed
   entry never changes term.
7. Linearizable reads: a ReadIndex read's index covers every write acknowledged to a client
   before the read was asked for (checked in cluster.py, where reads are served).
"""

from __future__ import annotations

from zlib import crc32

from ..raft import LEADER

__all__ = ["Checker"]


class Checker:
    """The invariant checker of one simulation: the runtime reports persists, applies and
    restarts (``on_*``), the runner sweeps every node after every step (``check_node``);
    ``violations`` holds the first 20 broken properties as sentences."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.leaders: dict[int, int] = {}              # term -> leader id
        self.entries: dict[tuple[int, int], tuple[int, int]] = {}  # (idx, term) -> (crc, prev term)
        self.committed_terms: list[int] = [0]          # committed_terms[i]: term of entry i
        self.commit_known_at: list[int] = [0]          # lowest term at which i was known committed
        self.applied: dict[int, int] = {}              # index -> state digest after applying it
        self._commit_seen: dict[int, int] = {}         # node -> last commit index observed
        self._leader_mark: dict[int, tuple[int, int, int]] = {}  # node -> (term, last, last term)

    def fail(self, msg: str) -> None:
        """Record a violation (the first 20 are kept)."""
        if len(self.violations) < 20:
            self.violations.append(msg)

    # -- events from the simulated runtime -------------------------------------------------

    def on_persist(self, node_id: int, raft, batch) -> None:
        """Property 3, for the entries a node is about to make durable."""
        log = raft.log
        entries = self.entries
        idx = batch.first_index
        try:
            prev_term = log.term(idx - 1)
        except Exception:  # compacted: the first entry's predecessor is in a snapshot
            prev_term = -1
        for term, payload in batch.entries:
            key = (idx, term)
            val = (crc32(payload), prev_term)
            seen = entries.get(key)
            if seen is None:
                entries[key] = val
            elif seen[0] != val[0] or (seen[1] != val[1] and -1 not in (seen[1], val[1])):
                self.fail(f"log matching: node {node_id} entry ({idx}, term {term}) differs "
                          f"from the one seen before (crc/prev term {val} vs {seen})")
            prev_term = term
            idx += 1

    def on_apply(self, node_id: int, index: int, digest: int) -> None:
        """Property 5."""
        seen = self.applied.setdefault(index, digest)
        if seen != digest:
            self.fail(f"state machine safety: node {node_id} applied index {index} reaching "
                      f"digest {digest:#x}, another node reached {seen:#x}")

    def on_restart(self, node_id: int) -> None:
        """Node ``node_id`` restarted: its commit index and leader marks start over."""
        self._commit_seen.pop(node_id, None)
        self._leader_mark.pop(node_id, None)

    # -- the per-step sweep -----------------------------------------------------------------

    def check_node(self, node_id: int, raft) -> None:
        """Properties 1, 2, 4 and 6 for one node's engine (``RawNode._raft``), after a step."""
        log = raft.log
        ring = log.ring
        # 6: commit monotonicity and committed entries never change.
        c = log.committed
        seen = self._commit_seen.get(node_id, 0)
        if c < seen:
            self.fail(f"commit regressed on node {node_id}: {seen} -> {c}")
        if c > seen:
            self._record_commits(node_id, raft, max(seen, ring.offset) + 1, c)
            self._commit_seen[node_id] = c
        if raft.role != LEADER:
            self._leader_mark.pop(node_id, None)
            return
        # 1: one leader per term.
        other = self.leaders.setdefault(raft.term, node_id)
        if other != node_id:
            self.fail(f"election safety: nodes {other} and {node_id} both lead term {raft.term}")
        # 2 and 4.
        mark = self._leader_mark.get(node_id)
        if mark is None or mark[0] != raft.term:
            self._check_completeness(node_id, raft)
        else:
            _, last, last_term = mark
            if ring.last_index < last:
                self.fail(f"leader append-only: node {node_id} (term {raft.term}) log shrank "
                          f"from {last} to {ring.last_index}")
            elif last > ring.offset and ring.term(last) != last_term:
                self.fail(f"leader append-only: node {node_id} (term {raft.term}) rewrote "
                          f"index {last}")
        self._leader_mark[node_id] = (raft.term, ring.last_index, ring.last_term)

    def _record_commits(self, node_id: int, raft, lo: int, hi: int) -> None:
        ring = raft.log.ring
        terms = self.committed_terms
        known = self.commit_known_at
        t_now = raft.term
        for idx in range(lo, hi + 1):
            t = ring.term(idx)
            if idx < len(terms):
                if terms[idx] < 0:       # first seen through a snapshot: learn its term now
                    terms[idx] = t
                elif terms[idx] != t:
                    self.fail(f"committed entry changed: index {idx} committed with term "
                              f"{terms[idx]}, node {node_id} commits it with term {t}")
                if t_now < known[idx]:
                    known[idx] = t_now
            elif idx == len(terms):
                terms.append(t)
                known.append(t_now)
            else:  # a gap: commits below lo were seen through a snapshot; fill from the ring
                for j in range(len(terms), idx + 1):
                    terms.append(ring.term(j) if j > ring.offset else -1)
                    known.append(t_now)

    def _check_completeness(self, node_id: int, raft) -> None:
        ring = raft.log.ring
        terms = self.committed_terms
        known = self.commit_known_at
        for idx in range(max(ring.offset + 1, 1), len(terms)):
            if known[idx] >= raft.term or terms[idx] < 0:
                continue
            if idx > ring.last_index:
                self.fail(f"leader completeness: node {node_id} leads term {raft.term} "
                          f"without committed index {idx} (its log ends at {ring.last_index})")
                return
            if ring.term(idx) != terms[idx]:
                self.fail(f"leader completeness: node {node_id} leads term {raft.term} with "
                          f"term {ring.term(idx)} at committed index {idx} (committed term "
                          f"{terms[idx]})")
                return
