"""The blocking client's coordination API against real node processes: revisions, leases,
watches (a context manager and blocking iterator), locks (``held.fence``, ``held.lost`` as a
threading.Event, ``check()``), elections (``observe`` as a blocking iterator), and Ctrl-C in
the middle of a blocking call (nothing keeps running on the client's loop; an interrupted
lock acquisition leaves the queue).

Place in the architecture: tests of ``fastraft.client.sync`` (its wrappers of ``_coord``,
``_watch`` and ``_lock``) over the real server, on the cluster shared by the module
(``real_cluster``, tests/client/conftest.py). Everything waits by polling with a deadline.
"""

from __future__ import annotations

import signal
import threading

import pytest

from fastraft import Client
from fastraft.client.sync import Held, Watch
from fastraft.errors import LeaseNotFound, LockLost
from fastraft_test_waiting import wait_until  # tests/conftest.py loads it

DEADLINE = 30.0
LOCKS = b"fastraft/lock/"
ELECTIONS = b"fastraft/election/"


@pytest.fixture
def eps(real_cluster):
    return real_cluster.endpoints()


def interrupt_main_when(pred, what: str) -> threading.Thread:
    """A thread that sends SIGINT to the main thread (KeyboardInterrupt there, as Ctrl-C
    does) once ``pred()`` holds; it gives up (and sends nothing) after DEADLINE."""
    main = threading.main_thread().ident

    def run():
        try:
            wait_until(pred, DEADLINE, what, interval=0.01)
        except AssertionError:
            return
        signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_revisions_and_leases(eps):
    with Client(eps) as c:
        c.put("sc/a", "1")
        k, v, rev = c.get_item("sc/a")
        assert (k, v) == (b"sc/a", b"1") and rev > 0
        assert c.get_item("sc/absent") is None
        assert c.cas_revision("sc/a", rev + 1000, "x")[0] is False
        ok, rev2 = c.cas_revision("sc/a", rev, "2")
        assert ok and rev2 > rev
        assert c.scan_items("sc/") == [(b"sc/a", b"2", rev2)]
        assert c.revision() >= rev2
        assert c.revision(stale=True) > 0

        lease = c.lease_grant(5)
        assert isinstance(lease, int) and lease > 0
        c.put("sc/l1", "v", lease=lease)
        assert c.cas("sc/l2", None, "w", lease=lease) is True
        assert c.cas_revision("sc/l3", 0, "z", lease=lease)[0] is True
        assert c.lease_keepalive(lease) == 5.0
        assert [kk for kk, _v, _r in c.scan_items("sc/l")] == [b"sc/l1", b"sc/l2", b"sc/l3"]
        assert c.lease_revoke(lease) is True
        assert c.scan_items("sc/l") == []
        assert c.lease_revoke(lease) is False
        with pytest.raises(LeaseNotFound):
            c.put("sc/late", "y", lease=lease)
        with pytest.raises(LeaseNotFound):
            c.lease_keepalive(lease)
        assert c.get("sc/late") is None
        with pytest.raises(ValueError):
            c.lease_grant(0)
        with pytest.raises(ValueError):
            c.put("sc/bad", "y", lease=-1)


def test_watch_iterates_blocking_and_from_a_start_revision(eps):
    with Client(eps) as c:
        c.put("sw/old", "0")
        old = c.get_item("sw/old")[2]
        with c.watch("sw/") as w:
            assert isinstance(w, Watch) and w.prefix == b"sw/" and w.revision == 0
            # the watch streams from its creation: a write right after it is in it
            c.put("sw/a", "1")
            c.put("elsewhere", "z")
            c.delete("sw/a")
            first = next(w)
            second = w.get(timeout=DEADLINE)
            assert (first.type, first.key, first.value) == ("put", b"sw/a", b"1")
            assert (second.type, second.key, second.value) == ("delete", b"sw/a", None)
            assert old < first.revision < second.revision == w.revision
            assert w.get(timeout=0.05) is None          # nothing more came
        assert w.closed
        assert list(w) == [] and w.get(timeout=0) is None     # closed: the iteration ends
        w.close()                                           # idempotent

        with c.watch("sw/", start_revision=old) as h:
            got = [h.get(timeout=DEADLINE) for _ in range(3)]
        assert [(e.type, e.key, e.revision) for e in got] == [
            ("put", b"sw/old", old), ("put", b"sw/a", first.revision),
            ("delete", b"sw/a", second.revision)]

        with pytest.raises(ValueError):
            c.watch("sw/", start_revision=0)


def test_a_watch_ends_when_the_client_closes(eps):
    c = Client(eps)
    w = c.watch("swc/")
    c.close()
    assert w.closed and list(w) == [] and w.get() is None
    w.close()


def test_ctrl_c_while_iterating_a_watch_leaves_nothing_running(eps):
    """KeyboardInterrupt in ``next(w)`` cancels the wait on the client's loop: the next
    change is not swallowed by an orphaned wait, and the watch goes on."""
    with Client(eps) as c:
        with c.watch("swi/") as w:
            aw = w._aw

            def waiting():
                return aw._wake is not None and len(aw._wake._waiters) > 0

            interrupt_main_when(waiting, "next(w) to wait on the client's loop")
            with pytest.raises(KeyboardInterrupt):
                next(w)
            wait_until(lambda: not waiting(), DEADLINE, "the cancelled wait to end")
            c.put("swi/after", "1")
            ev = w.get(timeout=DEADLINE)
            assert ev is not None and (ev.type, ev.key) == ("put", b"swi/after")


def test_lock_serializes_holders_with_increasing_fences(eps):
    with Client(eps) as a, Client(eps) as b:
        got: dict = {}

        def second():
            with b.lock("sl", ttl=2) as h2:
                got["fence"] = h2.fence
                got["lost"] = h2.lost.is_set()

        with a.lock("sl", ttl=2) as h1:
            assert isinstance(h1, Held) and type(h1.fence) is int
            assert isinstance(h1.lost, threading.Event) and not h1.lost.is_set()
            h1.check()
            t = threading.Thread(target=second, daemon=True)
            t.start()
            wait_until(lambda: len(a.scan_items(LOCKS + b"sl/")) == 2, DEADLINE,
                       "the second contender to queue")
            assert "fence" not in got                   # it waits while the first holds
        t.join(DEADLINE)
        assert not t.is_alive()
        assert got["fence"] > h1.fence and got["lost"] is False
        assert a.scan_items(LOCKS + b"sl/") == []       # both released


def test_a_lost_lock_is_visible_from_any_thread(eps):
    with Client(eps) as c:
        lock = c.lock("slost", ttl=1)
        held = lock.acquire()
        seen = threading.Event()
        watcher = threading.Thread(target=lambda: held.lost.wait(DEADLINE) and seen.set(),
                                   daemon=True)
        watcher.start()
        assert c.lease_revoke(held.lease) is True       # its key goes: the lock is lost
        assert held.lost.wait(DEADLINE)
        watcher.join(DEADLINE)
        assert seen.is_set()
        with pytest.raises(LockLost):
            held.check()
        lock.release()


def test_ctrl_c_while_waiting_for_a_lock_leaves_the_queue(eps):
    prefix = LOCKS + b"sint/"
    with Client(eps) as a, Client(eps) as b:
        with a.lock("sint", ttl=5):
            interrupt_main_when(lambda: len(a.scan_items(prefix)) == 2,
                                "the second contender to queue")
            with pytest.raises(KeyboardInterrupt):
                b.lock("sint", ttl=5).acquire()
            # its lease was revoked before the interruption went on: only the holder is left
            assert len(a.scan_items(prefix)) == 1
        assert a.scan_items(prefix) == []


def test_election_campaign_leader_observe_resign(eps):
    prefix = ELECTIONS + b"se/"
    with Client(eps) as a, Client(eps) as b:
        ea, eb = a.election("se", ttl=2), b.election("se", ttl=2)
        assert ea.leader() is None
        obs = eb.observe()
        assert next(obs) is None
        ha = ea.campaign("node-a")
        assert type(ha.fence) is int and not ha.lost.is_set()
        assert next(obs) == (b"node-a", ha.fence)
        assert eb.leader() == (b"node-a", ha.fence)

        got: dict = {}
        t = threading.Thread(target=lambda: got.update(held=eb.campaign("node-b")),
                             daemon=True)
        t.start()
        wait_until(lambda: len(a.scan_items(prefix)) == 2, DEADLINE,
                   "the second candidate to queue")
        assert "held" not in got
        ea.resign()
        t.join(DEADLINE)
        hb = got["held"]
        assert hb.fence > ha.fence
        assert next(obs) == (b"node-b", hb.fence)
        assert ea.leader() == (b"node-b", hb.fence)
        obs.close()
        eb.resign()
        assert a.scan_items(prefix) == []
