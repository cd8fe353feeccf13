"""The cluster CA and per-region mutual-TLS certificates for replication channels.

Every replication connection is mutually authenticated: the sender checks that it reached a
region certified by the cluster CA, and the receiver checks that the caller holds such a
certificate too and reads the caller's region from it. Region names are the certificate's
subject common name, so the TLS layer and the frame layer (which signs with the region's
Ed25519 identity, see ``sign.py``) can be checked against each other.

Choices, and why:

- ECDSA P-256 with SHA-256 for CA and leaves: supported by every TLS stack and by
  ``ssl`` under OpenSSL's strict X.509 checks, small and fast to verify.
- The CA is ``pathLenConstraint=0``: it signs region certificates directly, never another CA.
- Region certificates carry both ``serverAuth`` and ``clientAuth``: each region both serves
  its receiver and dials its peers' receivers with the same certificate.
- Validity starts five minutes in the past to tolerate clock skew between regions.
- Keys are returned as unencrypted PKCS#8 PEM: storing them wrapped by the region root key
  is the caller's job, as for every other secret.

``ssl.SSLContext.load_cert_chain`` reads only from files. So that the private key is never
written to disk in the clear, ``_load_cert_chain`` re-encrypts it under a one-time random
password, writes that to a private temporary directory, loads it and deletes the directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from regiond.crypto.errors import PeerIdentityError

__all__ = [
    "CA_VALID_DAYS",
    "DEFAULT_HOSTNAMES",
    "REGION_CERT_VALID_DAYS",
    "PeerIdentityError",
    "cert_hostnames",
    "issue_region_cert",
    "issue_server_cert",
    "issued_by",
    "make_cluster_ca",
    "peer_region_from_cert",
    "ssl_client_context",
    "ssl_server_context",
]

CA_VALID_DAYS = 3650
REGION_CERT_VALID_DAYS = 397
CLOCK_SKEW_S = 300
DEFAULT_HOSTNAMES: tuple[str, ...] = ("127.0.0.1", "localhost")
CN_MAX_CHARS = 64  # RFC 5280 ub-common-name


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_cn(value: str, what: str) -> None:
    if not value or len(value) > CN_MAX_CHARS or not value.isprintable():
        raise ValueError(f"{what} must be 1..{CN_MAX_CHARS} printable characters")


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_cluster_ca(name: str, *, valid_days: int = CA_VALID_DAYS) -> tuple[bytes, bytes]:
    """Create a self-signed cluster CA; returns ``(cert_pem, key_pem)``.

    The CA key signs region certificates only (keyCertSign, cRLSign), never TLS sessions.
    """
    _check_cn(name, "CA name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=CLOCK_SKEW_S))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _private_pem(key)


def _san_entries(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host:
                raise ValueError("hostnames must not contain an empty name") from None
            entries.append(x509.DNSName(host))
    if not entries:
        raise ValueError("a region certificate needs at least one hostname or IP address")
    return entries


def issue_region_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    region: str,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    *,
    valid_days: int = REGION_CERT_VALID_DAYS,
) -> tuple[bytes, bytes]:
    """Issue a region's mTLS certificate; returns ``(cert_pem, key_pem)``.

    CN is the region name (what ``peer_region_from_cert`` reads back); the SAN lists every
    ``hostnames`` entry, as an IP address if it parses as one and as a DNS name otherwise.
    """
    _check_cn(region, "region")
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _issue_leaf(ca_cert_pem, ca_key_pem, region, hostnames, usages, valid_days)


def issue_server_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    *,
    valid_days: int = REGION_CERT_VALID_DAYS,
) -> tuple[bytes, bytes]:
    """Issue a TLS server certificate (``serverAuth`` only) for a client endpoint; returns ``(cert_pem, key_pem)``.

    What ``regiond dev`` serves its regions' client endpoints with: clients verify it against the
    cluster CA (``AWS_CA_BUNDLE``). It cannot pass as a region in the replication channel, which
    also needs ``clientAuth`` and the region's server name.
    """
    _check_cn(common_name, "common name")
    return _issue_leaf(ca_cert_pem, ca_key_pem, common_name, hostnames, [ExtendedKeyUsageOID.SERVER_AUTH], valid_days)


def _issue_leaf(
    ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str, hostnames: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier], valid_days: int,
) -> tuple[bytes, bytes]:  # fmt: skip
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the cluster CA key must be an ECDSA key")
    if ca_key.public_key() != ca_cert.public_key():
        raise ValueError("the CA key does not match the CA certificate")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=CLOCK_SKEW_S))
        .not_valid_after(min(now + dt.timedelta(days=valid_days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hostnames)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _private_pem(key)


def _load_cert_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load an in-memory certificate and key without the key touching disk in the clear."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    password = secrets.token_bytes(32)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="regionkms-tls-") as tmp:
        path = os.path.join(tmp, "chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem.rstrip(b"\n") + b"\n" + encrypted)
        ctx.load_cert_chain(path, password=password)


def _base_context(protocol: int, cert_pem: bytes, key_pem: bytes, ca_cert_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    # RFC 5280 conformance checks on the peer's chain (Python 3.13 turns this on by default).
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=ca_cert_pem.decode("ascii"))
    _load_cert_chain(ctx, cert_pem, key_pem)
    return ctx


def ssl_server_context(cert_pem: bytes, key_pem: bytes, ca_cert_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.2+ server context that refuses any client without a cert from the cluster CA.

    OpenSSL checks the client certificate's purpose (``clientAuth``) on the server side.
    """
    return _base_context(ssl.PROTOCOL_TLS_SERVER, cert_pem, key_pem, ca_cert_pem)


def ssl_client_context(
    cert_pem: bytes, key_pem: bytes, ca_cert_pem: bytes, *, check_hostname: bool = True
) -> ssl.SSLContext:
    """A TLS 1.2+ client context presenting this region's cert and trusting only the cluster CA.

    ``check_hostname`` stays on unless the caller reaches peers by addresses not in their SAN
    and checks the peer's region with ``peer_region_from_cert`` instead.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, cert_pem, key_pem, ca_cert_pem)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED  # setting check_hostname=False must not relax this
    return ctx


def issued_by(cert_pem: bytes, ca_cert_pem: bytes, *, valid_for: dt.timedelta = dt.timedelta(0)) -> bool:
    """Whether ``cert_pem`` was signed by ``ca_cert_pem``'s key and stays valid ``valid_for`` longer.

    False for anything unreadable. Used to keep a region certificate across restarts only while
    it belongs to the current cluster CA and is not about to expire.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc > _now() + valid_for


def cert_hostnames(cert_pem: bytes) -> frozenset[str]:
    """The DNS names and IP addresses a certificate's SAN lists (empty for anything unreadable).

    So that a certificate kept across runs is issued again when the names it must carry changed.
    """
    try:
        san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return frozenset()
    names = san.value.get_values_for_type(x509.DNSName)
    return frozenset([*names, *(str(ip) for ip in san.value.get_values_for_type(x509.IPAddress))])


def peer_region_from_cert(cert: bytes | Mapping[str, Any]) -> str:
    """The region named by an authenticated peer certificate's subject CN.

    Accepts DER (``getpeercert(binary_form=True)``) or the dict ``getpeercert()`` returns.
    Only meaningful after the TLS layer has verified the certificate against the cluster
    CA. ``PeerIdentityError`` unless the subject has exactly one CN.
    """
    if isinstance(cert, bytes | bytearray | memoryview):
        try:
            parsed = x509.load_der_x509_certificate(bytes(cert))
        except ValueError:
            raise PeerIdentityError("peer certificate is not valid DER") from None
        names = [a.value for a in parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    else:
        names = [value for rdn in cert.get("subject", ()) for attr_name, value in rdn if attr_name == "commonName"]
    if len(names) != 1 or not isinstance(names[0], str) or not names[0]:
        raise PeerIdentityError("peer certificate must name exactly one region in its subject CN")
    return names[0]
