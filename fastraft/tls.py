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
  certificate signed by it (or a node certificate, signed by the peer CA).
- ``client_context``: what ``fastraft.client`` uses: verify the node against ``cacert`` and
  the endpoint's host name; present ``cert``/``key`` when given.

- ``tls_on_plain_port``: what a plaintext port says of a "frame length" that is the start of
  a TLS handshake (the other side has ``[tls]``, this node does not).
- ``node_contexts``: the three contexts of a node from its ``[tls]`` table (at start, and
  again on SIGHUP).
- ``handshake_refusal``: why a handshake failed, in words for the log (no secrets: the
  OpenSSL reason and verification message only).

The node builds its contexts from the config file's ``[tls]`` table (``server.wiring``) and
rebuilds them on SIGHUP; ``server.tlsport`` runs the handshakes of the listening side.
"""

from __future__ import annotations

import os
import ssl

from .errors import ConfigError

__all__ = ["TLSFileError", "peer_server_context", "peer_client_context",
           "client_server_context", "client_context", "node_contexts", "handshake_refusal",
           "tls_on_plain_port"]


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


def client_server_context(cert: str, key: str, client_ca: str | None,
                          peer_ca: str | None = None) -> ssl.SSLContext:
    """The client port's context; with ``client_ca``, a client certificate it signed is
    required, or a node certificate signed by ``peer_ca`` (a node is a member of the cluster,
    trusted more than any client; one added at runtime asks for the member list here, with
    its own certificate). Session tickets stay on (TLS 1.3 sends them once it has accepted the client):
    the client reads a connection closed before any ticket as a refused handshake
    (``client/_connection.py``), so ``num_tickets`` must not be 0."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH)
    _load_chain(ctx, cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_ca(ctx, client_ca, "client CA")
        if peer_ca:
            _load_ca(ctx, peer_ca, "peer CA")
    return ctx


def node_contexts(t, node_id: int):
    """``((peer accepting, peer dialling), client port)`` contexts of node ``node_id`` from
    ``t``, a ``config.TLSConfig``; TLSFileError naming a file that cannot be used."""
    cert, key = t.cert_for(node_id), t.key_for(node_id)
    return ((peer_server_context(cert, key, t.peer_ca),
             peer_client_context(cert, key, t.peer_ca)),
            client_server_context(cert, key, t.client_ca, t.peer_ca))


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


#: OpenSSL reasons of a handshake that failed on what the other side sent, in words.
_REASONS = {
    "HTTP_REQUEST": "an HTTP request, not a TLS handshake",
    "HTTPS_PROXY_REQUEST": "an HTTP proxy request, not a TLS handshake",
    "WRONG_VERSION_NUMBER": "not a TLS handshake (plaintext or garbage)",
    "UNKNOWN_PROTOCOL": "not a TLS handshake (plaintext or garbage)",
    "RECORD_LAYER_FAILURE": "not a TLS handshake (plaintext or garbage)",
    "PACKET_LENGTH_TOO_LONG": "not a TLS handshake (plaintext or garbage)",
    "UNEXPECTED_MESSAGE": "not a TLS handshake (plaintext or garbage)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no certificate presented (this port requires one)",
    "UNSUPPORTED_PROTOCOL": "a TLS version below 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "a TLS version below 1.2",
    "NO_SHARED_CIPHER": "no cipher in common",
}


def handshake_refusal(exc: BaseException, timeout: float) -> str:
    """Why a handshake that raised ``exc`` failed, for the log: what the other side sent
    (plaintext, HTTP, no certificate, a certificate not trusted and why), a timeout after
    ``timeout`` seconds, or the other side closing (it may not trust our certificate)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = (exc.verify_message or exc.reason or "verification failed").rstrip(".")
        if any(w in why for w in ("issuer", "self-signed", "self signed", "signature")):
            why = f"not signed by the trusted CA ({why})"
        return f"its certificate was refused: {why}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _REASONS:
            return _REASONS[reason]
        if "ALERT" in reason:
            alert = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
            return f"the other side refused this node's certificate (TLS alert: {alert})"
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return "the other side closed the connection during the handshake"
        return f"TLS error ({reason or exc})"
    if isinstance(exc, TimeoutError) or \
            (isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc)):
        return f"no TLS handshake within {timeout:g} s"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return ("the other side closed the connection during the handshake (it may not "
                "trust this node's certificate)")
    if isinstance(exc, OSError):
        return f"handshake failed: {exc.strerror or exc}"
    return f"handshake failed: {type(exc).__name__}"


def tls_on_plain_port(frame_size: int) -> str:
    """For a plaintext port whose frame length prefix (u32, little-endian) read
    ``frame_size``: a sentence to add to its refusal when those bytes begin a TLS record
    (content type 22, major version 3), else ''."""
    if frame_size & 0xFFFF == 0x0316:
        return (" (this is a TLS handshake: the other side has a [tls] table and this node "
                "has none)")
    return ""
