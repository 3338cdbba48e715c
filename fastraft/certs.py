"""``fastraft certs init`` / ``renew``: a development PKI for a TLS cluster (a quick start, not
production).

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

``renew`` issues new node (or client) certificates and keys from the CAs already in the
directory and replaces the old files atomically (each file written beside, fsynced, renamed
over): with a SIGHUP, each node then serves the new certificate without a restart.
``issue`` is the one-certificate step both use (tests also give it a validity of their own).
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from .errors import ConfigError

__all__ = ["init_certs", "renew_certs", "issue", "tls_table"]


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


def _write(path: str, data: bytes, private: bool, replace: bool = False) -> None:
    """Write a new file (never overwriting one), or with ``replace`` write it beside,
    fsync it and rename it over ``path`` (a reader sees the old file or the new one)."""
    mode = 0o600 if private else 0o644
    target, path = path, (path + ".new" if replace else path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if replace:
            f.flush()
            os.fsync(f.fileno())
    if replace:
        os.replace(path, target)


class _Issuer:
    """Makes keys and certificates (one ``cryptography`` import for all of them)."""

    def __init__(self, days: float, not_before=None) -> None:
        (self.x509, self.hashes, self.ser, self.ec, self.eku,
         self.name_oid) = _crypto()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.not_before = now - datetime.timedelta(hours=1) if not_before is None \
            else not_before
        self.not_after = self.not_before + datetime.timedelta(days=days, hours=1)

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
        # Key identifiers: a verifier holding several CAs (a CA file with the old and the
        # new CA while one is replaced) finds the issuer by key, not only by name.
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            (issuer_key or key).public_key()), critical=False)
        return b.sign(issuer_key or key, self.hashes.SHA256())

    def save(self, directory: str, stem: str, cert, key, replace: bool = False) -> None:
        """Write ``stem.pem`` and ``stem.key``; with ``replace`` the key first, each
        renamed over the old file (a reload between the two renames sees a key that does not
        match its certificate, refuses it and keeps serving the old pair)."""
        ser = self.ser
        _write(os.path.join(directory, stem + ".key"), key.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()), True, replace)
        _write(os.path.join(directory, stem + ".pem"), cert.public_bytes(ser.Encoding.PEM),
               False, replace)

    def load_ca(self, directory: str, stem: str):
        """The CA certificate and key ``stem.pem`` / ``stem.key`` of ``directory``."""
        cert_path, key_path = (os.path.join(directory, stem + ext) for ext in (".pem", ".key"))
        try:
            with open(cert_path, "rb") as f:
                cert = self.x509.load_pem_x509_certificate(f.read())
            with open(key_path, "rb") as f:
                key = self.ser.load_pem_private_key(f.read(), password=None)
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc.filename}: no such file (the CA written by fastraft "
                              "certs init is needed)") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{stem} in {directory}: not a usable CA certificate and "
                              f"unencrypted key ({exc})") from None
        return cert, key


def _check_days(days) -> None:
    if not 1 <= days <= 36500:
        raise ConfigError(f"--days: expected 1..36500, got {days}")


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
    _check_days(days)
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
    # A CA's name is unique per init (a verifier trusting two of them tells them apart).
    tag = os.urandom(4).hex()
    peer_ca = iss.cert(f"fastraft peer CA {tag}", peer_key, None, None, ca=True)
    client_ca = iss.cert(f"fastraft client CA {tag}", client_key, None, None, ca=True)
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


def issue(directory: str, stem: str, *, client: bool = False,
          hosts=("127.0.0.1", "localhost"), days: float = 365, not_before=None,
          ca: str | None = None, replace: bool = False) -> None:
    """Issue one certificate and key, ``stem.pem`` / ``stem.key`` in ``directory``, signed by
    the CA there: a node certificate (serverAuth + clientAuth, ``hosts`` as subject
    alternative names) signed by ``peer-ca``, or with ``client`` a client certificate
    (clientAuth) signed by ``client-ca``; ``ca`` names another CA stem of the directory.
    Valid ``days`` from ``not_before`` (a timezone-aware datetime; default an hour ago)."""
    iss = _Issuer(days, not_before)
    ca_cert, ca_key = iss.load_ca(directory, ca or ("client-ca" if client else "peer-ca"))
    eku = iss.eku
    k = iss.key()
    if client:
        c = iss.cert(f"fastraft {stem}", k, ca_cert.subject, ca_key, ca=False,
                     usages=(eku.CLIENT_AUTH,))
    else:
        c = iss.cert(f"fastraft {stem}", k, ca_cert.subject, ca_key, ca=False,
                     usages=(eku.SERVER_AUTH, eku.CLIENT_AUTH), hosts=hosts)
    iss.save(directory, stem, c, k, replace)


def renew_certs(directory: str, nodes, client: bool = False,
                hosts=("127.0.0.1", "localhost"), days: int = 365) -> list[str]:
    """Replace the certificates and keys of ``nodes`` (ids), and of the client certificate
    with ``client``, by new ones signed by the directory's CAs (module docstring); returns
    the file names written. ConfigError on bad input or a missing CA."""
    _check_days(days)
    hosts = [h.strip() for h in hosts if h.strip()]
    if not hosts:
        raise ConfigError("--hosts: expected at least one host name or IP address")
    stems = [f"node{int(i)}" for i in nodes] + (["client"] if client else [])
    if not stems:
        raise ConfigError("nothing to renew: give --nodes and/or --client")
    for stem in stems:
        issue(directory, stem, client=stem == "client", hosts=hosts, days=days, replace=True)
    return [s + ext for s in stems for ext in (".pem", ".key")]


def tls_table() -> str:
    """The ``[tls]`` table of a config file using what ``init_certs`` wrote (paths relative
    to the config file's directory: put the config file beside the certificates)."""
    return ('[tls]\npeer_ca = "peer-ca.pem"\nclient_ca = "client-ca.pem"\n'
            'cert = "node{id}.pem"\nkey = "node{id}.key"\n')
