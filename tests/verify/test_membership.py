"""The member fault of ``python -m fastraft.verify`` (fastraft.verify.membership) and the end
checks it brings (final_state.check_membership / check_replicas).

Pure parts first: the membership and replica checks on hand-made answers, the items every
member's state is compared on, the commands that start a node added at runtime (``--join``
first, ``--id --data-dir`` alone once it has its identity file, written back after a wipe),
and the actions the fault draws, which keep the voters between 3 and 5 whatever the cluster
answers. Then a short run of real nodes with the member fault forced (a replace, then a
grow) mixed with kill -9: every check passes, the membership changed as the nemesis says,
the removed node exited 0 by itself and was not counted as a crash. The longer mix of every
fault kind is behind ``--run-slow``.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from fastraft.verify.__main__ import main
from fastraft.verify.final_state import check_membership, check_replicas
from fastraft.verify.history import HistoryWriter, to_operations
from fastraft.verify.membership import MemberFault, VOTERS_HI, VOTERS_LO
from fastraft.verify.nemesis import NodeProcs
from fastraft.verify.workloads import state_items


# -- the end checks, pure ---------------------------------------------------------------------

def test_membership_check():
    want = {1: ("voter", "h:1", "h:11"), 4: ("learner", "h:4", "h:14")}
    assert check_membership(want, dict(want)).verdict == "ok"
    res = check_membership(want, {1: ("voter", "h:1", "h:11"), 4: ("voter", "h:4", "h:14"),
                                  5: ("learner", "h:5", "h:15")})
    assert res.verdict == "violation" and len(res.problems) == 2
    text = res.summary()
    assert "node 4 is voter at raft h:4, client h:14; expected learner" in text
    assert "node 5 is a learner, but the nemesis never added it or removed it" in text
    res = check_membership(want, {1: ("voter", "h:1", "h:11")})
    assert res.problems == ["node 4 is missing (expected a learner)"]
    res = check_membership(want, None)
    assert res.verdict == "unknown" and "UNKNOWN" in res.summary()
    assert res.to_json()["found"] is None
    assert check_membership(want, want).to_json()["expected"]["4"] == ["learner", "h:4", "h:14"]


def test_replica_check():
    ref = {("get", b"k0"): b"v", ("scan", b"s/0/"): ((b"s/0/1", b"x"), (b"s/0/2", b"x"))}
    same = dict(ref)
    res = check_replicas(ref, {1: same, 2: dict(ref)})
    assert res.verdict == "ok" and res.items == 2 and "2 of 2 members" in res.summary()
    behind = {("get", b"k0"): b"old", ("scan", b"s/0/"): ((b"s/0/1", b"x"), (b"s/0/3", b"x"))}
    res = check_replicas(ref, {1: same, 2: behind, 3: "no status answer within 30 s"})
    assert res.verdict == "violation"
    text = res.summary()
    assert "k0 = 'old', the leader has 'v'" in text
    assert "scan s/0/: 1 missing (s/0/2), 1 extra (s/0/3)" in text
    assert "node 3 not read: no status answer within 30 s" in text
    assert check_replicas(ref, {3: "down"}).verdict == "unknown"
    assert check_replicas(None, {}).verdict == "unknown"


def test_state_items_cover_set_chunks_session_keys_and_registers():
    h = HistoryWriter(None, keep=True)
    for p, f, key in [("a", "insert", b"s/0/00000/1"), ("b", "insert", b"s/0/00001/1000"),
                      ("c", "incr", b"c0"), ("d", "append", b"a1.0"), ("e", "insert",
                                                                       b"s/0/00000/2")]:
        h.invoke(p, f, key, None)
        h.complete(p, "ok")
    items = state_items(to_operations(h.events).other, [b"k0", b"k1"])
    assert items == [("scan", b"s/0/00000/"), ("scan", b"s/0/00001/"), ("get", b"a1.0"),
                     ("get", b"c0"), ("get", b"k0"), ("get", b"k1")]


# -- how an added node starts -------------------------------------------------------------------

def test_joined_node_commands(tmp_path):
    procs = NodeProcs(tmp_path, "cluster.toml", str(tmp_path / "data"), [1, 2, 3])
    assert "--config" in procs.argv(1) and "--rejoin" in procs.argv(1, rejoin=True)
    procs.add(4, "127.0.0.1:9004", "127.0.0.1:9104", ["127.0.0.1:9101", "127.0.0.1:9102"])
    assert procs.ids == [1, 2, 3, 4]
    argv = procs.argv(4)
    tail = argv[argv.index("node") + 1:]
    assert tail == ["--id", "4", "--raft", "127.0.0.1:9004", "--client", "127.0.0.1:9104",
                    "--join", "127.0.0.1:9101,127.0.0.1:9102", "--config", "cluster.toml",
                    "--data-dir", str(tmp_path / "data")]
    assert not procs.can_rejoin(4)
    with pytest.raises(ValueError):
        procs.argv(4, rejoin=True)              # --join and --rejoin do not go together
    with pytest.raises(ValueError):
        procs.add(4, "x:1", "x:2", [])
    procs.set_identity(4, "# node 4's identity\n")
    assert procs.can_rejoin(4)
    argv = procs.argv(4, rejoin=True)
    assert argv[argv.index("node") + 1:] == ["--id", "4", "--data-dir",
                                              str(tmp_path / "data"), "--rejoin"]
    # its data wiped: the identity file is written back before the restart
    ident = procs.identity_path(4)
    assert ident == tmp_path / "data" / "4" / "node.toml"
    assert ident.read_text() == "# node 4's identity\n"
    procs.retire(2)
    assert procs.ids == [1, 3, 4] and 2 in procs.retired and 2 in procs.procs


# -- the actions drawn keep the voters in bounds ------------------------------------------------

class _Procs:
    def __init__(self, ids):
        self.ids = list(ids)
        self.down: set = set()

    def running(self, i):
        return i not in self.down


class _Nem:
    def __init__(self, ids, seed):
        self.procs = _Procs(ids)
        self.rng = random.Random(seed)
        self.addresses = {i: (f"h:{i}", f"h:{100 + i}") for i in ids}

    async def leader(self):
        voters = sorted(self.procs.ids)
        return self.rng.choice(voters + [None])


def _simulate(nodes: int, seed: int, actions: int = 150) -> set:
    """Draw ``actions`` actions; every change succeeds; the voters stay in bounds after
    every single change. Returns the actions seen."""
    nem = _Nem(range(1, nodes + 1), seed)
    fault = MemberFault()
    book = fault.book_of(nem)
    lo, hi = min(VOTERS_LO, nodes), max(VOTERS_HI, nodes)
    seen = set()

    async def go():
        for _ in range(actions):
            said: list = []
            ops = await fault._plan(nem, said)
            seen.add(said[0].split(":")[0])
            for what, nid, _x in ops:
                if what == "add":
                    assert nid not in book.removed and nid not in book.addrs
                    book.learners.add(nid)
                    book.addrs[nid] = ("r", "c")
                elif what == "promote":
                    book.learners.remove(nid)
                    book.voters.add(nid)
                elif what == "remove":
                    assert nid in book.voters | book.learners
                    book.voters.discard(nid)
                    book.learners.discard(nid)
                    book.removed.add(nid)
                    nem.procs.down.discard(nid)
                elif what == "kill":
                    nem.procs.down.add(nid)
                elif what == "promote_early":
                    assert nid in book.learners      # refused as Busy: nothing changes
                assert lo <= len(book.voters) <= hi, (what, nid, book)
                assert len(book.learners) <= 2, book
            nem.procs.ids = sorted(book.voters | book.learners)

    asyncio.run(go())
    return seen


@pytest.mark.parametrize("nodes,seed", [(3, 1), (3, 2), (5, 3), (4, 4)])
def test_actions_keep_three_to_five_voters(nodes, seed):
    seen = _simulate(nodes, seed)
    assert {"replace", "learner"} <= seen
    assert "grow" in seen or nodes == 5
    assert "shrink" in seen or nodes == 3


def test_scripted_actions_first():
    class Scripted(MemberFault):
        SCRIPT = ("shrink", "grow", "learner")       # shrink is not allowed at 3 voters

    nem = _Nem([1, 2, 3], 5)
    fault = Scripted()
    fault.book_of(nem)
    said: list = []
    ops = asyncio.run(fault._plan(nem, said))
    assert said[0].startswith("grow: ") and [o[0] for o in ops if o[0] != "promote_early"] == [
        "add", "catchup", "move", "catchup", "promote"]
    assert fault.script == ["shrink", "learner"]   # the shrink waits until it is allowed


# -- real nodes ---------------------------------------------------------------------------------

def _run(out, capsys, monkeypatch, script, nemesis, duration, seed, nodes=3, extra=()):
    monkeypatch.setattr(MemberFault, "SCRIPT", tuple(script))
    code = main(["--nemesis", nemesis, "--duration", str(duration), "--nodes", str(nodes),
                 "--seed", str(seed), "--out", str(out), "--quiet", "0.4,0.8",
                 "--fault", "0.7,1.2", "--recover", "2", "--workers", "4",
                 "--check-budget", "30", "--no-plot", *extra])
    text = capsys.readouterr().out
    print(text)
    assert "verdict: OK" in text, text
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert all(v == "ok" for v in summary["verdicts"].values()), summary["verdicts"]
    assert summary["anomalies"] == []
    return text, summary


def test_member_fault_replace_then_grow_under_kills(tmp_path, capsys, monkeypatch):
    """A replace (a voter removed, a new id added with --join, caught up, moved behind its
    proxy, promoted) and a grow, with kill -9 faults between them, under every workload:
    linearizable, nothing lost, exactly once; the committed membership is the nemesis's; every
    member (the new ones included) holds the leader's state; the removed node exited 0 by
    itself, which is no crash."""
    out = tmp_path / "run"
    text, summary = _run(out, capsys, monkeypatch, ["replace", "grow"], "member,kill", 15,
                         11)
    assert summary["faults"]["member"] >= 2, summary["faults"]
    outcomes = summary["fault_outcomes"]
    assert outcomes.get("member_learner_added", 0) >= 2, outcomes
    assert outcomes.get("member_promoted", 0) >= 2, outcomes
    assert outcomes.get("member_removed", 0) >= 1, outcomes
    # a removed node exits 0 by itself (unless it was killed first: a dead machine)
    assert (outcomes.get("member_removed_exit_0", 0)
            + outcomes.get("member_removed_down", 0)) >= 1, outcomes
    members = summary["members"]
    assert members["ok"] and members["found"] == members["expected"]
    found = {int(i): role for i, (role, _r, _c) in members["found"].items()}
    assert len([r for r in found.values() if r == "voter"]) == 4, found
    assert max(found) >= 5 and sorted(found) != [1, 2, 3]
    assert summary["replica_states"]["ok"]
    assert sorted(summary["replica_states"]["nodes"]) == sorted(found)
    assert "membership: OK" in text and "replicas: OK" in text
    assert "member: ran" in text and "learners promoted to voters" in text
    log = [json.loads(li) for li in (out / "nemesis.jsonl").read_text().splitlines()]
    details = " ".join(e["detail"] for e in log if e["fault"] == "member")
    assert "replace: " in details and "grow: " in details
    assert "restarted with --id --data-dir alone behind its proxy" in details
    new = max(found)
    assert f"--join" in (out / f"node{new}.log").read_text()


@pytest.mark.slow
def test_member_fault_mixed_with_every_fault_kind(tmp_path, capsys, monkeypatch):
    """Every fault kind, the member fault drawn freely, five nodes (so shrinks happen),
    SQLite storage, a low snapshot threshold (new members come back through snapshots)."""
    out = tmp_path / "run"
    _text, summary = _run(out, capsys, monkeypatch, [], "partition,kill,pause,degrade,wipe,"
                          "transfer,disk,member", 150, 23, nodes=5,
                          extra=["--snapshot-threshold", "300", "--storage", "sqlite"])
    assert summary["faults"]["member"] >= 3
    assert summary["members"]["ok"] and summary["replica_states"]["ok"]
