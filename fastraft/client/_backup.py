"""Downloading a backup (``fastraft snapshot save``): the client side of OP_BACKUP.

Place in the architecture: the client layer, beside ``_members``: it drives an ``AsyncClient``
(its call loop finds the leader, follows redirects, retries a Busy node and speaks TLS) and
writes the file with ``fastraft.backup.BackupWriter``. It never imports the server.

The exchange (``codec`` docstring): OP_BACKUP goes to the leader like a linearizable read and
is answered once the leader has written and checked a snapshot of its state machine, at least
as recent as the moment the request arrived (every write acknowledged before it is in it):
a token, the snapshot's meta, the length and CRC-32 of its data. The data is then asked for
from THAT node, on the connection that got the answer, ``CHUNK`` bytes per OP_BACKUP_READ
with ``WINDOW`` requests in flight (so the node never buffers more than that for it), and
written block by block; the file is completed only if its length and CRC are the node's
(``BackupWriter.finish``: then fsynced, verified, renamed). OP_BACKUP_END releases the node's
file, also after a failure (best effort).

Errors: what ``AsyncClient`` raises for OP_BACKUP (NotLeader when no leader answers, Busy
when the leader is busy with another backup, TLSError...); ``ConnectionLost`` or ``Timeout``
when the node stops answering during the download, ``RemoteProtocolError`` for an answer of
the wrong shape, CorruptRecordError when the data is not what the node announced, OSError
from the file system. Nothing is left at the file's path but a complete, verified backup.
"""

from __future__ import annotations

import asyncio
import logging

from .. import backup as B
from .. import codec
from ..codec import OP_BACKUP, OP_BACKUP_END, OP_BACKUP_READ, ST_BUSY, ST_INVALID, ST_OK
from ..errors import (Busy, ConnectionLost, InvalidRequest, RemoteProtocolError, Timeout,
                      short_repr)
from . import _protocol as P
from ._attempts import READ

__all__ = ["save_backup", "CHUNK", "WINDOW"]

log = logging.getLogger("fastraft.client")

#: Bytes asked for per OP_BACKUP_READ, and how many such requests are in flight at once.
CHUNK = 1 << 20
WINDOW = 4
_U64 = (1 << 64) - 1


def _info(values: list) -> tuple:
    """The values of an OP_BACKUP answer, checked: ``(token, meta fields...)``."""
    if len(values) != 11:
        raise RemoteProtocolError(f"malformed backup answer: {short_repr(values)}")
    (token, index, term, voters, outgoing, learners, context, dlen, dcrc, cluster,
     node_id) = values
    for x in (token, index, term, dlen, dcrc, node_id):
        if type(x) is not int or not 0 <= x <= _U64:
            raise RemoteProtocolError(f"malformed backup answer: {short_repr(values)}")
    for ids in (voters, outgoing, learners):
        if type(ids) is not list or not all(type(i) is int for i in ids):
            raise RemoteProtocolError(f"malformed backup answer: {short_repr(values)}")
    if type(context) is not bytes or type(cluster) is not str or dlen == 0:
        raise RemoteProtocolError(f"malformed backup answer: {short_repr(values)}")
    return token, B.new_meta(index, term, voters, outgoing, learners, context, cluster,
                             node_id, dlen, dcrc)


async def save_backup(client, path, progress=None) -> tuple[B.BackupMeta, dict]:
    """Download a backup from the cluster of ``client`` (an ``AsyncClient``) into ``path``
    (module docstring); ``(its meta, {"keys", "sessions"})`` (the counts from the head of
    the state machine's stream). ``progress(done, total)`` is called after each piece."""
    values = await client._call(READ, OP_BACKUP, ())
    token, meta = _info(values)
    conn = client._lconn                # the connection that got the answer (the call
    addr = client._leader               # loop makes the node that answers OK its leader)
    try:
        if conn is None or not conn.ready or conn.addr != addr:
            raise ConnectionLost(f"the connection to {addr} that got the backup closed")
        head = _Head()
        with B.BackupWriter(path, meta) as w:
            await _download(client, conn, token, meta.data_len, w, head, progress)
            return w.finish(), head.counts()
    finally:
        if conn is not None and conn.ready:
            try:
                await conn.request(OP_BACKUP_END, (token,), client.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:         # noqa: BLE001 - releasing is best effort
                log.debug("releasing backup %d at %s: %s", token, addr, exc)


class _Head:
    """The first value of the state machine's stream, ``[1, applied, clock, timeout,
    n_keys, n_sessions]``, decoded from the first pieces."""

    def __init__(self) -> None:
        self._dec = codec.SnapshotDecoder()
        self.value = None

    def feed(self, data: bytes) -> None:
        if self.value is None:
            got = self._dec.feed(data)
            if got:
                self.value = got[0]
                self._dec = None

    def counts(self) -> dict:
        counts = B.stream_counts(self.value)
        if counts is None:
            raise RemoteProtocolError(f"the backup's state machine stream starts with "
                                      f"{short_repr(self.value)}")
        return {"keys": counts["keys"], "sessions": counts["sessions"],
                "leases": counts["leases"]}


async def _download(client, conn, token: int, total: int, w, head: _Head,
                    progress) -> None:
    """Ask for the data in order, WINDOW pieces in flight, and write each as it comes."""
    timeout = client.timeout
    offsets = range(0, total, CHUNK)
    inflight: list = []
    it = iter(offsets)
    for off in it:
        inflight.append((off, conn.request(OP_BACKUP_READ, (token, off, CHUNK), timeout)))
        if len(inflight) >= WINDOW:
            break
    done = 0
    while inflight:
        off, fut = inflight.pop(0)
        status, values = await fut
        nxt = next(it, None)
        if nxt is not None:
            inflight.append((nxt, conn.request(OP_BACKUP_READ, (token, nxt, CHUNK),
                                               timeout)))
        if status != ST_OK:
            for _o, f in inflight:
                f.cancel()
            raise _read_error(conn.addr, status, values)
        want = min(CHUNK, total - off)
        if len(values) != 1 or type(values[0]) is not bytes or len(values[0]) != want:
            raise RemoteProtocolError(f"backup piece at {off} from {conn.addr}: expected "
                                      f"{want} bytes, got {short_repr(values)}")
        w.write(values[0])
        head.feed(values[0])
        done += want
        if progress is not None:
            progress(done, total)


def _read_error(addr: str, status: int, values: list) -> Exception:
    """The error of a failed OP_BACKUP_READ (the download stops: the node's file is only
    served by the node that made it, so there is no retrying elsewhere)."""
    msg = f"backup download from {addr} failed: {P.message(values)}"
    if status == P.TIMED_OUT:
        return Timeout(msg)
    if status == P.LOST:
        return ConnectionLost(msg)
    if status == ST_BUSY:
        return Busy(msg)
    if status == ST_INVALID:
        return InvalidRequest(msg)
    return RemoteProtocolError(msg)
