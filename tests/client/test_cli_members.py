"""Tests of ``fastraft member list | add | promote | remove``: output, --json shape, exit codes
and the one-line errors that say whether the change was made.

Place in the architecture: tests of ``fastraft.client.cli_members`` (through ``cli_cmds``, as
``fastraft.cli`` runs it) against the scripted fake nodes (``fakenode.py``), which run on an
event loop in a thread of their own: each command runs its own loop (``asyncio.run``), as it
does from the shell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading

import pytest

from fastraft import codec
from fastraft.client.cli_cmds import add_client_parsers, run_client_command


class FakeInThread:
    """A FakeCluster served by an event loop in a background thread; ``do(fn)`` runs ``fn``
    on that loop (to change the fake between commands) and returns its result."""

    def __init__(self, fake, size: int = 3) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fc = fake.FakeCluster(size)
        self._run(self.fc.__aenter__())

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def do(self, fn):
        async def call():
            return fn(self.fc)
        return self._run(call())

    def endpoints(self, *ids) -> list[str]:
        eps = self.fc.endpoints()
        return ["--endpoints", ",".join(eps[i - 1] for i in ids) if ids else ",".join(eps)]

    def close(self) -> None:
        self._run(self.fc.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def cluster(fake):
    c = FakeInThread(fake)
    try:
        yield c
    finally:
        c.close()


def parse(*argv):
    parser = argparse.ArgumentParser(prog="fastraft")
    add_client_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def cli(capsys, *argv):
    rc = run_client_command(parse(*argv))
    out, err = capsys.readouterr()
    return rc, out, err


# -- list -----------------------------------------------------------------------------------

def test_list_prints_a_table_with_the_leader_marked(capsys, cluster, fake):
    cluster.do(lambda fc: fc.set_leader(2))
    cluster.do(lambda fc: fc.match.update({3: 4}))
    rc, out, err = cli(capsys, "member", "list", *cluster.endpoints(1))   # a follower
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "ROLE", "RAFT", "CLIENT", "LEADER", "MATCH"]
    eps = cluster.fc.endpoints()
    rows = [ln.split() for ln in lines[1:]]
    assert rows == [["1", "voter", fake.fake_raft(1), eps[0], "10"],
                    ["2", "voter", fake.fake_raft(2), eps[1], "*", "10"],
                    ["3", "voter", fake.fake_raft(3), eps[2], "4"]]
    # the columns line up
    assert len({ln.index("MATCH") if i == 0 else len(ln) - len(ln.split()[-1])
                for i, ln in enumerate(lines)}) == 1


def test_list_json_shape(capsys, cluster, fake):
    cluster.do(lambda fc: fc.member_change((codec.MEMBER_ADD_LEARNER, 4, "h4:1", "h4:2")))
    rc, out, err = cli(capsys, "member", "list", "--json", *cluster.endpoints())
    assert rc == 0 and err == ""
    eps = cluster.fc.endpoints()
    assert json.loads(out) == {"members": [
        {"id": 1, "role": "voter", "raft": fake.fake_raft(1), "client": eps[0],
         "leader": True, "match": 11},
        {"id": 2, "role": "voter", "raft": fake.fake_raft(2), "client": eps[1],
         "leader": False, "match": 11},
        {"id": 3, "role": "voter", "raft": fake.fake_raft(3), "client": eps[2],
         "leader": False, "match": 11},
        {"id": 4, "role": "learner", "raft": "h4:1", "client": "h4:2", "leader": False,
         "match": 11}]}
    assert out.count("\n") == 1


def test_list_without_a_leader_fails(capsys, cluster):
    cluster.do(lambda fc: fc.set_leader(None, hint=None))
    rc, out, err = cli(capsys, "member", "list", "--timeout", "0.2", *cluster.endpoints())
    assert rc == 2 and out == ""
    assert err.startswith("fastraft member list: no leader") and err.count("\n") == 1


# -- changes --------------------------------------------------------------------------------

def test_add_promote_remove(capsys, cluster):
    eps = cluster.endpoints()
    rc, out, err = cli(capsys, "member", "add", "--id", "4", "--raft", "10.0.0.4:7104",
                       "--client", "10.0.0.4:7004", *eps)
    assert rc == 0 and err == ""
    first, hint = out.splitlines()
    assert first == "node 4 added as a learner (log index 11)"
    assert "fastraft node --id 4 --raft 10.0.0.4:7104 --client 10.0.0.4:7004 --join " in hint
    assert "fastraft member promote 4" in hint
    assert cluster.fc.members[4] == ["learner", "10.0.0.4:7104", "10.0.0.4:7004"]
    assert cli(capsys, "member", "promote", "4", *eps)[:2] == (
        0, "node 4 promoted to voter (log index 12)\n")
    assert cli(capsys, "member", "remove", "1", *eps)[:2] == (
        0, "node 1 removed (log index 13)\n")
    assert sorted(cluster.fc.members) == [2, 3, 4]


def test_changes_json(capsys, cluster):
    eps = cluster.endpoints(2)                      # a follower: redirected to the leader
    rc, out, _ = cli(capsys, "member", "add", "--id", "4", "--raft", "h:1", "--client",
                     "h:2", "--json", *eps)
    assert rc == 0 and json.loads(out) == {"ok": True, "change": "add", "id": 4, "index": 11}
    rc, out, _ = cli(capsys, "member", "promote", "4", "--json", *eps)
    assert rc == 0 and json.loads(out) == {"ok": True, "change": "promote", "id": 4,
                                           "index": 12}
    rc, out, _ = cli(capsys, "member", "remove", "4", "--json", *eps)
    assert rc == 0 and json.loads(out) == {"ok": True, "change": "remove", "id": 4,
                                           "index": 13}


@pytest.mark.parametrize("argv, setup, why", [
    (("promote", "4"), "lagging", "learner 4 is not caught up"),
    (("remove", "9"), None, "node 9 is not a member"),
    (("add", "--id", "2", "--raft", "h:1", "--client", "h:2"), None, "already a member"),
    (("promote", "2"), None, "already a voter"),
])
def test_refusals_exit_2_and_say_nothing_changed(capsys, cluster, argv, setup, why):
    if setup == "lagging":
        cluster.do(lambda fc: fc.member_change((codec.MEMBER_ADD_LEARNER, 4, "h:1", "h:2")))
        cluster.do(lambda fc: fc.lagging.add(4))
    before = cluster.do(lambda fc: {k: list(v) for k, v in fc.members.items()})
    rc, out, err = cli(capsys, "member", *argv, *cluster.endpoints())
    assert rc == 2 and out == ""
    assert err.startswith(f"fastraft member {argv[0]}: ") and why in err
    assert err.endswith(" (not done: the membership is unchanged)\n")
    assert err.count("\n") == 1
    assert cluster.do(lambda fc: fc.members) == before
    rc, out, err = cli(capsys, "member", *argv, "--json", *cluster.endpoints())
    got = json.loads(out)
    assert rc == 2 and got["outcome"] == "not_applied" and why in got["message"]
    assert got["error"] in ("Busy", "InvalidRequest")


def test_no_leader_is_not_done(capsys, cluster):
    cluster.do(lambda fc: fc.set_leader(None, hint=None))
    rc, _, err = cli(capsys, "member", "remove", "3", "--timeout", "0.2",
                     *cluster.endpoints())
    assert rc == 2 and "no leader" in err and err.endswith("(not done: the membership is "
                                                           "unchanged)\n")


def test_an_unknown_outcome_says_so(capsys, cluster):
    cluster.do(lambda fc: fc.node(1).plan(codec.OP_MEMBER, "apply_uncommitted"))
    rc, out, err = cli(capsys, "member", "remove", "3", "--timeout", "0.2", "--json",
                       *cluster.endpoints())
    assert rc == 2
    assert err.startswith("fastraft member remove: outcome unknown: remove node 3: ")
    assert err.endswith(" (the change may or may not have been made: see "
                        "`fastraft member list`)\n")
    assert err.count("\n") == 1
    got = json.loads(out)
    assert got["outcome"] == "unknown" and got["error"] == "Timeout"


def test_an_unknown_outcome_found_done_exits_0(capsys, cluster):
    cluster.do(lambda fc: fc.node(1).plan(codec.OP_MEMBER, "apply_drop"))
    rc, out, err = cli(capsys, "member", "remove", "3", *cluster.endpoints())
    assert rc == 0, err
    assert out.startswith("node 3 removed (an attempt's outcome was unknown")
    assert 3 not in cluster.fc.members
    cluster.do(lambda fc: fc.node(1).plan(codec.OP_MEMBER, "apply_drop"))
    rc, out, _ = cli(capsys, "member", "remove", "2", "--json", *cluster.endpoints())
    assert rc == 0 and json.loads(out) == {"ok": True, "change": "remove", "id": 2,
                                           "index": None}


# -- arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ("member",),
    ("member", "add", "--id", "4", "--raft", "nohost", "--client", "h:1"),
    ("member", "add", "--id", "4", "--raft", "h:1", "--client", "h:70000"),
    ("member", "add", "--id", "0", "--raft", "h:1", "--client", "h:2"),
    ("member", "add", "--raft", "h:1", "--client", "h:2"),
    ("member", "promote", "x"),
    ("member", "remove"),
])
def test_usage_errors_exit_2_before_sending(capsys, argv):
    with pytest.raises(SystemExit) as ei:
        parse(*argv, "--endpoints", "127.0.0.1:1")
    assert ei.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_fastraft_command_runs_member(capsys, cluster):
    from fastraft.cli import main

    assert main(["member", "list", "--json", *cluster.endpoints()]) == 0
    assert len(json.loads(capsys.readouterr().out)["members"]) == 3
