"""Cluster CA and region mTLS certificates, including real handshakes over a socket pair."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from regiond.crypto import pki

HANDSHAKE_TIMEOUT_S = 5.0


@dataclass
class Pair:
    cert_pem: bytes
    key_pem: bytes


@dataclass
class Cluster:
    ca: Pair
    us: Pair
    eu: Pair
    other_ca: Pair
    rogue: Pair  # a region cert for "eu-west-1" issued by another CA


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    ca = Pair(*pki.make_cluster_ca("regionkms test cluster"))
    other_ca = Pair(*pki.make_cluster_ca("someone else's cluster"))
    return Cluster(
        ca=ca,
        us=Pair(*pki.issue_region_cert(ca.cert_pem, ca.key_pem, "us-east-1")),
        eu=Pair(*pki.issue_region_cert(ca.cert_pem, ca.key_pem, "eu-west-1")),
        other_ca=other_ca,
        rogue=Pair(*pki.issue_region_cert(other_ca.cert_pem, other_ca.key_pem, "eu-west-1")),
    )


@dataclass
class Outcome:
    server_peer: dict[str, object] | None = None
    server_peer_der: bytes | None = None
    server_error: BaseException | None = None
    client_peer_der: bytes | None = None
    client_error: BaseException | None = None
    client_reply: bytes = b""
    errors: list[BaseException] = field(default_factory=list)


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "localhost"
) -> Outcome:
    """Run one TLS session over a loopback socket pair: the server echoes one byte as b"k"."""
    outcome = Outcome()
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(HANDSHAKE_TIMEOUT_S)
    client_sock.settimeout(HANDSHAKE_TIMEOUT_S)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                outcome.server_peer = tls.getpeercert()  # type: ignore[assignment]
                outcome.server_peer_der = tls.getpeercert(binary_form=True)
                if tls.recv(1) == b"x":
                    tls.sendall(b"k")
        except (ssl.SSLError, OSError) as exc:
            outcome.server_error = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            outcome.client_peer_der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
            outcome.client_reply = tls.recv(1)
    except (ssl.SSLError, OSError) as exc:
        outcome.client_error = exc
    finally:
        thread.join(HANDSHAKE_TIMEOUT_S * 2)
        server_sock.close()
        client_sock.close()
    assert not thread.is_alive()
    return outcome


def server_ctx_for(cluster: Cluster, pair: Pair, ca: Pair | None = None) -> ssl.SSLContext:
    return pki.ssl_server_context(pair.cert_pem, pair.key_pem, (ca or cluster.ca).cert_pem)


def client_ctx_for(cluster: Cluster, pair: Pair, ca: Pair | None = None, **kw: bool) -> ssl.SSLContext:
    return pki.ssl_client_context(pair.cert_pem, pair.key_pem, (ca or cluster.ca).cert_pem, **kw)


def test_mutual_auth_succeeds_with_ca_issued_certs(cluster: Cluster) -> None:
    outcome = handshake(server_ctx_for(cluster, cluster.us), client_ctx_for(cluster, cluster.eu))
    assert outcome.server_error is None and outcome.client_error is None
    assert outcome.client_reply == b"k"
    assert outcome.server_peer is not None and outcome.server_peer_der is not None
    assert pki.peer_region_from_cert(outcome.server_peer) == "eu-west-1"
    assert pki.peer_region_from_cert(outcome.server_peer_der) == "eu-west-1"
    assert outcome.client_peer_der is not None
    assert pki.peer_region_from_cert(outcome.client_peer_der) == "us-east-1"


def test_handshake_by_ip_address_san(cluster: Cluster) -> None:
    outcome = handshake(
        server_ctx_for(cluster, cluster.us), client_ctx_for(cluster, cluster.eu), server_hostname="127.0.0.1"
    )
    assert outcome.client_reply == b"k"


def test_client_cert_from_another_ca_is_refused(cluster: Cluster) -> None:
    outcome = handshake(server_ctx_for(cluster, cluster.us), client_ctx_for(cluster, cluster.rogue))
    assert isinstance(outcome.server_error, ssl.SSLError)
    assert outcome.server_peer is None
    assert outcome.client_reply != b"k"


def test_client_without_cert_is_refused(cluster: Cluster) -> None:
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(cadata=cluster.ca.cert_pem.decode())
    outcome = handshake(server_ctx_for(cluster, cluster.us), bare)
    assert isinstance(outcome.server_error, ssl.SSLError)
    assert outcome.client_reply != b"k"


def test_server_cert_from_another_ca_is_refused(cluster: Cluster) -> None:
    outcome = handshake(
        server_ctx_for(cluster, cluster.rogue, ca=cluster.ca), client_ctx_for(cluster, cluster.us)
    )
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert outcome.client_reply == b""


def test_hostname_outside_san_is_refused_unless_checking_is_off(cluster: Cluster) -> None:
    refused = handshake(
        server_ctx_for(cluster, cluster.us),
        client_ctx_for(cluster, cluster.eu),
        server_hostname="elsewhere.test",
    )
    assert isinstance(refused.client_error, ssl.SSLCertVerificationError)
    allowed = handshake(
        server_ctx_for(cluster, cluster.us),
        client_ctx_for(cluster, cluster.eu, check_hostname=False),
        server_hostname="elsewhere.test",
    )
    assert allowed.client_reply == b"k"


def test_contexts_require_certs_and_tls12(cluster: Cluster) -> None:
    for ctx in (
        server_ctx_for(cluster, cluster.us),
        client_ctx_for(cluster, cluster.us),
        client_ctx_for(cluster, cluster.us, check_hostname=False),
    ):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_region_cert_contents(cluster: Cluster) -> None:
    cert = x509.load_pem_x509_certificate(cluster.eu.cert_pem)
    ca = x509.load_pem_x509_certificate(cluster.ca.cert_pem)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "eu-west-1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_ca_cert_contents(cluster: Cluster) -> None:
    ca = x509.load_pem_x509_certificate(cluster.ca.cert_pem)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature


def test_custom_hostnames_go_into_san(cluster: Cluster) -> None:
    cert_pem, _ = pki.issue_region_cert(
        cluster.ca.cert_pem, cluster.ca.key_pem, "ap-southeast-2", ["10.0.0.5", "::1", "kms.ap.test"]
    )
    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["kms.ap.test"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]


def test_issuing_with_mismatched_ca_key_is_refused(cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="does not match"):
        pki.issue_region_cert(cluster.ca.cert_pem, cluster.other_ca.key_pem, "us-east-1")


@pytest.mark.parametrize("region", ["", "x" * 65])
def test_invalid_region_names_are_refused(cluster: Cluster, region: str) -> None:
    with pytest.raises(ValueError):
        pki.issue_region_cert(cluster.ca.cert_pem, cluster.ca.key_pem, region)


def test_empty_hostname_list_is_refused(cluster: Cluster) -> None:
    with pytest.raises(ValueError):
        pki.issue_region_cert(cluster.ca.cert_pem, cluster.ca.key_pem, "us-east-1", [])


def test_key_pem_is_unencrypted_pkcs8(cluster: Cluster) -> None:
    assert cluster.eu.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize(
    "peer",
    [
        {},
        {"subject": ()},
        {"subject": ((("organizationName", "x"),),)},
        {"subject": ((("commonName", "a"),), (("commonName", "b"),))},
        {"subject": ((("commonName", ""),),)},
        b"not a certificate",
    ],
)
def test_peer_region_needs_exactly_one_cn(peer: dict[str, object] | bytes) -> None:
    with pytest.raises(pki.PeerIdentityError):
        pki.peer_region_from_cert(peer)
