"""TLS for group connections: GR's ``ssl_mode`` mapped to :mod:`ssl` contexts.

=================  ============================================================================
ssl_mode           behaviour
=================  ============================================================================
DISABLED           plain TCP
REQUIRED           encrypted; certificates are exchanged but not verified
VERIFY_CA          mutual TLS: each side verifies the other's certificate against ``ssl_ca``
VERIFY_IDENTITY    VERIFY_CA, plus the dialer checks the listener's certificate names the host
                   it dialed, and the listener checks the dialer's certificate names the host
                   of the address the dialer claims in its HELLO (so a member cannot pose as
                   another with a certificate from the same CA)
=================  ============================================================================

All members of a group must use TLS or none: a plain HELLO sent to a TLS listener fails its
TLS handshake and is counted as a failed handshake. Contexts are built once at start-up.
"""

from __future__ import annotations

import enum
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any


class SslMode(enum.Enum):
    DISABLED = "DISABLED"
    REQUIRED = "REQUIRED"
    VERIFY_CA = "VERIFY_CA"
    VERIFY_IDENTITY = "VERIFY_IDENTITY"

    @classmethod
    def parse(cls, text: str) -> SslMode:
        try:
            return cls(text.strip().upper())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"ssl_mode {text!r} is not one of {names}") from None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Where the certificates are. ``ssl_cert``/``ssl_key`` are this member's (used both as a
    server certificate and as a client certificate); ``ssl_ca`` verifies the peers'."""

    ssl_mode: SslMode = SslMode.DISABLED
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None

    def __post_init__(self) -> None:
        if self.ssl_mode is SslMode.DISABLED:
            return
        if not self.ssl_cert or not self.ssl_key:
            raise ValueError(f"ssl_mode {self.ssl_mode.value} needs ssl_cert and ssl_key")
        if self.ssl_mode in (SslMode.VERIFY_CA, SslMode.VERIFY_IDENTITY) and not self.ssl_ca:
            raise ValueError(f"ssl_mode {self.ssl_mode.value} needs ssl_ca")

    @property
    def enabled(self) -> bool:
        return self.ssl_mode is not SslMode.DISABLED

    @property
    def verifies_identity(self) -> bool:
        return self.ssl_mode is SslMode.VERIFY_IDENTITY


@dataclass(frozen=True, slots=True)
class TlsContexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    config: TlsConfig


def build_contexts(config: TlsConfig) -> TlsContexts | None:
    """Build the listener and dialer contexts; None when ssl_mode is DISABLED.

    Raises OSError / ssl.SSLError when a certificate or key cannot be loaded, so a bad path
    fails at start-up, not at the first connection.
    """
    if not config.enabled:
        return None
    assert config.ssl_cert is not None and config.ssl_key is not None
    verify = config.ssl_mode in (SslMode.VERIFY_CA, SslMode.VERIFY_IDENTITY)

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(config.ssl_cert, config.ssl_key)

    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.load_cert_chain(config.ssl_cert, config.ssl_key)

    if verify:
        server.load_verify_locations(cafile=config.ssl_ca)
        server.verify_mode = ssl.CERT_REQUIRED
        client.load_verify_locations(cafile=config.ssl_ca)
        client.verify_mode = ssl.CERT_REQUIRED
        client.check_hostname = config.verifies_identity
    else:
        server.verify_mode = ssl.CERT_NONE
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    return TlsContexts(server, client, config)


def certificate_names_host(cert: dict[str, Any] | None, host: str) -> bool:
    """True when a verified peer certificate (``SSLObject.getpeercert()``) names ``host`` in
    its subjectAltName: an IP entry equal to an IP host, or a DNS entry matching a host name
    (a ``*.`` wildcard covers exactly one leftmost label)."""
    if not cert:
        return False
    sans = cert.get("subjectAltName", ())
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for kind, value in sans:
        if ip is not None:
            if kind == "IP Address":
                try:
                    if ipaddress.ip_address(value.strip()) == ip:
                        return True
                except ValueError:
                    continue
        elif kind == "DNS" and _dns_matches(value.lower(), host.lower().rstrip(".")):
            return True
    return False


def _dns_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    ssl_ca: str
    ssl_cert: str
    ssl_key: str


def generate_certificates(
    directory: str,
    names: list[str],
    hosts: list[str],
    *,
    hosts_by_name: dict[str, list[str]] | None = None,
    ca_name: str = "grproxy group CA",
) -> dict[str, CertificateFiles]:
    """Write a fresh CA and one certificate per member name into ``directory``.

    Each member certificate names every entry of ``hosts`` (or of ``hosts_by_name[name]`` when
    given): IP addresses become IP SANs, the rest DNS SANs. For sandboxes and tests; production
    certificates come from the operator's own CA. Returns ``name -> CertificateFiles``.
    """
    import datetime
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    ca_path = os.path.join(directory, "ca.pem")
    with open(ca_path, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))

    def san_list(entries: list[str]) -> list[x509.GeneralName]:
        sans: list[x509.GeneralName] = []
        for host in entries:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return sans

    out: dict[str, CertificateFiles] = {}
    for name in names:
        sans = san_list((hosts_by_name or {}).get(name, hosts))
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path = os.path.join(directory, f"{name}.pem")
        key_path = os.path.join(directory, f"{name}.key")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(pem_key(key))
        os.chmod(key_path, 0o600)
        out[name] = CertificateFiles(ca_path, cert_path, key_path)
    return out
