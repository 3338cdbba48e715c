"""msgpack itself, for the codec package: THE one module of fastraft that imports msgpack.

Place in the architecture: the bottom of ``fastraft.codec`` (whose package docstring is the
reference for every format). It holds the process's packer (``pack``, ``new_packer``), strict
decoding (``_unpackb``, ``unpack``), the snapshot stream decoder (``SnapshotDecoder``), and the
small validation helpers and bounds the protocol modules share (``_bad``, ``_uint``, ``_ids``,
``_U64``, ``MAX_ADDRESS``). The protocol modules (``peer``, ``client``, ``commands``) reach
msgpack only through these names.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import RemoteProtocolError, short_repr

_U64 = (1 << 64) - 1
#: Longest "host:port" accepted in a member change or context.
MAX_ADDRESS = 300
_MAX_VOTERS = 4096

# One packer per process: msgpack's Packer reuses its buffer (autoreset returns bytes).
_packer = msgpack.Packer(use_bin_type=True)
pack = _packer.pack


def new_packer():
    """A private ``pack`` function (for a forked child or another thread: msgpack's Packer
    keeps a buffer and must not be shared across threads or used mid-write after a fork)."""
    return msgpack.Packer(use_bin_type=True).pack


def _unpackb(body, max_bytes: int):
    """Strict msgpack decoding of one value: bin/str kept apart, no maps with non-str keys,
    no ext types, and no container or string longer than the body could honestly hold."""
    try:
        return msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True,
            max_bin_len=max_bytes, max_str_len=max_bytes,
            max_array_len=max_bytes, max_map_len=max_bytes, max_ext_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise RemoteProtocolError(
            f"undecodable msgpack body ({type(exc).__name__}: {exc})") from None


def unpack(body) -> Any:
    """Decode one msgpack value (strictly; see ``_unpackb``)."""
    return _unpackb(body, max(len(body), 1))


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(what)


def _uint(v, what: str) -> int:
    if type(v) is not int or not 0 <= v <= _U64:
        raise _bad(f"{what}: expected an unsigned integer, got {short_repr(v)}")
    return v


def _ids(v, what: str) -> frozenset:
    if type(v) is not list or len(v) > _MAX_VOTERS:
        raise _bad(f"{what}: expected a list of node ids")
    out = frozenset(_uint(x, what) for x in v)
    if 0 in out:
        raise _bad(f"{what}: node id 0 is not valid")
    return out


# -- snapshot streams -----------------------------------------------------------------------

class SnapshotDecoder:
    """Decode a stream of msgpack values fed in arbitrary chunks (a state machine snapshot).
    Values are decoded strictly; ``max_bytes`` bounds any single string or container (the
    default holds the largest value a cluster may be configured for, 256 MiB, with room)."""

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self._u = msgpack.Unpacker(
            raw=False, use_list=True, strict_map_key=True, max_buffer_size=max_bytes * 2,
            max_bin_len=max_bytes, max_str_len=max_bytes, max_array_len=max_bytes,
            max_map_len=max_bytes, max_ext_len=0)

    def feed(self, data) -> list:
        """The values completed by ``data`` (bytes-like), in order; a value cut at the end
        waits for the next feed. RemoteProtocolError for a stream that is not valid."""
        try:
            self._u.feed(data)
            return list(self._u)
        except (ValueError, msgpack.FormatError, msgpack.StackError, TypeError,
                UnicodeDecodeError, msgpack.BufferFull, OverflowError) as exc:
            raise RemoteProtocolError(f"undecodable snapshot stream: {exc}") from None
