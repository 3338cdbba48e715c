"""The certificates of a ``--tls`` verification run, and the TLS contexts made of them.

Place in the architecture: part of the verification framework (``fastraft.verify``), used by
``nemesis.run`` when ``RunOptions.tls`` is on. It makes the run's own development PKI with
``fastraft.certs`` (the ``cryptography`` package, ``pip install 'fastraft[tls]'``) in
``<out>/pki`` and turns it, with ``fastraft.tls``, into what each side of the run needs:

- the ``[tls]`` table of the nodes' config (``tls_config``): both ports TLS, peers
  authenticated by the peer CA, clients required to present a certificate of the client CA;
- the fault proxies' ``ProxyTLS`` (``proxy_tls``): they terminate TLS (``proxy.py``),
  accepting with the destination node's certificate and dialling the node with it;
- one client context (``client_tls``) for every client of the run: the workloads, the
  leader look-ups, the member fault's changes and probes, the end reads (the node verified
  against the peer CA, the client certificate presented).

A node added at runtime (the member fault) gets its certificate when it is added
(``ensure_node``), before it starts. Never imports the server.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from .. import tls
from ..certs import init_certs, issue
from ..config import TLSConfig
from ..errors import ConfigError
from .proxy import ProxyTLS

__all__ = ["RunPKI", "PKI_DIR", "HOSTS", "require_cryptography", "MISSING_CRYPTOGRAPHY"]

PKI_DIR = "pki"                          # under the run's output directory
HOSTS = ("127.0.0.1", "localhost")       # every address of the run is on 127.0.0.1
MISSING_CRYPTOGRAPHY = ("--tls needs the cryptography package to make the run's "
                        "certificates: pip install 'fastraft[tls]'")


def require_cryptography() -> None:
    """ValueError (``MISSING_CRYPTOGRAPHY``) when the ``cryptography`` package is missing."""
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        raise ValueError(MISSING_CRYPTOGRAPHY) from None


class RunPKI:
    """The run's PKI in ``<out>/pki`` (``fastraft certs init`` for ``nodes`` nodes, names
    ``HOSTS``; a PKI already there, from an earlier run in the same ``--out``, is reused) and
    its contexts (module docstring). RuntimeError when it cannot be made."""

    def __init__(self, out, nodes: int) -> None:
        require_cryptography()
        self.out = Path(out)
        self.dir = self.out / PKI_DIR
        self._client: ssl.SSLContext | None = None
        try:
            if os.path.exists(self.path("peer-ca.pem")):     # a re-run in the same --out
                for i in range(1, nodes + 1):
                    self.ensure_node(i)
                if not os.path.exists(self.path("client.pem")):
                    issue(str(self.dir), "client", client=True)
            else:
                init_certs(str(self.dir), nodes=nodes, hosts=HOSTS)
        except ConfigError as exc:
            raise RuntimeError(f"--tls: cannot make the run's certificates: {exc}") from None

    def path(self, name: str) -> str:
        """The file ``name`` of the PKI directory."""
        return str(self.dir / name)

    def ensure_node(self, i: int) -> None:
        """Node ``i`` has a certificate and key (issued by the peer CA now if not)."""
        if not (os.path.exists(self.path(f"node{i}.pem"))
                and os.path.exists(self.path(f"node{i}.key"))):
            try:
                issue(str(self.dir), f"node{i}", hosts=HOSTS)
            except ConfigError as exc:
                raise RuntimeError(f"--tls: cannot issue node {i}'s certificate: {exc}") \
                    from None

    def tls_config(self) -> TLSConfig:
        """The nodes' ``[tls]`` table: paths relative to the config file (``<out>``), a
        client certificate required."""
        return TLSConfig(peer_ca=f"{PKI_DIR}/peer-ca.pem", cert=f"{PKI_DIR}/node{{id}}.pem",
                         key=f"{PKI_DIR}/node{{id}}.key",
                         client_ca=f"{PKI_DIR}/client-ca.pem")

    def proxy_tls(self, i: int) -> ProxyTLS:
        """The TLS termination of node ``i``'s proxy: its diallers handshake with node
        ``i``'s certificate (peer certificates required), and it reaches node ``i``
        presenting that same certificate."""
        self.ensure_node(i)
        cert, key, ca = self.path(f"node{i}.pem"), self.path(f"node{i}.key"), \
            self.path("peer-ca.pem")
        return ProxyTLS(accept=tls.peer_server_context(cert, key, ca),
                        dial=tls.peer_client_context(cert, key, ca))

    def client_tls(self) -> ssl.SSLContext:
        """The clients' context (one, shared): nodes verified against the peer CA, the
        client certificate presented."""
        if self._client is None:
            self._client = tls.client_context(cacert=self.path("peer-ca.pem"),
                                              cert=self.path("client.pem"),
                                              key=self.path("client.key"))
        return self._client
