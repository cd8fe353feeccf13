"""The cluster topology: which regions exist, how to reach them, and how to recognise them.

Every node of every region reads the same kind of peers file, written by ``regiond dev`` or by
an operator (``regiond replication peers-file``). It holds only public material, so it can be
distributed freely; each region's secrets (its Ed25519 identity, its HPKE private key, its TLS
key) stay in its own state directory, wrapped by its root key.

Peers file, format version 1 (JSON):

    {
      "version": 1,
      "iam_home_region": "us-east-1",          # where IAM is written; replicated everywhere else
      "ca_cert": "-----BEGIN CERTIFICATE-----...",   # the cluster CA (PEM), trusted for mTLS
      "regions": {
        "us-east-1": {
          "endpoint": "https://127.0.0.1:7443",         # the region's replication receiver
          "identity_public_key": "<base64, 32 bytes>",  # Ed25519: verifies the region's frames
          "encryption_public_key": "<base64>"           # HPKE (ML-KEM-768+X25519): seals material to it
        }, ...
      }
    }

A region's own TLS credentials (a PEM certificate and its key, wrapped by the root key) live in
its state directory, written and read by ``regiond.statedir`` only; this module decides when a
certificate is (re)issued.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regiond import private_files, statedir
from regiond.crypto import pki, sign
from regiond.crypto.hpke import RegionEncryptionPublicKey
from regiond.crypto.keyring import RootKeyring
from replication.errors import ReplicationError

__all__ = [
    "CERT_RENEW_BEFORE",
    "PEERS_FILE_VERSION",
    "Peer",
    "PeersFileError",
    "Topology",
    "ensure_cluster_ca",
    "ensure_region_cert",
    "load_region_tls",
    "load_topology",
    "parse_topology",
    "server_name",
    "topology_document",
]

PEERS_FILE_VERSION = 1
SERVER_NAME_SUFFIX = "replication.regionkms.internal"
CERT_RENEW_BEFORE = dt.timedelta(days=7)
"""A region certificate this close to expiry is reissued at start."""


def server_name(region: str) -> str:
    """The TLS server name a region's certificate carries (as a DNS SAN) and senders ask for.

    Peers are reached by address, and every region's certificate may list the same loopback
    addresses, so the sender checks the *region* instead: it asks for this name (SNI and
    hostname verification), and the TLS handshake fails -- before a byte of the batch is sent --
    unless the server holds a cluster-CA certificate issued for that region.
    """
    return f"{region}.{SERVER_NAME_SUFFIX}"


class PeersFileError(ReplicationError, ValueError):
    """The peers file is missing, malformed, or does not describe this region."""


@dataclass(frozen=True)
class Peer:
    region: str
    endpoint: str
    identity_public_key: bytes
    encryption_public_key: RegionEncryptionPublicKey


@dataclass(frozen=True)
class Topology:
    """The cluster as one region sees it."""

    local_region: str
    iam_home_region: str
    ca_cert_pem: bytes
    regions: Mapping[str, Peer]

    @property
    def peers(self) -> list[Peer]:
        """Every other region, in name order."""
        return [p for name, p in sorted(self.regions.items()) if name != self.local_region]

    @property
    def peer_names(self) -> list[str]:
        return [p.region for p in self.peers]

    def identity_keys(self) -> dict[str, bytes]:
        """Ed25519 public keys of the regions whose frames this region accepts (not its own)."""
        return {p.region: p.identity_public_key for p in self.peers}

    def peer(self, region: str) -> Peer:
        try:
            found = self.regions[region]
        except KeyError:
            raise PeersFileError(f"region {region!r} is not in the peers file") from None
        if region == self.local_region:
            raise PeersFileError(f"{region} is this region, not a peer")
        return found


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise PeersFileError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PeersFileError(f"{what} is not valid base64") from None


def parse_topology(document: Mapping[str, Any], local_region: str) -> Topology:
    """Validate a peers document (format in the module docstring) for ``local_region``."""
    if document.get("version") != PEERS_FILE_VERSION:
        raise PeersFileError(f"unsupported peers file version {document.get('version')!r}")
    raw_regions = document.get("regions")
    if not isinstance(raw_regions, dict) or not raw_regions:
        raise PeersFileError("peers file must list regions")
    regions: dict[str, Peer] = {}
    for name, info in raw_regions.items():
        if not isinstance(info, dict):
            raise PeersFileError(f"region {name!r}: expected an object")
        endpoint = info.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
            raise PeersFileError(f"region {name!r}: endpoint must be an https:// URL")
        identity = _b64(info.get("identity_public_key"), f"region {name!r} identity_public_key")
        if len(identity) != sign.PUBLIC_KEY_BYTES:
            raise PeersFileError(f"region {name!r}: identity_public_key must be {sign.PUBLIC_KEY_BYTES} bytes")
        try:
            encryption = RegionEncryptionPublicKey.from_bytes(
                _b64(info.get("encryption_public_key"), f"region {name!r} encryption_public_key")
            )
        except ValueError as exc:
            raise PeersFileError(f"region {name!r}: {exc}") from None
        regions[name] = Peer(name, endpoint.rstrip("/"), identity, encryption)
    if local_region not in regions:
        raise PeersFileError(f"this region ({local_region}) is not in the peers file")
    home = document.get("iam_home_region")
    if not isinstance(home, str) or home not in regions:
        raise PeersFileError("iam_home_region must name a region of the peers file")
    ca = document.get("ca_cert")
    if not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca:
        raise PeersFileError("ca_cert must be the cluster CA certificate in PEM")
    return Topology(local_region, home, ca.encode("ascii"), regions)


def load_topology(path: Path, local_region: str) -> Topology:
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise PeersFileError(f"cannot read peers file {path.name}: {exc.strerror}") from None
    except ValueError:
        raise PeersFileError(f"peers file {path.name} is not valid JSON") from None
    if not isinstance(document, dict):
        raise PeersFileError("peers file must be a JSON object")
    return parse_topology(document, local_region)


def topology_document(
    *, iam_home_region: str, ca_cert_pem: bytes, regions: Mapping[str, tuple[str, bytes, bytes]]
) -> dict[str, Any]:
    """Build a peers document: ``regions`` maps name -> (endpoint, identity pub, encryption pub)."""
    return {
        "version": PEERS_FILE_VERSION,
        "iam_home_region": iam_home_region,
        "ca_cert": ca_cert_pem.decode("ascii"),
        "regions": {
            name: {
                "endpoint": endpoint,
                "identity_public_key": base64.b64encode(identity).decode("ascii"),
                "encryption_public_key": base64.b64encode(encryption).decode("ascii"),
            }
            for name, (endpoint, identity, encryption) in sorted(regions.items())
        },
    }


def load_region_tls(state_dir: Path, keyring: RootKeyring) -> tuple[bytes, bytes]:
    """``(cert_pem, key_pem)`` of the region (``regiond.statedir``); ``PeersFileError`` if never issued."""
    credentials = statedir.load_region_tls(state_dir, keyring)
    if credentials is None:
        raise PeersFileError(
            "no replication TLS certificate in the state directory: issue one with"
            " `regiond replication issue-cert` (or run `regiond dev`)"
        )
    return credentials


def ensure_cluster_ca(ca_dir: Path, name: str = "regionkms cluster CA") -> tuple[bytes, bytes]:
    """The cluster CA in ``ca_dir`` (``ca.crt``, ``ca.key`` mode 0600), made on first use.

    The CA key signs region certificates only; keep it offline outside development.
    """
    private_files.make_dir(ca_dir)
    cert_path, key_path = ca_dir / "ca.crt", ca_dir / "ca.key"
    if cert_path.exists() and key_path.exists():
        private_files.narrow(cert_path)
        private_files.narrow(key_path)
        return cert_path.read_bytes(), key_path.read_bytes()
    cert, key = pki.make_cluster_ca(name)
    private_files.write_file(key_path, key)
    private_files.write_file(cert_path, cert)
    return cert, key


def ensure_region_cert(
    state_dir: Path, keyring: RootKeyring, ca_cert_pem: bytes, ca_key_pem: bytes, region: str,
    hostnames: Sequence[str] = pki.DEFAULT_HOSTNAMES,
) -> bytes:  # fmt: skip
    """Issue the region's mTLS certificate unless it has a current one from this CA; returns it.

    Besides ``hostnames`` the certificate names ``server_name(region)``, which is what senders
    verify (see ``replication.channel``).
    """
    current = statedir.region_tls_cert(state_dir)
    if current is not None and pki.issued_by(current, ca_cert_pem, valid_for=CERT_RENEW_BEFORE):
        return current
    names = (*hostnames, server_name(region))
    cert, key = pki.issue_region_cert(ca_cert_pem, ca_key_pem, region, names)
    statedir.write_region_tls(state_dir, keyring, cert, key)
    return cert
