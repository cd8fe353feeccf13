"""A test CA and the server certificates it issues, as the PEM files a node is configured with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regiond.crypto import pki


@dataclass(frozen=True)
class ServerFiles:
    cert_file: Path
    key_file: Path

    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    def settings(self) -> dict[str, Any]:
        """``Settings`` fields that make a node serve TLS with these files."""
        return {"tls_cert_file": self.cert_file, "tls_key_file": self.key_file}


class TestCa:
    """A CA of its own in ``directory``; ``bundle`` is the file clients verify with (``AWS_CA_BUNDLE``)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "regionkms test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.cert_pem, self._key_pem = pki.make_cluster_ca(name)
        self.bundle = directory / "ca.pem"
        self.bundle.write_bytes(self.cert_pem)

    def issue(self, name: str, hostnames: tuple[str, ...] = pki.DEFAULT_HOSTNAMES) -> ServerFiles:
        """A server certificate for ``hostnames`` as ``<name>.crt`` and ``<name>.key`` (0600)."""
        cert, key = pki.issue_server_cert(self.cert_pem, self._key_pem, name, hostnames)
        files = ServerFiles(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        files.cert_file.write_bytes(cert)
        files.key_file.touch(mode=0o600)
        files.key_file.write_bytes(key)
        return files
