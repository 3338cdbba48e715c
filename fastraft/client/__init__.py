"""The fastraft client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Place in the architecture: the client layer (docs/architecture.md, "Layers"). Pure Python: it
uses ``codec`` for msgpack, ``core`` for the frame codec (the pure-Python twin when the
extension is absent), ``errors`` and ``config``; it never imports the server. Layout::

    _protocol.py   request frames, answer validation, the status -> error split
    _session.py    session id, sequence numbers, first_unacked
    retry.py       RetryPolicy and its backoff (replaceable)
    aio.py         AsyncClient: connections, pipelining, leader discovery, the call loop
    sync.py        Client: AsyncClient on a private loop in a background thread
    cli_cmds.py    fastraft put/get/del/cas/scan/status/bench
    bench.py       the load generator behind ``fastraft bench``
"""

from .aio import AsyncClient
from .retry import ExponentialBackoff, NoBackoff, RetryPolicy
from .sync import Client

__all__ = ["Client", "AsyncClient", "RetryPolicy", "ExponentialBackoff", "NoBackoff"]
