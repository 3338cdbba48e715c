"""Structure-aware mutations for the fuzzers: hypothesis strategies and seeded ``random``
versions of the same operations (the live-node fuzzer has no hypothesis engine).

Place in the architecture: test infrastructure (tests/fuzz); test modules load it by path
(pytest's importlib mode puts no test directory on sys.path).

Two levels of mutation of a valid encoding:

- bytes: flip a bit, overwrite, insert or delete bytes, truncate, duplicate a slice, splice
  in a msgpack header that declares a huge length (array32/map32/bin32/str32/ext32 of
  ~4 GiB) or an extreme integer;
- values: decode the msgpack value, walk to a random place in it and replace it with a value
  of another type, an out-of-range integer, a huge or deeply nested container, or delete,
  insert or swap array elements; then pack again.
"""

from __future__ import annotations

import random

import msgpack
from hypothesis import strategies as st

#: msgpack headers that announce far more than any input holds, and extreme scalars.
HUGE_HEADERS = [
    b"\xdd\xff\xff\xff\xff",          # array32 of 2**32-1 elements
    b"\xdf\xff\xff\xff\xff",          # map32
    b"\xc6\xff\xff\xff\xff",          # bin32 of 4 GiB
    b"\xdb\xff\xff\xff\xff",          # str32
    b"\xc9\xff\xff\xff\xff\x01",      # ext32
    b"\xdc\xff\xff",                  # array16 of 65535
    b"\xc5\xff\xff",                  # bin16
    b"\xc4\xff",                      # bin8
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",   # uint64 max
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",   # int64 min
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",   # float64 NaN
    b"\xc1",                          # never used
    b"\xd4\x00\x00",                  # fixext1
]

#: Values that break a field's expected type or range (all packable by msgpack).
WEIRD_VALUES = [
    None, True, False, 0, 1, -1, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, 1.5, float("inf"),
    "", "s", "\u00e9\u4e2d", b"", b"\x00", b"k" * 300, [], [None], [1, 2, 3], {}, {"a": 1},
    [[[[[[[[[[]]]]]]]]]], list(range(200)), [b"x", 1] * 50,
]


def pack(v) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def unpack_loose(body: bytes):
    """Decode for mutation (lenient: maps with any keys); None when it does not decode."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return None


# -- the operations, driven by any random source ----------------------------------------------

def mutate_bytes(rnd: random.Random, data: bytes, ops: int = 1) -> bytes:
    b = bytearray(data)
    for _ in range(ops):
        kind = rnd.randrange(9)
        n = len(b)
        pos = rnd.randrange(n + 1)
        if kind == 0 and n:                                   # flip a bit
            p = rnd.randrange(n)
            b[p] ^= 1 << rnd.randrange(8)
        elif kind == 1 and n:                                 # overwrite a byte
            b[rnd.randrange(n)] = rnd.randrange(256)
        elif kind == 2:                                       # insert random bytes
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
        elif kind == 3 and n:                                 # delete a run
            del b[pos:pos + rnd.randrange(1, 9)]
        elif kind == 4:                                       # truncate
            del b[pos:]
        elif kind == 5 and n:                                 # duplicate a slice
            lo = rnd.randrange(n)
            hi = min(n, lo + rnd.randrange(1, 17))
            b[pos:pos] = b[lo:hi]
        elif kind == 6:                                       # splice in a huge header
            b[pos:pos] = rnd.choice(HUGE_HEADERS)
        elif kind == 7 and n:                                 # overwrite with a huge header
            h = rnd.choice(HUGE_HEADERS)
            b[pos:pos + len(h)] = h
        else:                                                 # append garbage
            b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
    return bytes(b)


def _weird(rnd: random.Random):
    """A fresh copy of a WEIRD_VALUES element (never the shared object itself)."""
    w = rnd.choice(WEIRD_VALUES)
    return unpack_loose(pack(w)) if isinstance(w, (list, dict)) else w


def _containers(v, path=()):
    """Every (path, container) in v, lists and dicts included."""
    if isinstance(v, list):
        yield path, v
        for i, x in enumerate(v):
            yield from _containers(x, path + (i,))
    elif isinstance(v, dict):
        yield path, v
        for k, x in v.items():
            yield from _containers(x, path + (k,))


def mutate_value(rnd: random.Random, value, ops: int = 1):
    """A deep-copied ``value`` with ``ops`` structural mutations."""
    v = unpack_loose(pack(value))          # a private copy
    for _ in range(ops):
        spots = list(_containers(v))
        if not spots:
            v = rnd.choice([_weird(rnd), [v], {"x": v}])
            continue
        _path, c = rnd.choice(spots)
        kind = rnd.randrange(6)
        if isinstance(c, dict):
            if c and kind < 3:
                k = rnd.choice(list(c))
                c[k] = _weird(rnd)
            else:
                c[rnd.choice(["", "k", "op", "0"])] = _weird(rnd)
            continue
        n = len(c)
        if kind <= 2 and n:                                   # replace an element
            c[rnd.randrange(n)] = _weird(rnd)
        elif kind == 3 and n:                                 # delete an element
            del c[rnd.randrange(n)]
        elif kind == 4:                                       # insert an element
            c.insert(rnd.randrange(n + 1), _weird(rnd))
        elif n >= 2:                                          # swap two elements
            i, j = rnd.randrange(n), rnd.randrange(n)
            c[i], c[j] = c[j], c[i]
        else:
            c.append(_weird(rnd))
    return v


def mutate_body(rnd: random.Random, body: bytes) -> bytes:
    """One mutated msgpack body: value-level (when it decodes), byte-level, or both."""
    how = rnd.randrange(3)
    if how != 1:
        v = unpack_loose(body)
        if v is not None or body == pack(None):
            try:
                body = pack(mutate_value(rnd, v, rnd.randrange(1, 4)))
            except (OverflowError, TypeError, ValueError):
                pass
    if how != 0:
        body = mutate_bytes(rnd, body, rnd.randrange(1, 4))
    return body


# -- hypothesis strategies --------------------------------------------------------------------

def mutated(valid: st.SearchStrategy) -> st.SearchStrategy:
    """``(original, mutated)`` bodies: a valid encoding from ``valid`` and a mutation of it
    (driven by a hypothesis-drawn seed, so hypothesis still replays and reports it)."""
    return st.tuples(valid, st.randoms(use_true_random=False)).map(
        lambda t: (t[0], mutate_body(t[1], t[0])))
