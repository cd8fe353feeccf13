"""A region's state directory: the one place that writes (``regiond init``) and reads it.

    DIR/root.key              the root key, mode 0600 (never in the database): 32 random bytes, or a
                              keyring of several versions once rotated (crypto/keyring.py)
    DIR/identity.ed25519      Ed25519 region identity (signs replication frames and audit digests),
                              wrapped under the root key
    DIR/identity.ed25519.pub  its public half, raw 32 bytes
    DIR/encryption.hpke       ML-KEM-768+X25519 private key that replicated key material is sealed to,
                              wrapped under the root key
    DIR/encryption.hpke.pub   its public half
    DIR/region                the region name this directory belongs to

    DIR/tls/region.crt        the replication mTLS certificate (PEM), issued by the cluster CA
                              (``regiond replication issue-cert``, ``regiond dev``: replication/peers.py)
    DIR/tls/region.key        its PEM private key, wrapped under the root key

Every file is mode 0600 and the directory 0700 (regiond.private_files). Running init again
creates only what is missing and narrows the modes of what exists, so it is safe in start-up
scripts. The wrapped files are sealed by the root keyring under the AADs of ``crypto/wrap.py``.
"""

from __future__ import annotations

from pathlib import Path

from regiond import private_files
from regiond.crypto.hpke import RegionEncryptionPrivateKey
from regiond.crypto.keyring import (
    AesRootKeyring,
    FileRootKeyring,
    RootKeyring,
    create_root_key_file,
    load_file_keyring,
    wrapped_root_version,
)
from regiond.crypto.sign import RegionIdentityKey
from regiond.crypto.wrap import REGION_ENCRYPTION_AAD, REGION_IDENTITY_AAD, REGION_TLS_KEY_AAD

__all__ = [
    "SEALED_FILES",
    "encryption_public_key",
    "has_identity",
    "identity_public_key",
    "init_state_dir",
    "load_encryption_key",
    "load_identity",
    "load_region_tls",
    "load_root_keyring",
    "region_tls_cert",
    "region_tls_cert_path",
    "rewrap_sealed_files",
    "root_key_path",
    "sealed_files_not_under",
    "write_region_tls",
]

TLS_DIR = "tls"

# Every file of the directory sealed under the root key, with its AAD (regiond rotate-root-key).
SEALED_FILES = (
    ("identity.ed25519", REGION_IDENTITY_AAD),
    ("encryption.hpke", REGION_ENCRYPTION_AAD),
    ("tls/region.key", REGION_TLS_KEY_AAD),
)


# What init writes besides root.key, whose loader refuses a wide mode rather than narrow it: a key
# that others could read may have been copied, and the operator has to know.
_NARROWED = ("region", "identity.ed25519", "identity.ed25519.pub", "encryption.hpke", "encryption.hpke.pub")


def init_state_dir(state_dir: Path, *, region: str) -> list[str]:
    private_files.make_dir(state_dir)
    created: list[str] = []
    region_file = state_dir / "region"
    if region_file.exists() and region_file.read_text().strip() != region:
        raise ValueError(f"{state_dir.name} belongs to region {region_file.read_text().strip()}, not {region}")
    if not region_file.exists():
        private_files.write_file(region_file, region.encode() + b"\n")
        created.append("region")
    root = state_dir / "root.key"
    if not root.exists():
        create_root_key_file(root)
        created.append("root.key")
    keyring = load_file_keyring(root)
    if not (state_dir / "identity.ed25519").exists():
        identity = RegionIdentityKey.generate()
        wrapped = keyring.wrap(identity.material(), REGION_IDENTITY_AAD)
        private_files.write_file(state_dir / "identity.ed25519", wrapped, exclusive=True)
        private_files.write_file(state_dir / "identity.ed25519.pub", identity.public_bytes())
        created.append("identity.ed25519")
    if not (state_dir / "encryption.hpke").exists():
        enc = RegionEncryptionPrivateKey.generate()
        wrapped = keyring.wrap(enc.material(), REGION_ENCRYPTION_AAD)
        private_files.write_file(state_dir / "encryption.hpke", wrapped, exclusive=True)
        private_files.write_file(state_dir / "encryption.hpke.pub", enc.public_key().to_bytes())
        created.append("encryption.hpke")
    for name in _NARROWED:  # written by a release that left them readable by others
        private_files.narrow(state_dir / name)
    return created


def root_key_path(state_dir: Path) -> Path:
    """The root key file (``regiond rotate-root-key`` rewrites it; read it with ``load_root_keyring``)."""
    return state_dir / "root.key"


def load_root_keyring(state_dir: Path) -> FileRootKeyring:
    """The root key of ``root.key`` (refused if others could read it: ``crypto.keyring``); it follows
    the file when ``regiond rotate-root-key`` replaces it."""
    return load_file_keyring(root_key_path(state_dir))


def has_identity(state_dir: Path) -> bool:
    """Whether ``regiond init`` made the region identity here (a node without one signs no digests)."""
    return (state_dir / "identity.ed25519").is_file()


def identity_public_key(state_dir: Path) -> bytes:
    """The raw 32 bytes of the identity's public half (verifies frames and audit digests)."""
    return (state_dir / "identity.ed25519.pub").read_bytes()


def encryption_public_key(state_dir: Path) -> bytes:
    """The HPKE public key other regions seal key material to."""
    return (state_dir / "encryption.hpke.pub").read_bytes()


def load_identity(state_dir: Path, keyring: RootKeyring) -> RegionIdentityKey:
    """The region's Ed25519 identity (signs replication frames and audit digests)."""
    wrapped = (state_dir / "identity.ed25519").read_bytes()
    return RegionIdentityKey.from_material(keyring.unwrap(wrapped, REGION_IDENTITY_AAD))


def load_encryption_key(state_dir: Path, keyring: RootKeyring) -> RegionEncryptionPrivateKey:
    """The region's HPKE private key (replicated key material is sealed to its public half)."""
    wrapped = (state_dir / "encryption.hpke").read_bytes()
    return RegionEncryptionPrivateKey.from_material(keyring.unwrap(wrapped, REGION_ENCRYPTION_AAD))


def write_region_tls(state_dir: Path, keyring: RootKeyring, cert_pem: bytes, key_pem: bytes) -> None:
    """Store the region's mTLS certificate and its private key (wrapped by the root key)."""
    tls = private_files.make_dir(state_dir / TLS_DIR)
    private_files.write_file(tls / "region.crt", cert_pem)
    private_files.write_file(tls / "region.key", keyring.wrap(key_pem, REGION_TLS_KEY_AAD))


def region_tls_cert_path(state_dir: Path) -> Path:
    """Where the region's mTLS certificate is (for an operator to look at; read it with ``region_tls_cert``)."""
    return state_dir / TLS_DIR / "region.crt"


def region_tls_cert(state_dir: Path) -> bytes | None:
    """The region's mTLS certificate (PEM), or None unless both it and its key were written."""
    tls = state_dir / TLS_DIR
    if not ((tls / "region.crt").exists() and (tls / "region.key").exists()):
        return None
    return (tls / "region.crt").read_bytes()


def load_region_tls(state_dir: Path, keyring: RootKeyring) -> tuple[bytes, bytes] | None:
    """``(cert_pem, key_pem)`` of the region, or None if they were never issued.

    None rather than an error of this module: what a missing certificate means (and which command
    issues one) is the replication runtime's to say (``replication.peers.load_region_tls``).
    """
    tls = state_dir / TLS_DIR
    try:
        cert = (tls / "region.crt").read_bytes()
        wrapped = (tls / "region.key").read_bytes()
    except OSError:
        return None
    return cert, keyring.unwrap(wrapped, REGION_TLS_KEY_AAD)


def sealed_files_not_under(state_dir: Path, version: int) -> list[str]:
    """The sealed files of ``state_dir`` not sealed under root key ``version``."""
    out = []
    for name, _ in SEALED_FILES:
        path = state_dir / name
        if path.exists() and wrapped_root_version(path.read_bytes()) != version:
            out.append(name)
    return out


def rewrap_sealed_files(state_dir: Path, keyring: AesRootKeyring) -> list[str]:
    """Seal every sealed file again under ``keyring``'s active version (atomically, each file
    replaced whole); the names of those rewritten. A running node read them at start and holds
    them in memory, so it is not disturbed."""
    done = []
    for name in sealed_files_not_under(state_dir, keyring.active_version):
        path = state_dir / name
        for aad in (a for n, a in SEALED_FILES if n == name):
            private_files.write_file(path, keyring.wrap(keyring.unwrap(path.read_bytes(), aad), aad), durable=True)
            done.append(name)
    return done
