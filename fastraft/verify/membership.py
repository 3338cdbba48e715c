"""The ``member`` fault: membership changes of the running cluster, and what the end of a run
reads to check them (the committed member list, every member's own state).

Place in the architecture: part of the verification framework (``fastraft.verify``), beside
``faults.py`` (whose ``make_faults`` table holds ``MemberFault``); it changes the membership
the way an operator does, through ``fastraft.client.AsyncClient`` (``members``,
``add_learner``, ``promote``, ``remove_member``) and the ``fastraft node`` command, and never
imports the server. The pure judgement of what it reads is ``final_state.check_membership`` /
``check_replicas``.

One member fault runs one action, drawn from the seeded RNG among those that keep the voters
between ``lo`` and ``hi`` (3 and 5; the run's node count when it is outside) and at most one
standing learner:

- ``grow``: add a learner (a new id on new ports), start it as a user does (``fastraft node
  --id N --raft R --client C --join <members' client addresses> --config <cluster file>
  --data-dir D``; before or after ``add_learner``, both are allowed), wait until its match
  is within ``CATCH_UP_LAG`` entries of the leader's, move it behind its fault proxy (kill -9,
  a proxy on its advertised peer address, ``raft_listen`` on a private port in its
  ``node.toml``, restarted with ``--id N --data-dir D`` alone), wait again, promote it (a
  promotion refused as Busy while it lags is counted and retried). ``EARLY_PROMOTE_SHARE``
  of the time a promotion is also tried once right after the add, before the node could
  have caught up: it must be refused (Busy), unless the node was that quick.
- ``shrink``: remove a voter, the leader ``LEADER_SHARE`` of the time.
- ``replace``: remove an old voter (sometimes the leader; sometimes killed -9 first, the
  dead-machine case, and then sometimes restarted after its removal: it must learn from its
  peers that it was removed and exit 0) and add a new id as in ``grow``; removing first or
  adding first as the voter bounds allow.
- ``learner``: add a learner and leave it one; ``drop_learner`` removes it, or
  ``promote_learner`` promotes it, in a later fault.

The nemesis believes what the cluster answered (``Book``): a change acknowledged is made, a
change refused (Busy, NotLeader: "later"; InvalidRequest: the action is dropped) is not. The
operations left of an action after a refusal stay queued and run first at the next member
fault. A change whose outcome the client could not settle (an OutcomeUnknown error) is
resolved from a committed member list (``committed_members``) before anything else is done.
A removed node leaves the managed nodes (``NodeProcs.retire``): the heals never restart it,
and its exit is watched (exit 0 counted; another code, or still running ``REMOVED_EXIT_WAIT``
seconds after the final heal, is an anomaly).

At the end (``end_checks``): the committed member list must be the ``Book`` (ids, roles,
addresses), and every member in it, voters and learners, once it has applied the leader's
commit index, must hold the same keys and values as linearizable reads of the leader
(stale reads served by that node alone).
With ``--tls`` every client made here uses the run's client context (``Nemesis.client``,
``Nemesis.client_tls``), and a node added gets its certificate before it starts
(``NodeProcs.add``) and a TLS-terminating proxy when it is moved (``Proxies.add``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import format_address, load_config, parse_address, render_config
from ..errors import Busy, FastraftError, InvalidRequest, NotLeader, OutcomeUnknown
from ..processes import free_port
from .faults import Fault

if TYPE_CHECKING:  # pragma: no cover
    from .nemesis import Nemesis

__all__ = ["MemberFault", "Book", "IDENTITY_FILE", "committed_members", "end_checks",
           "VOTERS_LO", "VOTERS_HI", "CATCH_UP_LAG", "REMOVED_EXIT_WAIT"]

IDENTITY_FILE = "node.toml"     # a joined node's identity (README: "Starting an added node")
VOTERS_LO, VOTERS_HI = 3, 5
CATCH_UP_LAG = 8                # entries behind the leader that count as caught up
LEADER_SHARE = 0.4              # how often a removal picks the leader
DEAD_SHARE = 0.3                # how often a replaced voter is killed -9 first
RESTART_REMOVED_SHARE = 0.5     # ... and then restarted after its removal
EARLY_PROMOTE_SHARE = 0.3       # how often a new node is promoted at once (refused: lagging)
CATCH_UP_WAIT = 20.0            # seconds a new node has to catch up (else: later)
BUSY_WAIT = 10.0                # seconds a refused change is retried within one fault
CHANGE_DEADLINE = 10.0          # seconds per member change call (the client settles)
RESOLVE_WAIT = 20.0             # seconds to find a committed member list
REMOVED_EXIT_WAIT = 10.0        # seconds a removed node has to exit after the final heal

_LATER, _DONE, _DROP = "later", "done", "drop"


@dataclass
class Book:
    """What the nemesis believes the membership is: ``voters``, ``learners``, every member's
    ``(raft, client)`` addresses, and the ``removed`` ids."""

    voters: set = field(default_factory=set)
    learners: set = field(default_factory=set)
    addrs: dict = field(default_factory=dict)
    removed: set = field(default_factory=set)

    def roles(self) -> dict:
        """id -> (role, raft, client) of every member."""
        out = {i: ("voter",) + tuple(self.addrs[i]) for i in self.voters}
        out.update({i: ("learner",) + tuple(self.addrs[i]) for i in self.learners})
        return out

    def describe(self) -> str:
        return f"voters {sorted(self.voters)}, learners {sorted(self.learners)}"


async def _status_of(probes: dict, addr: str, tls=None) -> dict | None:
    """The status of the node at client address ``addr`` (None: no answer); ``tls``: the
    clients' TLS context (None: plaintext)."""
    from ..client import AsyncClient

    c = probes.get(addr)
    if c is None:
        c = probes[addr] = AsyncClient([addr], timeout=0.5, deadline=1.0, learn_members=False,
                                       tls=tls)
    try:
        st = (await c.status())[0]
    except (FastraftError, OSError):
        return None
    return st if st.get("reachable") else None


async def committed_members(client, probes: dict, budget: float) -> list | None:
    """A member list the cluster has committed, or None within ``budget`` seconds: the leader
    that answers it is the leader of the same term before and after, and its commit index
    reaches the last index it had after answering (so every configuration entry the list
    was built from is committed, and one it lacks can never be). ``probes``: address ->
    single-node client, reused (made with ``client``'s TLS context)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + budget
    while loop.time() < end:
        got = await _committed_once(client, probes, end)
        if got is not None:
            return got
        await asyncio.sleep(0.2)
    return None


async def _committed_once(client, probes: dict, end: float) -> list | None:
    """One try of ``committed_members``: find the leader from a first list, check it is the
    leader (term T), ask again (the answer must come from it), then wait until it is still
    the leader of term T with its commit index at the last index it had after answering."""
    loop = asyncio.get_running_loop()
    tls = getattr(client, "tls", None)

    async def ask():
        try:
            ms = await client.members(deadline=max(0.5, min(3.0, end - loop.time())))
        except (FastraftError, OSError):
            return None, None
        lead = [m for m in ms if m.is_leader]
        return ms, (lead[0] if len(lead) == 1 and lead[0].client else None)

    _, lead = await ask()
    if lead is None:
        return None
    addr = lead.client
    before = await _status_of(probes, addr, tls)
    if before is None or before["role"] != "leader":
        return None
    members, again = await ask()
    if again is None or again.id != lead.id:
        return None
    mark = None
    while loop.time() < end:
        st = await _status_of(probes, addr, tls)
        if st is None or st["role"] != "leader" or st["term"] != before["term"]:
            return None
        if mark is None:
            mark = st["last_index"]
        if st["commit"] >= mark:
            return members
        await asyncio.sleep(0.02)
    return None


class MemberFault(Fault):
    """Membership changes (module docstring). ``book``: what the nemesis believes;
    ``queue``: the operations left of the current action, ``(op, node id, extra)``;
    ``unresolved``: the operation whose outcome is unknown; ``watch``: removed node -> its
    log size when it was removed or restarted (its exit is checked)."""

    kind = "member"
    #: actions to run first, in this order, instead of drawing them (for tests): each fault
    #: takes the first of them the voter bounds allow now
    SCRIPT: tuple = ()

    def __init__(self) -> None:
        self.script = list(self.SCRIPT)
        self.book: Book | None = None
        self.queue: list[tuple] = []
        self.unresolved: tuple | None = None
        self.watch: dict[int, int] = {}
        self.client = None
        self.probes: dict = {}
        self.lo = self.hi = 0
        self.next_id = 0

    # -- the belief -------------------------------------------------------------------------

    def book_of(self, nem: Nemesis) -> Book:
        """The book, made from the bootstrap members the first time."""
        if self.book is None:
            ids = list(nem.procs.ids)
            self.book = Book(set(ids), set(), {i: tuple(nem.addresses[i]) for i in ids})
            self.lo, self.hi = min(VOTERS_LO, len(ids)), max(VOTERS_HI, len(ids))
            self.next_id = max(ids) + 1
        return self.book

    def expects_exit(self, i: int) -> bool:
        u = self.unresolved
        return u is not None and u[0] == "remove" and u[1] == i

    def _apply(self, nem: Nemesis, op: tuple) -> None:
        """Believe ``op`` made, and act on it (a new node managed and started; a removed one
        retired and watched)."""
        b, (what, nid, extra) = self.book, op
        if what == "add":
            b.learners.add(nid)
            b.addrs[nid] = (extra["raft"], extra["client"])
            nem.addresses[nid] = b.addrs[nid]
            if nid not in nem.procs.procs:
                nem.procs.add(nid, extra["raft"], extra["client"], self._join_list())
            if nem.procs.procs[nid] is None:
                nem.procs.start(nid)
        elif what in ("promote", "promote_early"):
            b.learners.discard(nid)
            b.voters.add(nid)
        elif what == "remove":
            b.voters.discard(nid)
            b.learners.discard(nid)
            b.addrs.pop(nid, None)
            b.removed.add(nid)
            nem.procs.retire(nid)
            nem.killed.discard(nid)
            if nem.procs.procs.get(nid) is not None:
                self.watch[nid] = nem.log_size(nid)

    def _join_list(self) -> list[str]:
        return [self.book.addrs[i][1] for i in sorted(self.book.voters | self.book.learners)]

    # -- one fault ----------------------------------------------------------------------------

    async def start(self, nem: Nemesis) -> str:
        book = self.book_of(nem)
        if self.client is None:
            self.client = nem.client(nem.client_endpoints(), timeout=1.0,
                                     deadline=CHANGE_DEADLINE)
        said: list[str] = []
        resumed = bool(self.queue) or self.unresolved is not None
        if self.queue:
            said.append("resuming: " + " ".join(f"{o[0]} {o[1]}" for o in self.queue))
        planned, unknowns = False, 0
        while True:
            if self.unresolved is not None:
                unknowns += 1
                if unknowns > 3 or not await self._resolve(nem, said):
                    break
            if not self.queue:
                if planned or resumed:
                    break                   # one action per fault (a resumed one counts)
                self.queue, planned = await self._plan(nem, said), True
                continue
            verdict = await self._run(nem, self.queue[0], said)
            if verdict == _DONE:
                self.queue.pop(0)
            elif verdict == _DROP:
                self._drop(nem, said)
            elif self.unresolved is None:
                break                       # later: the next member fault goes on
        for i in nem.procs.ids:             # killed here and still a member: the heal restarts
            if nem.procs.procs[i] is None and i not in nem.left_down:
                nem.killed.add(i)
        await nem.retarget()
        return "member: " + "; ".join(said) + f" => {book.describe()}"

    def _drop(self, nem: Nemesis, said: list) -> None:
        """Give up the rest of the action; a node started for it that never became a member
        is stopped and forgotten (its id is not used again)."""
        for what, nid, _extra in self.queue:
            if (what == "add" and nid in nem.procs.procs and nid not in self.book.learners
                    and nid not in self.book.voters):
                nem.procs.kill(nid)
                nem.procs.retire(nid)
                said.append(f"node {nid} stopped (never a member)")
        if self.queue:
            said.append("dropped: " + " ".join(f"{o[0]} {o[1]}" for o in self.queue))
        self.queue = []

    async def _plan(self, nem: Nemesis, said: list) -> list[tuple]:
        """The operations of one action drawn from the RNG (module docstring)."""
        b, rng = self.book, nem.rng
        v, n_learners = len(b.voters), len(b.learners)
        choices = [("replace", 3)]
        if v < self.hi:
            choices.append(("grow", 3))
        if v > self.lo:
            choices.append(("shrink", 2))
        if n_learners == 0:
            choices.append(("learner", 1))
        else:
            choices.append(("drop_learner", 1))
            if v < self.hi:
                choices.append(("promote_learner", 2))
        allowed = [c for c, _ in choices]
        action = next((a for a in self.script if a in allowed), None)
        if action is not None:
            self.script.remove(action)
        else:
            action = rng.choices(allowed, weights=[w for _, w in choices])[0]
        if action in ("grow", "learner"):
            ops = self._new_node(rng, promote=action == "grow")
        elif action in ("drop_learner", "promote_learner"):
            lid = rng.choice(sorted(b.learners))
            ops = ([("remove", lid, None)] if action == "drop_learner" else
                   [("catchup", lid, None), ("move", lid, None), ("catchup", lid, None),
                    ("promote", lid, None)])
        else:
            old, why = await self._victim(nem)
            dead = action == "replace" and why != "down" and rng.random() < DEAD_SHARE
            ops = [("kill", old, None)] if dead else []
            remove = [("remove", old, why)]
            if (dead or why == "down") and rng.random() < RESTART_REMOVED_SHARE:
                remove.append(("restart_removed", old, None))
            if action == "shrink":
                ops += remove
            else:
                new = self._new_node(rng, promote=True)
                add_first = v <= self.lo or (v < self.hi and rng.random() < 0.5)
                ops += new + remove if add_first else remove + new
        said.append(f"{action}: " + " ".join(f"{o[0]} {o[1]}" for o in ops))
        return ops

    def _new_node(self, rng, promote: bool) -> list[tuple]:
        nid, self.next_id = self.next_id, self.next_id + 1
        extra = {"raft": format_address(("127.0.0.1", free_port())),
                 "client": format_address(("127.0.0.1", free_port())),
                 "start_first": rng.random() < 0.5}
        ops = [("add", nid, extra), ("catchup", nid, None), ("move", nid, None),
               ("catchup", nid, None)]
        if promote and rng.random() < EARLY_PROMOTE_SHARE:
            ops.insert(1, ("promote_early", nid, None))
        return ops + ([("promote", nid, None)] if promote else [])

    async def _victim(self, nem: Nemesis) -> tuple[int, str]:
        """A voter to remove and why it was picked: "down" (a voter that is not running, the
        dead-machine case, most of the time when there is one), "leader", or "drawn"."""
        rng, voters = nem.rng, sorted(self.book.voters)
        down = [i for i in voters if not nem.procs.running(i)]
        if down and rng.random() < 0.7:
            return rng.choice(down), "down"
        lead = await nem.leader()
        if lead in voters and rng.random() < LEADER_SHARE:
            return lead, "leader"
        return rng.choice(voters), "drawn"

    # -- the operations -----------------------------------------------------------------------

    async def _run(self, nem: Nemesis, op: tuple, said: list) -> str:
        """Run one operation: _DONE, _LATER (refused for now, or its outcome unknown: then
        ``unresolved`` is set) or _DROP (the rest of the action makes no sense now)."""
        return await getattr(self, f"_op_{op[0]}")(nem, op, said)

    async def _change(self, nem: Nemesis, op: tuple, call, said: list,
                      wait: float = BUSY_WAIT) -> str:
        """One member change ``call()`` (a coroutine factory), retried on Busy / NotLeader
        for ``wait`` seconds: "ok", "busy", "invalid" or "unknown" (``unresolved`` set: the
        client could not settle it)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        what = f"{op[0]} {op[1]}"
        refused = 0
        while True:
            try:
                await call()
                if refused:
                    said.append(f"{what} refused {refused}x before it was made")
                return "ok"
            except (Busy, NotLeader) as exc:
                refused += 1
                nem.stat("member_promote_refused" if op[0].startswith("promote")
                         else "member_refused_busy")
                if loop.time() + 0.3 > end:
                    said.append(f"{what} refused {refused}x ({type(exc).__name__}: {exc})")
                    return "busy"
                await asyncio.sleep(0.3)
            except InvalidRequest as exc:
                nem.stat("member_refused_invalid")
                said.append(f"{what} refused: InvalidRequest: {exc}")
                return "invalid"
            except (OutcomeUnknown, FastraftError, OSError) as exc:
                nem.stat("member_outcome_unknown")
                said.append(f"{what}: outcome unknown ({type(exc).__name__}: {exc})")
                self.unresolved = op
                return "unknown"

    async def _op_add(self, nem: Nemesis, op: tuple, said: list) -> str:
        _, nid, x = op
        if x["start_first"] and nid not in nem.procs.procs:
            nem.procs.add(nid, x["raft"], x["client"], self._join_list())
            nem.procs.start(nid)
        got = await self._change(nem, op, lambda: self.client.add_learner(
            nid, x["raft"], x["client"], deadline=CHANGE_DEADLINE), said)
        if got == "ok":
            self._apply(nem, op)
            nem.stat("member_learner_added")
            said.append(f"{nid} added as a learner (started "
                        f"{'before' if x['start_first'] else 'after'} the add)")
            return _DONE
        return _DROP if got == "invalid" else _LATER

    async def _op_catchup(self, nem: Nemesis, op: tuple, said: list) -> str:
        nid = op[1]
        if nid not in self.book.learners | self.book.voters:
            return _DROP
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        me = lead = None
        while loop.time() - t0 < CATCH_UP_WAIT:
            try:
                ms = await self.client.members(deadline=2.0)
            except (FastraftError, OSError):
                ms = []
            me = next((m for m in ms if m.id == nid), None)
            lead = next((m for m in ms if m.is_leader), None)
            if (me is not None and lead is not None and me.match > 0
                    and me.match + CATCH_UP_LAG >= lead.match and nem.procs.running(nid)):
                # the leader's view; and the node itself answers, as far along
                own = await _status_of(self.probes, self.book.addrs[nid][1], nem.client_tls)
                if own is not None and own["last_index"] + CATCH_UP_LAG >= lead.match:
                    said.append(f"{nid} caught up in {loop.time() - t0:.1f} s")
                    return _DONE
            await asyncio.sleep(0.1)
        nem.stat("member_catch_up_slow")
        said.append(f"{nid} not caught up within {CATCH_UP_WAIT:g} s (match "
                    f"{me.match if me else '?'}, leader's {lead.match if lead else '?'})")
        return _LATER

    async def _op_move(self, nem: Nemesis, op: tuple, said: list) -> str:
        """Put a joined node behind its fault proxy (module docstring)."""
        nid = op[1]
        j = nem.procs.joined.get(nid)
        if j is None or j["identity"] is not None:
            return _DONE
        path = nem.procs.identity_path(nid)
        nem.procs.kill(nid)
        try:
            cfg = load_config(str(path))
            if nid in nem.proxies.proxies:
                private = nem.proxies.proxies[nid].target_addr
            else:
                private = ("127.0.0.1", free_port())
                await nem.proxies.add(nid, parse_address(j["raft"]), private)
        except (FastraftError, OSError) as exc:
            nem.procs.start(nid)
            said.append(f"{nid} not moved behind a proxy ({exc}); restarted as it was")
            return _LATER
        spec = dataclasses.replace(cfg.node(nid), raft_listen=private)
        text = render_config(dataclasses.replace(cfg, nodes=(spec,)))
        path.write_text(text)
        nem.procs.set_identity(nid, text)
        nem.procs.start(nid)
        said.append(f"{nid} kill -9, restarted with --id --data-dir alone behind its proxy "
                    f"(raft_listen {format_address(private)})")
        return _DONE

    async def _op_promote(self, nem: Nemesis, op: tuple, said: list) -> str:
        nid = op[1]
        if nid in self.book.voters:
            return _DONE
        if nid not in self.book.learners or len(self.book.voters) >= self.hi:
            said.append(f"promote {nid}: not a learner, or {self.hi} voters already")
            return _DROP
        got = await self._change(nem, op, lambda: self.client.promote(
            nid, deadline=CHANGE_DEADLINE), said)
        if got == "ok":
            self._apply(nem, op)
            nem.stat("member_promoted")
            said.append(f"{nid} promoted")
            return _DONE
        return _DROP if got == "invalid" else _LATER

    async def _op_promote_early(self, nem: Nemesis, op: tuple, said: list) -> str:
        """Promote a node just added, before it caught up: refused as Busy, or made if it
        caught up already (either way the action goes on)."""
        nid = op[1]
        if nid not in self.book.learners or len(self.book.voters) >= self.hi:
            return _DONE
        got = await self._change(nem, op, lambda: self.client.promote(
            nid, deadline=CHANGE_DEADLINE), said, wait=0.0)
        if got == "ok":
            self._apply(nem, op)
            nem.stat("member_promoted")
            said.append(f"{nid} promoted at once (it had caught up already)")
        return _LATER if got == "unknown" else _DONE

    async def _op_remove(self, nem: Nemesis, op: tuple, said: list) -> str:
        nid = op[1]
        b = self.book
        if nid not in b.voters | b.learners:
            return _DONE
        if nid in b.voters and len(b.voters) <= self.lo:
            said.append(f"remove {nid}: only {self.lo} voters")
            return _DROP
        lead = await nem.leader()
        was_running = nem.procs.running(nid)
        got = await self._change(nem, op, lambda: self.client.remove_member(
            nid, deadline=CHANGE_DEADLINE), said)
        if got == "ok":
            self._apply(nem, op)
            nem.stat("member_removed")
            if lead == nid:
                nem.stat("member_removed_leader")
            if op[2] == "down":
                nem.stat("member_removed_down")
            said.append(f"{nid} removed" + (" (the leader)" if lead == nid else "")
                        + ("" if was_running else " (it was down)"))
            return _DONE
        return _DROP if got == "invalid" else _LATER

    async def _op_kill(self, nem: Nemesis, op: tuple, said: list) -> str:
        nem.procs.kill(op[1])
        said.append(f"kill -9 {op[1]} (a dead machine to replace)")
        return _DONE

    async def _op_restart_removed(self, nem: Nemesis, op: tuple, said: list) -> str:
        nid = op[1]
        if nid in self.book.removed and not nem.procs.running(nid):
            self.watch[nid] = nem.log_size(nid)
            nem.procs.start(nid)
            nem.stat("member_removed_restarted")
            said.append(f"removed node {nid} restarted (it must exit 0 by itself)")
        return _DONE

    async def _resolve(self, nem: Nemesis, said: list) -> bool:
        """Settle ``unresolved`` from a committed member list; False when none came."""
        op = self.unresolved
        ms = await committed_members(self.client, self.probes, RESOLVE_WAIT)
        if ms is None:
            said.append(f"{op[0]} {op[1]}: outcome still unknown (no committed member list)")
            return False
        self.unresolved = None
        m = next((m for m in ms if m.id == op[1]), None)
        voter = m is not None and m.role == "voter"
        made = {"add": m is not None, "promote": voter, "promote_early": voter,
                "remove": m is None}[op[0]]
        nem.stat("member_outcome_resolved")
        said.append(f"{op[0]} {op[1]}: the committed member list says "
                    f"{'made' if made else 'not made'}")
        if made:
            self._apply(nem, op)
            if self.queue and self.queue[0] is op:
                self.queue.pop(0)
        return True

    # -- the heals and the end ----------------------------------------------------------------

    def heal(self, nem: Nemesis) -> None:
        """A watched removed node that exited: 0 is counted, another code is an anomaly."""
        for i, off in list(self.watch.items()):
            rc = nem.procs.exited(i)
            if nem.procs.procs.get(i) is None:
                del self.watch[i]                   # killed since: nothing to watch
            elif rc is not None:
                del self.watch[i]
                if rc == 0:
                    nem.stat("member_removed_exit_0")
                else:
                    nem.anomaly(f"removed node {i} exited with code {rc} (not 0): "
                                + nem.log_excerpt(i, off))

    async def wait_removed_exits(self, nem: Nemesis, wait: float = REMOVED_EXIT_WAIT) -> None:
        """At the end of the run: every watched removed node must exit within ``wait``
        seconds (else an anomaly)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while True:
            self.heal(nem)
            if not self.watch or loop.time() > end:
                break
            await asyncio.sleep(0.1)
        for i, off in self.watch.items():
            ago = time.monotonic() - nem.procs.retired.get(i, time.monotonic())
            nem.anomaly(f"removed node {i} still running {ago:.0f} s after its removal: "
                        + nem.log_excerpt(i, off))
        self.watch.clear()

    async def aclose(self) -> None:
        """Close the clients."""
        for c in [self.client, *self.probes.values()]:
            if c is not None:
                await c.close()
        self.client, self.probes = None, {}

    async def settle(self, nem: Nemesis) -> None:
        """Before the end checks: an outcome still unknown is resolved if it can be."""
        if self.unresolved is not None and self.book is not None:
            said: list = []
            await self._resolve(nem, said)
            nem.record("heal", self.kind, "settle: " + "; ".join(said))


# -- the end of a run ---------------------------------------------------------------------------

STATE_WAIT = 30.0       # seconds a member has to apply the leader's commit index at the end


async def end_checks(nem: Nemesis, pairs, register_keys=()) -> tuple:
    """``(MembershipResult, ReplicaResult)`` at the end of a run (module docstring); the
    removed nodes still watched must have exited by then (else anomalies)."""
    from .final_state import check_membership, check_replicas
    from .workloads import read_items, state_items

    fault = nem.faults["member"]
    book = fault.book_of(nem)
    await fault.settle(nem)
    await fault.wait_removed_exits(nem)
    reader = nem.client(nem.client_endpoints(), timeout=2.0, deadline=10.0)
    try:
        ms = await committed_members(reader, fault.probes, STATE_WAIT)
        found = None if ms is None else {m.id: (m.role, m.raft, m.client) for m in ms}
        membership = check_membership(book.roles(), found)
        items = state_items(pairs, register_keys)
        try:
            reference = await read_items(reader, items)
        except RuntimeError:
            reference = None
        lead = next((m for m in ms or () if m.is_leader), None)
        st = await _status_of(fault.probes, lead.client, nem.client_tls) \
            if lead is not None else None
        if reference is None or st is None:
            return membership, check_replicas(None, {})
        nodes = {}
        for m in ms:
            nodes[m.id] = await _node_items(m.client, items, st["commit"], nem.client_tls)
        return membership, check_replicas(reference, nodes)
    finally:
        await reader.close()


async def _node_items(addr: str, items, target: int, tls=None):
    """``items`` read from the node at client address ``addr`` alone (TLS context ``tls``)
    once it has applied index ``target``; or why it could not be (a string)."""
    from ..client import AsyncClient
    from .workloads import read_items

    c = AsyncClient([addr], timeout=2.0, deadline=5.0, learn_members=False, tls=tls)
    loop = asyncio.get_running_loop()
    end = loop.time() + STATE_WAIT
    applied = None
    try:
        while True:
            try:
                st = (await c.status())[0]
            except (FastraftError, OSError):
                st = {}
            applied = st.get("applied") if st.get("reachable") else None
            if applied is not None and applied >= target:
                break
            if loop.time() > end:
                return (f"it had applied {applied} (the leader's commit index: {target}) "
                        f"{STATE_WAIT:g} s on" if applied is not None
                        else f"no status answer within {STATE_WAIT:g} s")
            await asyncio.sleep(0.1)
        try:
            return await read_items(c, items, stale=True)
        except RuntimeError as exc:
            return f"its reads failed: {exc}"
    finally:
        await c.close()
