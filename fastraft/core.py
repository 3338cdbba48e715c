"""The one import point of the core: the compiled ``fastraft._core`` or its pure-Python twin
``fastraft._core_py``, with the same names and semantics.

Place in the architecture: everything above the core (raft, storage, transport, server)
imports core names from here, never from ``_core`` or ``_core_py`` directly. ``IMPLEMENTATION``
says which one was chosen: ``"cython"`` or ``"python"``.

``FASTRAFT_NO_EXTENSIONS=1`` (any non-empty value) forces the twin, at build time (setup.py)
and here at import time. Otherwise the extension is used when it imports, and the twin when it
does not (a build without a compiler); tests/unit/test_implementation.py fails on such a silent
fallback unless the variable is set.
"""

from __future__ import annotations

import os

if os.environ.get("FASTRAFT_NO_EXTENSIONS"):
    from . import _core_py as _impl

    IMPLEMENTATION = "python"
else:
    try:
        from . import _core as _impl  # type: ignore[attr-defined]

        IMPLEMENTATION = "cython"
    except ImportError:
        from . import _core_py as _impl

        IMPLEMENTATION = "python"

LogRing = _impl.LogRing
MIN_CAPACITY = _impl.MIN_CAPACITY
MAX_INDEX = _impl.MAX_INDEX
quorum_size = _impl.quorum_size
committed_index = _impl.committed_index
joint_committed_index = _impl.joint_committed_index
vote_result = _impl.vote_result
joint_vote_result = _impl.joint_vote_result
VOTE_PENDING = _impl.VOTE_PENDING
VOTE_LOST = _impl.VOTE_LOST
VOTE_WON = _impl.VOTE_WON
encode_record = _impl.encode_record
encode_records = _impl.encode_records
encode_entries = _impl.encode_entries
decode_records = _impl.decode_records
encode_segment_header = _impl.encode_segment_header
decode_segment_header = _impl.decode_segment_header
WAL_CLEAN = _impl.WAL_CLEAN
WAL_TORN = _impl.WAL_TORN
WAL_CORRUPT = _impl.WAL_CORRUPT
WAL_VERSION = _impl.WAL_VERSION
SEGMENT_MAGIC = _impl.SEGMENT_MAGIC
SEGMENT_HEADER_SIZE = _impl.SEGMENT_HEADER_SIZE
RECORD_HEADER_SIZE = _impl.RECORD_HEADER_SIZE
DEFAULT_MAX_RECORD_SIZE = _impl.DEFAULT_MAX_RECORD_SIZE
encode_frame = _impl.encode_frame
encode_frames = _impl.encode_frames
FrameDecoder = _impl.FrameDecoder
OversizedFrame = _impl.OversizedFrame
FRAME_HEADER_SIZE = _impl.FRAME_HEADER_SIZE
DEFAULT_MAX_FRAME_SIZE = _impl.DEFAULT_MAX_FRAME_SIZE

__all__ = ["IMPLEMENTATION", *_impl.__all__]
