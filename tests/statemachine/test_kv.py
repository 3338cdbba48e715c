"""KVStore against a model: a plain dict, with sorted() for the order (hypothesis stateful).

Place in the architecture: tests of fastraft/statemachine/kv.py only.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastraft.statemachine.kv import KVStore

# A small alphabet so that keys collide, share prefixes and cross bucket boundaries.
keys = st.binary(min_size=0, max_size=4).map(lambda b: bytes(x % 4 + 0x61 for x in b))
values = st.binary(max_size=3)
prefixes = st.binary(max_size=3).map(lambda b: bytes(x % 4 + 0x61 for x in b))


def model_scan(model: dict, prefix: bytes, limit: int) -> list:
    return [(k, model[k]) for k in sorted(model) if k.startswith(prefix)][:max(limit, 0)]


class KVModel(RuleBasedStateMachine):
    """Tiny buckets (load 2..4) so that splits and merges happen in short runs."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[bytes, bytes] = {}
        self.kv: KVStore | None = None

    @precondition(lambda self: self.kv is None)
    @rule(load=st.integers(2, 4))
    def create(self, load):
        self.kv = KVStore(load=load)

    @precondition(lambda self: self.kv is not None)
    @rule(k=keys, v=values)
    def put(self, k, v):
        self.kv.put(k, v)
        self.model[k] = v

    @precondition(lambda self: self.kv is not None)
    @rule(k=keys)
    def delete(self, k):
        assert self.kv.delete(k) == (k in self.model)
        self.model.pop(k, None)

    @precondition(lambda self: self.kv is not None)
    @rule(k=keys, expected=st.one_of(st.none(), values), new=values)
    def cas(self, k, expected, new):
        swapped = self.model.get(k) == expected
        assert self.kv.cas(k, expected, new) == swapped
        if swapped:
            self.model[k] = new

    @precondition(lambda self: self.kv is not None)
    @rule(k=keys)
    def get(self, k):
        assert self.kv.get(k) == self.model.get(k)
        assert (k in self.kv) == (k in self.model)

    @precondition(lambda self: self.kv is not None)
    @rule(prefix=prefixes, limit=st.integers(-1, 30))
    def scan(self, prefix, limit):
        assert self.kv.scan(prefix, limit) == model_scan(self.model, prefix, limit)

    @precondition(lambda self: self.kv is not None)
    @rule()
    def rebuild_from_sorted(self):
        items = list(self.kv.items())
        load = self.kv._load
        self.kv = KVStore.from_sorted([k for k, _ in items], [v for _, v in items], load=load)

    @invariant()
    def consistent(self):
        if self.kv is None:
            return
        self.kv.check()
        assert len(self.kv) == len(self.model)
        assert list(self.kv.items()) == sorted(self.model.items())
        assert [k for b in self.kv.key_batches() for k in b] == sorted(self.model)


TestKVModel = KVModel.TestCase


def test_put_of_existing_key_does_not_touch_the_index():
    kv = KVStore(load=2)
    for k in (b"a", b"b", b"c", b"d", b"e"):
        kv.put(k, b"1")
    lists = [list(b) for b in kv._lists]
    ids = [id(b) for b in kv._lists]
    kv.put(b"c", b"2")
    assert [list(b) for b in kv._lists] == lists and [id(b) for b in kv._lists] == ids
    assert kv.get(b"c") == b"2"


def test_many_random_operations_default_load():
    rng = random.Random(7)
    kv = KVStore()
    model: dict[bytes, bytes] = {}
    for step in range(30_000):
        k = b"%05d" % rng.randrange(6000)
        if rng.random() < 0.65:
            kv.put(k, b"%d" % step)
            model[k] = b"%d" % step
        else:
            assert kv.delete(k) == (model.pop(k, None) is not None)
    kv.check()
    assert list(kv.items()) == sorted(model.items())
    for prefix in (b"", b"0", b"01", b"059", b"9"):
        assert kv.scan(prefix, 2500) == model_scan(model, prefix, 2500)
    while model:                          # drain: merges down to nothing
        k = next(iter(model))
        del model[k]
        assert kv.delete(k)
    kv.check()
    assert kv.scan(b"", 10) == [] and len(kv) == 0


def test_scan_edges():
    kv = KVStore(load=2)
    for k in (b"a", b"ab", b"abc", b"b", b"\xff", b"\xff\xff", b""):
        kv.put(k, k)
    assert kv.scan(b"a", 10) == [(b"a", b"a"), (b"ab", b"ab"), (b"abc", b"abc")]
    assert kv.scan(b"a", 2) == [(b"a", b"a"), (b"ab", b"ab")]
    assert kv.scan(b"\xff", 10) == [(b"\xff", b"\xff"), (b"\xff\xff", b"\xff\xff")]
    assert kv.scan(b"c", 10) == []
    assert kv.scan(b"", 0) == []
    assert [k for k, _ in kv.scan(b"", 100)] == sorted([b"a", b"ab", b"abc", b"b", b"\xff",
                                                        b"\xff\xff", b""])


def test_load_must_be_sane():
    with pytest.raises(ValueError):
        KVStore(load=1)
