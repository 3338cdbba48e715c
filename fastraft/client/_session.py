"""``ClientSession``: the client's side of a session (Raft thesis §6.3): seqs, ``first_unacked``.

Place in the architecture: shared by the clients (``aio``; ``sync`` through it). Pure Python,
no IO, no event loop: the client calls it around every write.

Rules (the node's side is ``fastraft.statemachine.sessions``):

- A session is the index of its REGISTER entry. Its writes are numbered ``seq = 1, 2, ...``:
  one new seq per new write, and a retry of that write re-sends the SAME seq, so the state
  machine answers it from its cache instead of applying it twice.
- ``first_unacked`` is the lowest seq still open (sent, or about to be, and its answer not yet
  taken by the caller): the node drops the cached answers below it. A seq is closed by
  ``done`` when its call ends, whatever the result (an answer, or an error the caller got:
  once the caller has given up on a write, its cached answer is of no use). Invariant:
  ``first_unacked <= every open seq < next_seq``.
- Closing is O(1) amortized: open seqs are allocated in increasing order into a deque; closed
  ones are remembered in a set until the front of the deque reaches them.
- ``expired`` is set when a node answered SESSION_EXPIRED for this session (or a keep-alive
  failed that way): the client registers a new session for the next writes.
"""

from __future__ import annotations

from collections import deque

__all__ = ["ClientSession"]


class ClientSession:
    """One session of a client (module docstring): its id, the seqs of its writes, and
    ``first_unacked``; ``expired`` once a node said so."""

    __slots__ = ("id", "next_seq", "_open", "_closed", "expired", "last_sent")

    def __init__(self, sid: int, now: float = 0.0) -> None:
        self.id = sid
        self.next_seq = 1
        self._open: deque[int] = deque()   # seqs allocated, in increasing order
        self._closed: set[int] = set()     # seqs closed but not yet at the front of _open
        self.expired = False
        self.last_sent = now               # loop time of the last write of this session

    def begin(self) -> int:
        """Allocate the seq of a new write (and keep it open until ``done``)."""
        seq = self.next_seq
        self.next_seq = seq + 1
        self._open.append(seq)
        return seq

    def done(self, seq: int) -> None:
        """The call of write ``seq`` ended: its answer need not be kept any longer."""
        op = self._open
        if op and op[0] == seq:
            op.popleft()
            closed = self._closed
            while op and op[0] in closed:
                closed.discard(op.popleft())
        else:
            self._closed.add(seq)

    @property
    def first_unacked(self) -> int:
        """The lowest open seq, or ``next_seq`` when none is open."""
        op = self._open
        return op[0] if op else self.next_seq

    @property
    def open_count(self) -> int:
        """How many seqs are open (allocated and their call not ended)."""
        return len(self._open) - len(self._closed)

    def __repr__(self) -> str:
        return (f"ClientSession(id={self.id}, next_seq={self.next_seq}, "
                f"first_unacked={self.first_unacked}, expired={self.expired})")
