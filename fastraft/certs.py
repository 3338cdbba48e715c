"""``fastraft certs init``: a development PKI for a TLS cluster (a quick start, not production).

Place in the architecture: a tool beside the cli, used by nobody else at run time. It writes,
with the ``cryptography`` package (the optional extra ``fastraft[tls]``; imported only here):

    peer-ca.pem / peer-ca.key       the CA that signs node certificates
    client-ca.pem / client-ca.key   the CA that signs client certificates
    node{N}.pem / node{N}.key       node N's certificate (serverAuth + clientAuth: it is served
                                    on both ports and presented when dialling peers), with
                                    every ``--hosts`` name as a subject alternative name
    client.pem / client.key         one client certificate (clientAuth)

Keys are ECDSA P-256, certificates valid for ``days`` (default 365) from one hour ago; key
files are written 0600. The files are plain PEM, what Python's ``ssl`` module loads
(``fastraft.tls``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from .errors import ConfigError

__all__ = ["init_certs", "tls_table"]


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ConfigError("fastraft certs needs the cryptography package: pip install "
                          "'fastraft[tls]'") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _san(x509, hosts: list[str]):
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _write(path: str, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class _Issuer:
    """Makes keys and certificates (one ``cryptography`` import for all of them)."""

    def __init__(self, days: int) -> None:
        (self.x509, self.hashes, self.ser, self.ec, self.eku,
         self.name_oid) = _crypto()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.not_before = now - datetime.timedelta(hours=1)
        self.not_after = now + datetime.timedelta(days=days)

    def key(self):
        return self.ec.generate_private_key(self.ec.SECP256R1())

    def _name(self, cn: str):
        x509 = self.x509
        return x509.Name([x509.NameAttribute(self.name_oid.COMMON_NAME, cn)])

    def cert(self, cn: str, key, issuer_name, issuer_key, *, ca: bool, usages=(), hosts=()):
        x509 = self.x509
        b = (x509.CertificateBuilder().subject_name(self._name(cn))
             .issuer_name(issuer_name or self._name(cn))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(self.not_before).not_valid_after(self.not_after)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        if hosts:
            b = b.add_extension(_san(x509, list(hosts)), critical=False)
        return b.sign(issuer_key or key, self.hashes.SHA256())

    def save(self, directory: str, stem: str, cert, key) -> None:
        ser = self.ser
        _write(os.path.join(directory, stem + ".pem"), cert.public_bytes(ser.Encoding.PEM),
               False)
        _write(os.path.join(directory, stem + ".key"), key.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()), True)


def init_certs(directory: str, nodes: int = 3, hosts=("127.0.0.1", "localhost"),
               days: int = 365) -> list[str]:
    """Write the development PKI (module docstring) into ``directory`` (made if missing; its
    files must not exist yet); returns the file names written. ConfigError on bad input or
    when a file exists."""
    if not 1 <= nodes <= 99:
        raise ConfigError(f"--nodes: expected 1..99, got {nodes}")
    hosts = [h.strip() for h in hosts if h.strip()]
    if not hosts:
        raise ConfigError("--hosts: expected at least one host name or IP address")
    if not 1 <= days <= 36500:
        raise ConfigError(f"--days: expected 1..36500, got {days}")
    os.makedirs(directory, exist_ok=True)
    stems = ["peer-ca", "client-ca", "client"] + [f"node{i}" for i in range(1, nodes + 1)]
    for stem in stems:
        for ext in (".pem", ".key"):
            path = os.path.join(directory, stem + ext)
            if os.path.exists(path):
                raise ConfigError(f"{path} exists: fastraft certs init never overwrites a "
                                  "file (use an empty directory)")
    iss = _Issuer(days)
    eku = iss.eku
    peer_key, client_key = iss.key(), iss.key()
    peer_ca = iss.cert("fastraft peer CA", peer_key, None, None, ca=True)
    client_ca = iss.cert("fastraft client CA", client_key, None, None, ca=True)
    iss.save(directory, "peer-ca", peer_ca, peer_key)
    iss.save(directory, "client-ca", client_ca, client_key)
    for i in range(1, nodes + 1):
        k = iss.key()
        c = iss.cert(f"fastraft node {i}", k, peer_ca.subject, peer_key, ca=False,
                     usages=(eku.SERVER_AUTH, eku.CLIENT_AUTH), hosts=hosts)
        iss.save(directory, f"node{i}", c, k)
    k = iss.key()
    c = iss.cert("fastraft client", k, client_ca.subject, client_key, ca=False,
                 usages=(eku.CLIENT_AUTH,))
    iss.save(directory, "client", c, k)
    return sorted(s + ext for s in stems for ext in (".pem", ".key"))


def tls_table() -> str:
    """The ``[tls]`` table of a config file using what ``init_certs`` wrote (paths relative
    to the config file's directory: put the config file beside the certificates)."""
    return ('[tls]\npeer_ca = "peer-ca.pem"\nclient_ca = "client-ca.pem"\n'
            'cert = "node{id}.pem"\nkey = "node{id}.key"\n')
