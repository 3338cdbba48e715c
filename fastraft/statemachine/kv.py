"""The key-value data of the replicated state machine: a dict plus a sorted key index.

Place in the architecture: the bottom of ``fastraft.statemachine``, under ``machine.py`` (which
applies committed commands to it and streams it into snapshots). Pure Python, no IO, no
msgpack, no knowledge of Raft, sessions or time: keys and values are ``bytes``; each key also
has a revision, an integer >= 1 the caller gives with each write (the machine gives the log
index of the entry that wrote it; 1, "unknown", when none is given), kept in a second dict
(``rev``: 0 means absent).

Layout: values live in a dict (``get``/``put`` of an existing key are one dict operation and
never touch the index); the keys are also kept in ascending byte order in a "list of sorted
lists" (the bucket structure of sortedcontainers' SortedList, written out here so as not to
add a dependency): ``_lists`` holds buckets of at most ``2 * LOAD`` sorted keys, ``_maxes[i]``
is the last key of bucket ``i``. Inserting or removing a key costs a bisect over the bucket
maxima plus a ``list.insert``/``del`` inside one bucket of ~1,000 keys (a memmove of a few KB),
so 1M keys with frequent inserts stay fast; a full bucket splits in two, an emptied one
disappears and a small one is merged into its neighbour. ``scan`` bisects to the first key
``>= prefix`` and walks forward; ``items`` and ``key_batches`` walk the buckets in order
(cheap: no sorting, no copying of keys).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

__all__ = ["KVStore", "LOAD"]

#: Target bucket size: buckets split above 2*LOAD keys and merge below LOAD/2.
LOAD = 1000


class KVStore:
    """Byte keys to byte values, with ordered prefix scans."""

    __slots__ = ("_data", "_revs", "_lists", "_maxes", "_load")

    def __init__(self, load: int = LOAD) -> None:
        if load < 2:
            raise ValueError("load must be at least 2")
        self._load = load
        self._data: dict[bytes, bytes] = {}
        self._revs: dict[bytes, int] = {}
        self._lists: list[list[bytes]] = []
        self._maxes: list[bytes] = []

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def rev(self, key: bytes) -> int:
        """The revision of ``key``'s last write, 0 when it is absent."""
        return self._revs.get(key, 0)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def scan(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs whose key starts with ``prefix``, in ascending key order."""
        out: list[tuple[bytes, bytes]] = []
        if limit <= 0:
            return out
        maxes = self._maxes
        b = bisect_left(maxes, prefix)
        if b == len(maxes):
            return out
        lists = self._lists
        data = self._data
        i = bisect_left(lists[b], prefix)
        nb = len(lists)
        while b < nb:
            bucket = lists[b]
            for j in range(i, len(bucket)):
                k = bucket[j]
                if not k.startswith(prefix):
                    return out
                out.append((k, data[k]))
                if len(out) >= limit:
                    return out
            b += 1
            i = 0
        return out

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every pair in ascending key order (do not modify the store while iterating)."""
        data = self._data
        for bucket in self._lists:
            for k in bucket:
                yield k, data[k]

    def keys(self) -> Iterator[bytes]:
        for bucket in self._lists:
            yield from bucket

    def key_batches(self) -> Iterator[list[bytes]]:
        """The sorted key index bucket by bucket (each a list of ascending keys, together all
        keys in order). The lists are the store's own: read them, never modify them, and do
        not modify the store while iterating. Used by the snapshot writer."""
        return iter(self._lists)

    @property
    def data(self) -> dict[bytes, bytes]:
        """The value dict itself (read only), for bulk readers such as the snapshot writer."""
        return self._data

    @property
    def revs(self) -> dict[bytes, int]:
        """The revision dict itself (read only), for bulk readers."""
        return self._revs

    # -- writes ------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, rev: int = 1) -> None:
        data = self._data
        if key not in data:
            self._index_add(key)
        data[key] = value
        self._revs[key] = rev

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True when it existed."""
        data = self._data
        if key not in data:
            return False
        del data[key]
        del self._revs[key]
        self._index_remove(key)
        return True

    def cas(self, key: bytes, expected: bytes | None, new: bytes, rev: int = 1) -> bool:
        """Set ``key`` to ``new`` (at revision ``rev``) if its value is ``expected`` (None:
        the key is absent)."""
        if self._data.get(key) != expected:
            return False
        self.put(key, new, rev)
        return True

    # -- the sorted index --------------------------------------------------------------------

    def _index_add(self, key: bytes) -> None:
        maxes = self._maxes
        lists = self._lists
        if not maxes:
            lists.append([key])
            maxes.append(key)
            return
        b = bisect_left(maxes, key)
        if b == len(maxes):
            b -= 1
            lists[b].append(key)
            maxes[b] = key
        else:
            insort(lists[b], key)
        bucket = lists[b]
        load = self._load
        if len(bucket) > 2 * load:
            half = bucket[load:]
            del bucket[load:]
            lists.insert(b + 1, half)
            maxes[b] = bucket[-1]
            maxes.insert(b + 1, half[-1])

    def _index_remove(self, key: bytes) -> None:
        maxes = self._maxes
        lists = self._lists
        b = bisect_left(maxes, key)
        bucket = lists[b]
        i = bisect_left(bucket, key)
        assert bucket[i] == key, "the key index lost a key"
        del bucket[i]
        n = len(bucket)
        if n == 0:
            del lists[b]
            del maxes[b]
            return
        maxes[b] = bucket[-1]
        load = self._load
        if n < load // 2 and len(lists) > 1:
            # merge with a neighbour (the next one, or the previous for the last bucket)
            if b == len(lists) - 1:
                b -= 1
            first = lists[b]
            first.extend(lists[b + 1])
            del lists[b + 1]
            del maxes[b + 1]
            maxes[b] = first[-1]
            if len(first) > 2 * load:
                half = first[load:]
                del first[load:]
                lists.insert(b + 1, half)
                maxes[b] = first[-1]
                maxes.insert(b + 1, half[-1])

    # -- bulk load ---------------------------------------------------------------------------

    @classmethod
    def from_sorted(cls, keys: list[bytes], values: list[bytes], revs: list[int] | None = None,
                    load: int = LOAD) -> KVStore:
        """A store built from keys already in strictly ascending order (the caller checks),
        their values and revisions (None: every revision 1, "unknown"), in O(n) without
        sorting."""
        data = dict(zip(keys, values))
        assert len(data) == len(keys), "from_sorted: duplicate keys"
        return cls.from_index(keys, data, None if revs is None else dict(zip(keys, revs)),
                              load)

    @classmethod
    def from_index(cls, keys: list[bytes], data: dict[bytes, bytes],
                   revs: dict[bytes, int] | None = None, load: int = LOAD) -> KVStore:
        """A store over ``data`` and ``revs`` (taken, not copied; None: every revision 1)
        whose keys are ``keys``, in strictly ascending order (the caller checks all three):
        ``from_sorted`` for a caller that built the dicts itself, piece by piece (a snapshot
        restore on a worker thread)."""
        assert len(data) == len(keys), "from_index: the keys are not the dict's"
        self = cls(load)
        self._data = data
        self._revs = dict.fromkeys(keys, 1) if revs is None else revs
        assert len(self._revs) == len(keys), "from_index: the revisions are not the keys'"
        lists = [keys[i:i + load] for i in range(0, len(keys), load)]
        self._lists = lists
        self._maxes = [bucket[-1] for bucket in lists]
        return self

    def check(self) -> None:
        """Assert the internal invariants (tests)."""
        flat = [k for bucket in self._lists for k in bucket]
        assert all(self._lists), "empty bucket"
        assert all(len(b) <= 2 * self._load for b in self._lists), "oversized bucket"
        assert flat == sorted(self._data), "index out of order or out of sync"
        assert self._revs.keys() == self._data.keys(), "revisions out of sync"
        assert self._maxes == [b[-1] for b in self._lists], "stale bucket maxima"
