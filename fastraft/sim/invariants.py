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

8. Membership (thesis §4, rule 8 of ``raft/raft.py``): once the removal of node X is
   committed (known committed at term R), X never wins the election of a term above R as a
   voter of its configuration. (It may still win as a node outside its configuration, whose
   log holds its removal, that does not know the removal committed, e.g. after a crash lost
   its commit index: such a leader only finishes its removal, counted by nobody, and steps
   down once it commits.) The committed configuration never has zero voters, never changes
   while joint except to leave, and never names a removed node again. Removed nodes keep
   running and never disrupt: a vote request of a removed node never changes the term or
   the leader of a member inside a leader's lease (``on_removed_vote_request``). The checker
   derives every configuration itself from the log (``apply_conf_change``, its own
   arithmetic, not the engine's).

Rule checks (``Checker.rules``, on by default): the premises of the safety argument, checked
against ground truth (the simulated disks: what is durable now) at the moment they matter,
rather than waiting for a violation of 1-8 to surface; ``rules=False`` keeps the end-to-end
properties only (bench/sim_power.py --checks end-to-end measures both).

9. Commitment (Figure 2, §5.4.2, thesis §4.3): when a leader's commit index moves to ``c``
   (the simulator reports each move as it happens, ``on_leader_commit``), the entry at ``c``
   is of the leader's term and durable on a majority of the incoming voters AND a majority
   of the outgoing voters of the configuration the leader had at that moment. Learners are
   never counted: only voters' disks are asked.
10. Elections (Figure 2, thesis §4.3): when a node becomes leader of term T
    (``on_elected``), a majority of the incoming voters AND of the outgoing voters of its
    configuration have durably voted for it in T (or moved past T); learners never count.
11. Configurations in log order: after every step, each node's configuration is the one its
    own log says (its snapshot's, then every conf-change entry in log order, rolled back
    when an entry is truncated): configurations take effect when appended, on every node.
12. One change at a time (thesis §4.1, §4.3): no log ever holds two conf-change entries
    beyond the committed prefix (a leader appends one, the leave-joint one included, only
    once every earlier one is committed).
"""

from __future__ import annotations

from zlib import crc32

from ..raft import ADD_LEARNER, ADD_VOTER, LEADER, ConfState, decode_conf_change
from ..raft.confchange import CONF_MARKER, BadConfChange

__all__ = ["Checker", "apply_conf_change"]

_EMPTY = ConfState(frozenset())


def apply_conf_change(cs: ConfState, payload) -> tuple[ConfState, str | None]:
    """The configuration a conf-change entry turns ``cs`` into, by the checker's own
    arithmetic (not the engine's ``next_config``), and what is wrong with it, if anything.
    Voter changes go through a joint configuration (outgoing = the old voters); learner-only
    changes apply directly; a leave-joint entry drops the outgoing voters."""
    try:
        cc = decode_conf_change(payload)
    except BadConfChange as e:
        return cs, f"undecodable conf change ({e})"
    if cc.leave_joint:
        if not cs.outgoing:
            return cs, "a leave-joint entry outside a joint configuration"
        return ConfState(cs.voters, frozenset(), cs.learners), None
    if cs.outgoing:
        return cs, "a configuration change while joint (one change at a time)"
    voters = set(cs.voters)
    learners = set(cs.learners)
    for kind, nid, _ctx in cc.changes:
        if kind == ADD_VOTER:
            learners.discard(nid)
            voters.add(nid)
        elif kind == ADD_LEARNER:
            learners.add(nid)
        else:
            voters.discard(nid)
            learners.discard(nid)
    voters = frozenset(voters)
    new = ConfState(voters, frozenset() if voters == cs.voters else cs.voters,
                    frozenset(learners))
    if not voters:
        return new, "a configuration with zero voters"
    return new, None


def _members(cs: ConfState) -> frozenset:
    return cs.voters | cs.outgoing | cs.learners


class _ConfShadow:
    """The checker's own view of one node's configuration, from its log: the configuration
    at the snapshot (``base``, at ``base_index``), then ``confs``, the ``(index, term,
    ConfState)`` of the conf-change entries after it, scanned up to ``(scan, scan_term)``."""

    __slots__ = ("meta", "base", "base_index", "confs", "scan", "scan_term")

    def __init__(self, meta, base: ConfState) -> None:
        self.meta = meta
        self.base = base
        self.base_index = meta.index
        self.confs: list = []
        self.scan = meta.index
        self.scan_term = meta.term

    def current(self) -> ConfState:
        return self.confs[-1][2] if self.confs else self.base


class Checker:
    """The invariant checker of one simulation: the runtime reports persists, applies and
    restarts (``on_*``), the runner sweeps every node after every step (``check_node``);
    ``violations`` holds the first 20 broken properties as sentences. ``rules``: also the
    rule checks 9-12 (module docstring)."""

    #: The default of ``rules`` (bench/sim_power.py switches it off to measure what the
    #: end-to-end properties alone catch).
    rules = True

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.leaders: dict[int, int] = {}              # term -> leader id
        self.entries: dict[tuple[int, int], tuple[int, int]] = {}  # (idx, term) -> (crc, prev term)
        self.committed_terms: list[int] = [0]          # committed_terms[i]: term of entry i
        self.commit_known_at: list[int] = [0]          # lowest term at which i was known committed
        self.applied: dict[int, int] = {}              # index -> state digest after applying it
        self._commit_seen: dict[int, int] = {}         # node -> last commit index observed
        self._leader_mark: dict[int, tuple[int, int, int]] = {}  # node -> (term, last, last term)
        # Membership (properties 8, 11, 12).
        self.disks: dict = {}                          # node -> SimStorage (durable truth)
        self.committed_conf = _EMPTY                   # the last committed configuration
        self.members = frozenset()                     # its members (voters and learners)
        self.removed: dict[int, int] = {}              # node -> index of its committed removal
        self.removed_requests = 0                      # their vote requests met in a lease
        self._shadows: dict[int, _ConfShadow] = {}

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
        self._shadows.pop(node_id, None)

    def on_leader_commit(self, node_id: int, raft, voters, outgoing) -> None:
        """Property 9: leader ``node_id``'s commit index just moved, under the configuration
        ``voters`` / ``outgoing`` it had when it moved (before anything it appended after)."""
        if self.rules:
            self._check_commit(node_id, raft, voters, outgoing)
        # Record the commit now, before the leader can compact the entries away.
        self._note_commit(node_id, raft)

    def _check_commit(self, node_id: int, raft, voters, outgoing) -> None:
        log = raft.log
        c = log.committed
        t = log.term(c)
        if t != raft.term:
            self.fail(f"commitment: leader {node_id} (term {raft.term}) committed index {c} "
                      f"of term {t} (a leader counts replicas of its own term only)")
        disks = self.disks
        for name, group in (("incoming", voters), ("outgoing", outgoing)):
            if not group:
                continue
            have = [v for v in group if v in disks and disks[v].holds(c, t)]
            if 2 * len(have) <= len(group):
                self.fail(f"commitment: leader {node_id} (term {raft.term}) committed "
                          f"index {c} (term {t}) durable on {sorted(have)} only of its "
                          f"{name} voters {sorted(group)}")

    def on_elected(self, node_id: int, raft) -> None:
        """Properties 8 and 10: ``node_id`` just became leader of ``raft.term``."""
        term = raft.term
        if self.rules:
            self._check_votes(node_id, raft)
        at = self.removed.get(node_id)
        if (at is not None and term > self.commit_known_at[at]
                and (node_id in raft.voters or node_id in raft.outgoing)):
            self.fail(f"removed node won an election: node {node_id} leads term {term} as a "
                      f"voter of {_show(raft.conf_state())}, its removal (index {at}) was "
                      f"committed at term {self.commit_known_at[at]}")

    def _check_votes(self, node_id: int, raft) -> None:
        term = raft.term
        disks = self.disks
        for name, group in (("incoming", raft.voters), ("outgoing", raft.outgoing)):
            if not group:
                continue
            granted = []
            for v in group:
                if v == node_id:
                    granted.append(v)
                    continue
                hs = disks[v].durable_hard_state() if v in disks else None
                if hs is not None and (hs.term > term or (hs.term == term
                                                          and hs.vote == node_id)):
                    granted.append(v)
            if 2 * len(granted) <= len(group):
                self.fail(f"election: node {node_id} won term {term} with durable votes "
                          f"of {sorted(granted)} only among its {name} voters {sorted(group)}")

    def on_removed_vote_request(self, node_id: int, frm: int, before, after) -> None:
        """A removed node does not disrupt: its vote request ``frm`` -> ``node_id`` (a member)
        found ``node_id`` inside a leader's lease (``before``: (term, lead, in lease)) and
        must leave its term and leader as they were (``after``: (term, lead))."""
        term, lead, in_lease = before
        self.removed_requests += in_lease
        if in_lease and (after[0] != term or after[1] != lead):
            self.fail(f"removed node {frm} disrupted member {node_id}: term {term} -> "
                      f"{after[0]}, leader {lead} -> {after[1]}")

    # -- the per-step sweep -----------------------------------------------------------------

    def check_node(self, node_id: int, raft) -> None:
        """Properties 1, 2, 4, 6, 11 and 12 for one node's engine (``RawNode._raft``), after
        a step."""
        log = raft.log
        ring = log.ring
        # 6: commit monotonicity and committed entries never change.
        self._note_commit(node_id, raft)
        if self.rules:
            self._check_conf(node_id, raft)
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

    def _note_commit(self, node_id: int, raft) -> None:
        c = raft.log.committed
        seen = self._commit_seen.get(node_id, 0)
        if c < seen:
            self.fail(f"commit regressed on node {node_id}: {seen} -> {c}")
        if c > seen:
            self._record_commits(node_id, raft, max(seen, raft.log.ring.offset) + 1, c)
            self._commit_seen[node_id] = c

    def _record_commits(self, node_id: int, raft, lo: int, hi: int) -> None:
        ring = raft.log.ring
        terms = self.committed_terms
        known = self.commit_known_at
        t_now = raft.term
        conf_from = 0
        if lo > len(terms):
            # A gap: the commits below ``lo`` are seen through this node's snapshot only
            # (compacted here: their terms are learnt later, from another node). Its
            # configuration is the committed one at the snapshot's index.
            for _j in range(len(terms), lo):
                terms.append(-1)
                known.append(t_now)
            meta = raft.log.snapshot.meta
            if meta.voters:
                conf_from = meta.index
                self._conf_committed(meta.index, ConfState(meta.voters, meta.outgoing,
                                                           meta.learners), None)
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
            else:
                terms.append(t)
                known.append(t_now)
                if idx > conf_from:
                    p = ring.payload(idx)
                    if p and p[0] == CONF_MARKER:
                        cs, problem = apply_conf_change(self.committed_conf, p)
                        self._conf_committed(idx, cs, problem)

    def _conf_committed(self, idx: int, cs: ConfState, problem) -> None:
        """Property 8 for a newly committed configuration, that of index ``idx``."""
        if problem:
            self.fail(f"committed configuration at index {idx}: {problem}")
        if not cs.voters:
            self.fail(f"committed configuration at index {idx} has zero voters")
        members = _members(cs)
        back = members & self.removed.keys()
        if back:
            self.fail(f"committed configuration at index {idx} names removed nodes "
                      f"{sorted(back)} again")
        for x in self.members - members:
            self.removed.setdefault(x, idx)
        self.committed_conf = cs
        self.members = members

    def _check_conf(self, node_id: int, raft) -> None:
        """Properties 11 and 12: the node's configuration is the one its log says, and its
        log holds at most one conf-change entry beyond the committed prefix."""
        log = raft.log
        ring = log.ring
        meta = log.snapshot.meta
        sh = self._shadows.get(node_id)
        if sh is None or sh.meta is not meta:
            if meta.voters:
                base = ConfState(meta.voters, meta.outgoing, meta.learners)
            elif sh is not None:
                base = sh.current()
            else:
                base = _EMPTY
            sh = self._shadows[node_id] = _ConfShadow(meta, base)
        last = ring.last_index
        confs = sh.confs
        while confs and (confs[-1][0] > last or ring.term(confs[-1][0]) != confs[-1][1]):
            confs.pop()                           # truncated: rolled back
        if sh.scan > last or (sh.scan > ring.offset and ring.term(sh.scan) != sh.scan_term):
            sh.scan = confs[-1][0] if confs else sh.base_index   # rescan the changed tail
        if last > sh.scan:
            cs = sh.current()
            idx = sh.scan + 1
            for term, p in ring.slice(idx, last + 1):
                if p and p[0] == CONF_MARKER:
                    cs, _problem = apply_conf_change(cs, p)
                    confs.append((idx, term, cs))
                idx += 1
        sh.scan = last
        sh.scan_term = ring.last_term
        terms = self.committed_terms
        pending = [idx for idx, t, _cs in confs
                   if not (idx < len(terms) and terms[idx] in (t, -1))]
        if len(pending) > 1:
            self.fail(f"one change at a time: node {node_id} holds uncommitted conf-change "
                      f"entries at indexes {pending}")
        want = sh.current()
        have = ConfState(raft.voters, raft.outgoing, raft.learners)
        if have != want:
            self.fail(f"configuration out of log order: node {node_id} (log up to {last}, "
                      f"committed {log.committed}) runs {_show(have)}, its log says "
                      f"{_show(want)}")

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


def _show(cs: ConfState) -> str:
    out = f"voters {sorted(cs.voters)}"
    if cs.outgoing:
        out += f" / outgoing {sorted(cs.outgoing)}"
    if cs.learners:
        out += f" learners {sorted(cs.learners)}"
    return out
