"""Configuration changes inside the Raft engine: the configuration in effect, its history in
the log, and the leader's side of changing it (rule 8 of ``raft.py``; thesis §4.3, etcd's
ConfChangeV2).

Place in the architecture: part of the sans-IO engine (``fastraft.raft``): a mixin of
``raft.Raft``, split out of raft.py to keep that module readable. It reads and writes the
node's state (``voters``, ``outgoing``, ``learners``, ``conf_base``, ``conf_log``, ``prs``,
``log``, ``role``) and calls a few of ``Raft``'s methods (``bcast_append``, ``send``,
``become_follower``); the arithmetic of one change lives in ``confchange.py``. No IO.

A configuration takes effect when its entry is appended, on every node. ``conf_log`` lists
``(index, term, ConfState)`` of the conf-change entries retained after ``conf_base`` (the
configuration at the snapshot), so a truncation of uncommitted entries rolls the
configuration back to the last surviving one.
"""

from __future__ import annotations

from ..errors import Busy, NotLeader
from .confchange import (ADD_VOTER, CONF_MARKER, BadConfChange, ConfChange, ConfState,
                         decode_conf_change, encode_conf_change, next_config)
from .messages import NO_NODE, Message, MsgType
from .progress import Progress

__all__ = ["Membership"]

TIMEOUT_NOW = MsgType.TIMEOUT_NOW


class Membership:
    """The configuration methods of ``raft.Raft`` (module docstring)."""

    #: The role code of a leader: ``raft.LEADER``, set by ``raft.Raft`` (this module cannot
    #: import raft.py, which imports it).
    LEADER_ROLE: int

    def conf_state(self) -> ConfState:
        """The configuration in effect (that of the last appended conf-change entry)."""
        return ConfState(self.voters, self.outgoing, self.learners)

    def conf_state_at(self, index: int) -> ConfState:
        """The configuration in effect once the log up to ``index`` is appended (``index``
        at or above the snapshot's: the configuration to record in a snapshot at ``index``)."""
        cs = self.conf_base
        for idx, _t, c in self.conf_log:
            if idx > index:
                break
            cs = c
        return cs

    def conf_in_flight(self) -> bool:
        """Whether a conf-change entry is appended and not yet committed."""
        return bool(self.conf_log) and self.conf_log[-1][0] > self.log.committed

    def _reset_conf(self, base: ConfState, base_index: int) -> None:
        self.conf_base = base
        self.conf_base_index = base_index
        # A joint configuration given statically (RaftConfig at index 0) is not left by
        # itself; one that came from a conf-change entry or a snapshot is.
        self.conf_base_auto = base_index > 0
        self.conf_log: list = []
        self._set_conf(base)

    def _set_conf(self, cs: ConfState) -> None:
        self.voters, self.outgoing, self.learners = cs
        self.conf_version += 1
        if self.role == self.LEADER_ROLE:
            self._sync_progress()

    def _sync_progress(self) -> None:
        """Leader: a Progress for every member of the configuration, none for others."""
        members = self.voters | self.outgoing | self.learners
        prs = self.prs
        cfg = self.cfg
        for nid in members:
            if nid not in prs:
                pr = Progress(self.log.last_index, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
                pr.recent_active = True    # give it an election timeout before check-quorum
                prs[nid] = pr
        for nid in [n for n in prs if n not in members]:
            del prs[nid]

    def _scan_conf(self, first: int, entries) -> None:
        """Apply the conf-change entries among ``entries`` (from index ``first``), those after
        the last one already applied. Only the first byte of each payload is looked at."""
        after = self.conf_log[-1][0] if self.conf_log else self.conf_base_index
        for k, e in enumerate(entries):
            p = e[1]
            if p and p[0] == CONF_MARKER and first + k > after:
                self._conf_appended(first + k, e[0], p)

    def _conf_appended(self, index: int, term: int, payload) -> None:
        try:
            cs = next_config(self.conf_state(), decode_conf_change(payload))
        except BadConfChange:
            return   # the same on every node: an invalid entry changes nothing
        self.conf_log.append((index, term, cs))
        self._set_conf(cs)

    def _rollback_conf(self) -> None:
        """Drop the conf-change entries a truncation removed; restore the configuration."""
        log = self.log
        cl = self.conf_log
        n = len(cl)
        while cl and (cl[-1][0] > log.last_index or log.term(cl[-1][0]) != cl[-1][1]):
            cl.pop()
        if len(cl) != n:
            self._set_conf(cl[-1][2] if cl else self.conf_base)

    def _compact_conf(self, index: int) -> None:
        cl = self.conf_log
        while cl and cl[0][0] <= index:
            self.conf_base = cl.pop(0)[2]
            self.conf_base_auto = True
        self.conf_base_index = max(self.conf_base_index, index)

    def _append_conf(self, cc: ConfChange) -> int:
        payload = encode_conf_change(cc)
        log = self.log
        index = log.last_index + 1
        log.append(self.term, [payload])
        self._conf_appended(index, self.term, payload)
        return index

    def _after_commit_conf(self) -> None:
        """Leader, after the commit index moved: leave a committed joint configuration
        automatically; step down once a configuration without us is committed."""
        if self.conf_in_flight():
            return
        if self.outgoing:
            if self.conf_log or self.conf_base_auto:
                self._append_conf(ConfChange.leave())
        elif self.id not in self.voters:
            self.bcast_append()        # followers learn the commit index first
            # ... then the most up-to-date voter campaigns at once (TIMEOUT_NOW, after the
            # appends on the same connection) instead of waiting out an election timeout.
            last = self.log.last_index
            best = min((vid for vid, pr in self.prs.items()
                        if vid in self.voters and pr.match == last and pr.recent_active),
                       default=NO_NODE)
            if best != NO_NODE:
                self.send(Message(TIMEOUT_NOW, best, self.id, self.term))
            self.become_follower(self.term, NO_NODE)

    # -- the leader's side -------------------------------------------------------------------

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Append a configuration change (confchange.py); returns ``(index, term)`` of its
        entry. It takes effect at once (on followers when they append it). Certainly not
        appended when it raises: NotLeader on a non-leader; Busy while a transfer runs,
        another change is in flight (an uncommitted conf-change entry, or a joint
        configuration not yet left), too many entries are uncommitted, or a learner to
        promote lags more than ``promote_lag`` entries; BadConfChange (a LocalProtocolError)
        for a change that does not apply (unknown or duplicated ids, the last voter)."""
        if self.role != self.LEADER_ROLE:
            raise NotLeader(self.lead if self.lead != NO_NODE else None)
        if self.lead_transferee != NO_NODE:
            raise Busy(f"leadership transfer to {self.lead_transferee} in progress")
        log = self.log
        if self.conf_in_flight():
            raise Busy(f"configuration change at index {self.conf_log[-1][0]} not committed")
        if self.outgoing and not cc.leave_joint:
            raise Busy("the joint configuration has not been left yet")
        if log.last_index - log.committed + 1 > self.cfg.max_uncommitted:
            raise Busy(f"{log.last_index - log.committed} entries await commitment")
        next_config(self.conf_state(), cc)          # BadConfChange when it does not apply
        for kind, nid, _ctx in cc.changes:
            if kind == ADD_VOTER and nid in self.learners:
                pr = self.prs[nid]
                if pr.match + self.cfg.promote_lag < log.last_index:
                    raise Busy(f"learner {nid} is not caught up (match {pr.match}, last "
                               f"index {log.last_index})")
        index = self._append_conf(cc)
        self.bcast_append()
        return index, self.term
