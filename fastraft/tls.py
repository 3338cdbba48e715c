"""TLS contexts for the node's two ports and for clients, built with Python's ``ssl`` module.

Place in the architecture: a leaf beside ``config`` (standard library and ``fastraft.errors``
only). It turns certificate files into ``ssl.SSLContext`` objects and refuses, with a message
naming the file, anything it cannot use: a missing or unreadable file, a file that is not a
PEM certificate or key, a key that does not belong to its certificate. TLS 1.2 at least.

- ``peer_server_context``: the peer port. A peer must present a certificate signed by the
  peer CA (mutual TLS); the client CA is not trusted there.
- ``peer_client_context``: dialling a peer: its certificate must be signed by the peer CA and
  name the address dialled (host name checking on); this node presents its own certificate.
- ``client_server_context``: the client port; with a client CA, clients must present a
  certificate signed by it.
- ``client_context``: what ``fastraft.client`` uses: verify the node against ``cacert`` and
  the endpoint's host name; present ``cert``/``key`` when given.

Not wired into the node yet (issue 14 in progress): the config file has no ``[tls]`` table.
"""

from __future__ import annotations

import os
import ssl

from .errors import ConfigError

__all__ = ["TLSFileError", "peer_server_context", "peer_client_context",
           "client_server_context", "client_context"]


class TLSFileError(ConfigError):
    """A certificate, key or CA file that cannot be used (the message names the file)."""


def _check_file(path: str, what: str, marker: bytes) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except FileNotFoundError:
        raise TLSFileError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise TLSFileError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if marker not in head:
        raise TLSFileError(f"{what} {path}: not a PEM {what} (no '{marker.decode()}' block)")


def _base(purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _load_ca(ctx: ssl.SSLContext, path: str, what: str) -> None:
    _check_file(path, what, b"-----BEGIN CERTIFICATE-----")
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TLSFileError(f"{what} {path}: not a usable CA certificate ({exc.reason})") \
            from None


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    _check_file(cert, "certificate", b"-----BEGIN CERTIFICATE-----")
    _check_file(key, "key", b"PRIVATE KEY-----")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSFileError(f"key {key} does not belong to certificate {cert}") from None
        raise TLSFileError(f"certificate {cert} / key {key}: cannot load them "
                           f"({exc.reason or exc})") from None


def peer_server_context(cert: str, key: str, peer_ca: str) -> ssl.SSLContext:
    """The peer port's context: mutual TLS, peers signed by ``peer_ca`` only."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_ca(ctx, peer_ca, "peer CA")
    _load_chain(ctx, cert, key)
    return ctx


def peer_client_context(cert: str, key: str, peer_ca: str) -> ssl.SSLContext:
    """Dialling a peer: it must be signed by ``peer_ca`` and name the address dialled."""
    ctx = _base(ssl.Purpose.SERVER_AUTH)
    _load_ca(ctx, peer_ca, "peer CA")
    _load_chain(ctx, cert, key)
    return ctx


def client_server_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """The client port's context; with ``client_ca``, a client certificate it signed is
    required."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH)
    _load_chain(ctx, cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_ca(ctx, client_ca, "client CA")
    return ctx


def client_context(cacert: str | None = None, cert: str | None = None,
                   key: str | None = None) -> ssl.SSLContext:
    """A client's context: the node verified against ``cacert`` (else the system's CAs)
    and the endpoint's host name; ``cert`` and ``key`` presented when given (both or
    neither)."""
    if (cert is None) != (key is None):
        raise TLSFileError("a client certificate needs its key, and a key its certificate")
    ctx = _base(ssl.Purpose.SERVER_AUTH)
    if cacert:
        _load_ca(ctx, os.fspath(cacert), "CA")
    if cert:
        _load_chain(ctx, os.fspath(cert), os.fspath(key))
    return ctx
