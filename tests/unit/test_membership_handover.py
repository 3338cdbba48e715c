"""A removed leader hands the lead over when it steps down (issue 13's figure: from `member
remove` of the leader to the next acknowledged write).

Place in the architecture: unit tests of the sans-IO engine (``fastraft.raft``), on both cores
through the ``rh`` harness of tests/unit/conftest.py.
"""

from __future__ import annotations

from fastraft.raft import MsgType
from fastraft.raft.confchange import REMOVE_NODE, Change, ConfChange


def test_a_removed_leader_hands_the_lead_to_an_up_to_date_voter(rh):
    c = rh.Cluster(ids=[1, 2, 3], voters={1, 2, 3})
    c.elect(1)
    c[1].raw.propose_conf_change(ConfChange((Change(REMOVE_NODE, 1),)))
    c.stabilize()                       # no tick: only the messages of the change
    assert c[1].role == rh.FOLLOWER, "the removed leader stepped down once it committed"
    nows = [m for m in c.delivered if m.type == MsgType.TIMEOUT_NOW]
    assert len(nows) == 1 and nows[0].frm == 1 and nows[0].to in (2, 3)
    # The successor campaigned at once: a leader without a single tick.
    assert c.leader() == nows[0].to
    assert c[nows[0].to].raw.status().voters == (2, 3)
    c.check_safety()
