"""The two core implementations expose the same names and constants, and ``fastraft.core``
re-exports all of them.

Place in the architecture: tests only. Behaviour is compared elsewhere (every unit test runs on
both twins; tests/property compares them on random inputs); this file checks the surface.
"""

from __future__ import annotations

import inspect

import pytest

import fastraft.core as core
from fastraft import errors

CONSTANT_TYPES = (int, bytes, str)


def constants(module):
    return {name: getattr(module, name) for name in module.__all__
            if isinstance(getattr(module, name), CONSTANT_TYPES)}


def test_same_public_names(core_twins):
    py, cy = core_twins
    assert len(py.__all__) == len(set(py.__all__))
    assert len(cy.__all__) == len(set(cy.__all__))
    assert sorted(py.__all__) == sorted(cy.__all__)


def test_same_constant_values(core_twins):
    py, cy = core_twins
    a, b = constants(py), constants(cy)
    assert a.keys() == b.keys()
    assert len(a) >= 15
    for name, value in a.items():
        assert type(b[name]) is type(value), name
        assert b[name] == value, name


def test_same_kinds_of_objects(core_twins):
    py, cy = core_twins
    for name in py.__all__:
        a, b = getattr(py, name), getattr(cy, name)
        assert inspect.isclass(a) == inspect.isclass(b), name
        assert callable(a) == callable(b), name


def test_public_names_exist_and_are_public(core_impl):
    for name in core_impl.__all__:
        assert not name.startswith("_"), name
        assert hasattr(core_impl, name), name
    for name in ("LogRing", "FrameDecoder", "committed_index", "decode_records"):
        assert name in core_impl.__all__


def test_core_reexports_every_name(core_impl):
    assert sorted(core.__all__) == sorted(["IMPLEMENTATION", *core_impl.__all__])
    for name in core_impl.__all__:
        assert hasattr(core, name), name


def test_core_names_are_those_of_the_chosen_implementation(core_impl):
    chosen = {"python": "fastraft._core_py", "cython": "fastraft._core"}[core.IMPLEMENTATION]
    if core_impl.__name__ != chosen:
        pytest.skip(f"fastraft.core uses {chosen}, not {core_impl.__name__}")
    for name in core_impl.__all__:
        assert getattr(core, name) is getattr(core_impl, name), name


def test_documented_constant_values(core_impl):
    assert core_impl.MAX_INDEX == 2**63 - 1
    assert core_impl.MIN_CAPACITY == 16
    assert len({core_impl.VOTE_PENDING, core_impl.VOTE_LOST, core_impl.VOTE_WON}) == 3
    assert core_impl.WAL_VERSION == 1
    assert core_impl.SEGMENT_MAGIC == b"FRAFTWAL"
    assert core_impl.SEGMENT_HEADER_SIZE == 16
    assert core_impl.RECORD_HEADER_SIZE == 32
    assert core_impl.FRAME_HEADER_SIZE == 4


def test_errors_are_the_shared_classes_of_fastraft_errors(core_impl):
    """The core raises the classes of fastraft.errors itself, not look-alikes."""
    ring = core_impl.LogRing(5, 1)
    with pytest.raises(errors.CompactedError) as info:
        ring.payload(5)
    assert type(info.value) is errors.CompactedError
    with pytest.raises(errors.UnavailableError) as info:
        ring.term(7)
    assert type(info.value) is errors.UnavailableError
    with pytest.raises(errors.CorruptRecordError) as info:
        core_impl.decode_segment_header(b"")
    assert type(info.value) is errors.CorruptRecordError
    dec = core_impl.FrameDecoder(1)
    with pytest.raises(errors.FrameTooLarge) as info:
        dec.feed(b"\x02\x00\x00\x00")
    assert type(info.value) is errors.FrameTooLarge
    with pytest.raises(errors.LocalProtocolError) as info:
        dec.feed(b"")
    assert type(info.value) is errors.LocalProtocolError
