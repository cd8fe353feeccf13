"""`regiond serve --tls-cert --tls-key` as a real process tree (supervisor, uvloop workers): SIGHUP makes every
worker serve the renewed certificate to new connections, while a connection opened before keeps working;
and the client endpoint is never plain HTTP unless said so."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import NodeFactory
from tests.support.regions import wait_until
from tests.support.served import serve_workers
from tests.support.sockets import HEALTHZ, RawConnection
from tests.support.tls import TestCa

NEW_CONNECTIONS = 12  # spread over both workers by SO_REUSEPORT


@pytest.mark.timeout(180)
async def test_sighup_renews_the_certificate_in_every_worker_without_dropping_connections(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    ca = TestCa(tmp_path / "ca")
    files = ca.issue("node")
    async with serve_workers(nodes, tmp_path, workers=2, tls=files, ca_bundle=ca.bundle) as node:
        assert node.tls is not None
        async with await RawConnection.open(node.endpoint, tls=node.tls) as kept:
            await kept.send(HEALTHZ)
            first = await kept.answer()
            assert first is not None and first.status == 200
            old_cert = kept.peer_certificate()
            ca.issue("node")  # renewed in place, as cert-manager or certbot would
            new_cert = _der(files.cert_pem())
            assert new_cert != old_cert
            node.proc.send_signal(signal.SIGHUP)

            async def every_new_connection_gets_the_new_one() -> bool:
                for _ in range(NEW_CONNECTIONS):
                    async with await RawConnection.open(node.endpoint, tls=node.tls) as fresh:
                        if fresh.peer_certificate() != new_cert:
                            return False
                return True

            await wait_until(every_new_connection_gets_the_new_one, what="every worker to serve the new certificate")
            await kept.send(HEALTHZ)
            again = await kept.answer()
            assert again is not None and again.status == 200
            assert kept.peer_certificate() == old_cert
        assert node.proc.poll() is None, "SIGHUP must not stop the node"
        assert await node.healthy()
        log = node.log.read_text()
        assert "tls.reloaded" in log and "worker_exited" not in log


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regiond", "serve", "--region", "us-east-1",
         "--database-url", "postgresql://x@127.0.0.1:1/x", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "--plain-http to serve plain HTTP on purpose"),
        (("--tls-cert", "c.pem"), "both a certificate file and a key file"),
        (("--plain-http", "--tls-cert", "c.pem", "--tls-key", "k.pem"), "choose one"),
    ],
)
def test_serve_refuses_an_endpoint_that_is_not_tls_or_explicitly_plain(args: tuple[str, ...], says: str) -> None:
    done = _serve(*args)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_names_a_certificate_file_it_cannot_use(tmp_path: Path) -> None:
    ca = TestCa(tmp_path / "ca")
    files = ca.issue("node")
    other = ca.issue("other")
    root_key = ["--state-dir", str(tmp_path / "state")]
    subprocess.run([sys.executable, "-m", "regiond", "init", *root_key], check=True, capture_output=True)
    missing = _serve(*root_key, "--tls-cert", str(tmp_path / "nowhere.pem"), "--tls-key", str(files.key_file))
    assert missing.returncode == 2 and "nowhere.pem" in missing.stderr
    mismatched = _serve(*root_key, "--tls-cert", str(files.cert_file), "--tls-key", str(other.key_file))
    assert mismatched.returncode == 2 and "cannot be used" in mismatched.stderr
    assert "PRIVATE KEY" not in mismatched.stderr and "Traceback" not in mismatched.stderr
