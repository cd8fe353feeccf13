"""``regiond init``: a region's state directory.

    DIR/root.key              32 random bytes, mode 0600: the root key (never in the database)
    DIR/identity.ed25519      Ed25519 region identity (signs replication frames and audit digests),
                              wrapped under the root key
    DIR/identity.ed25519.pub  its public half, raw 32 bytes
    DIR/encryption.hpke       ML-KEM-768+X25519 private key that replicated key material is sealed to,
                              wrapped under the root key
    DIR/encryption.hpke.pub   its public half
    DIR/region                the region name this directory belongs to

Running it again creates only what is missing, so it is safe in start-up scripts.
"""

from __future__ import annotations

import os
from pathlib import Path

from regiond.crypto.hpke import RegionEncryptionPrivateKey, RegionEncryptionPublicKey
from regiond.crypto.keyring import AesRootKeyring, create_root_key_file, load_file_keyring
from regiond.crypto.sign import RegionIdentityKey

IDENTITY_AAD = b"region-identity-ed25519"
ENCRYPTION_AAD = b"region-encryption-hpke"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def init_state_dir(state_dir: Path, *, region: str) -> list[str]:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created: list[str] = []
    region_file = state_dir / "region"
    if region_file.exists() and region_file.read_text().strip() != region:
        raise ValueError(f"{state_dir.name} belongs to region {region_file.read_text().strip()}, not {region}")
    if not region_file.exists():
        region_file.write_text(region + "\n")
        created.append("region")
    root = state_dir / "root.key"
    if not root.exists():
        create_root_key_file(root)
        created.append("root.key")
    keyring = load_file_keyring(root)
    if not (state_dir / "identity.ed25519").exists():
        identity = RegionIdentityKey.generate()
        _write_private(state_dir / "identity.ed25519", keyring.wrap(identity.material(), IDENTITY_AAD))
        (state_dir / "identity.ed25519.pub").write_bytes(identity.public_bytes())
        created.append("identity.ed25519")
    if not (state_dir / "encryption.hpke").exists():
        enc = RegionEncryptionPrivateKey.generate()
        _write_private(state_dir / "encryption.hpke", keyring.wrap(enc.material(), ENCRYPTION_AAD))
        (state_dir / "encryption.hpke.pub").write_bytes(enc.public_key().to_bytes())
        created.append("encryption.hpke")
    return created


def load_identity(state_dir: Path, keyring: AesRootKeyring) -> RegionIdentityKey:
    return RegionIdentityKey.from_material(keyring.unwrap((state_dir / "identity.ed25519").read_bytes(), IDENTITY_AAD))


def load_encryption_key(state_dir: Path, keyring: AesRootKeyring) -> RegionEncryptionPrivateKey:
    return RegionEncryptionPrivateKey.from_material(
        keyring.unwrap((state_dir / "encryption.hpke").read_bytes(), ENCRYPTION_AAD)
    )


def load_encryption_public(state_dir: Path) -> RegionEncryptionPublicKey:
    return RegionEncryptionPublicKey.from_bytes((state_dir / "encryption.hpke.pub").read_bytes())
