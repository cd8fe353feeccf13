"""The official AWS Encryption CLI (``aws-encryption-cli``) against a two-region cluster.

The CLI is the command teams already run in scripts and backup jobs; it must open kmsclient's
messages and kmsclient must open its, for every suite kmsclient writes, with a multi-region key
used in one region to encrypt and in the other to decrypt. The CLI needs aws-encryption-sdk 3.x
while the test environment carries 4.x, so ``make test`` installs it in a venv of its own
(``.venv/esdk-cli``, see the Makefile); ``REGIONKMS_ESDK_CLI`` names another copy.

Each region is one AWS CLI-style profile whose ``endpoint_url`` is that region's node, which is
how the CLI's MRK-aware strict provider reaches regionkms: it takes a ``profile=`` per wrapping key.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kmsclient
from kmsclient.message import COMMIT_KEY, COMMIT_KEY_ECDSA_P384, Suite, try_parse_header
from tests.cluster.test_multiregion import call, replicate_everywhere
from tests.support.cluster import ACCOUNT_ID, Identity, NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster

pytestmark = pytest.mark.cluster

US, EU = REGIONS[:2]
CONTEXT = {"app": "orders", "tenant": "blue"}
REPO = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("REGIONKMS_ESDK_CLI", REPO / ".venv" / "esdk-cli" / "bin" / "aws-encryption-cli"))

if not CLI.is_file():
    pytest.skip(f"aws-encryption-cli not installed at {CLI}: `make test` installs it", allow_module_level=True)


@dataclass
class CliWorld:
    cluster: Cluster
    admin: Identity
    home: Path
    mrk: str  # the key ARN in us-east-1

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin", "HOME": str(self.home), "AWS_CONFIG_FILE": str(self.home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "credentials"), "AWS_EC2_METADATA_DISABLED": "true",
        }  # fmt: skip

    async def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return await asyncio.to_thread(
            subprocess.run, [str(CLI), *args], env=self.env(), capture_output=True, timeout=120
        )

    def client(self) -> kmsclient.KmsClient:
        endpoints = [kmsclient.Endpoint(r, n.endpoint) for r, n in self.cluster.nodes.items()]
        creds = kmsclient.Credentials(self.admin.access_key_id, self.admin.secret_access_key)
        return kmsclient.KmsClient(endpoints, creds, home_region=US, timeout_s=10.0)


def _profiles(cluster: Cluster, admin: Identity) -> str:
    lines = []
    for region, node in cluster.nodes.items():
        lines += [
            f"[profile {region}]", f"region = {region}", f"endpoint_url = {node.endpoint}",
            f"aws_access_key_id = {admin.access_key_id}", f"aws_secret_access_key = {admin.secret_access_key}", "",
        ]  # fmt: skip
    return "\n".join(lines)


@pytest.fixture
async def world(nodes: NodeFactory, tmp_path: Path) -> AsyncIterator[CliWorld]:
    async with replicated_cluster(nodes, (US, EU)) as cluster:
        admin = await cluster.admin()
        clients = {r: n.client(admin) for r, n in cluster.nodes.items()}
        key_id = (await call(clients[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await replicate_everywhere(cluster, clients, key_id, US)
        home = tmp_path / "home"
        home.mkdir()
        (home / "config").write_text(_profiles(cluster, admin))
        (home / "credentials").write_text("")
        yield CliWorld(cluster, admin, home, f"arn:aws:kms:{US}:{ACCOUNT_ID}:key/{key_id}")


def _context_args() -> list[str]:
    return ["--encryption-context", *(f"{k}={v}" for k, v in CONTEXT.items())]


def _edk_regions(blob: bytes) -> list[str]:
    header = try_parse_header(blob)
    assert header is not None
    return [e.provider_info.decode().split(":")[3] for e in header.data_keys]


def _wrapping_key(arn: str, region: str) -> list[str]:
    return ["--wrapping-keys", f"key={arn}", f"profile={region}"]


@pytest.mark.parametrize("suite", [COMMIT_KEY, COMMIT_KEY_ECDSA_P384], ids=lambda s: f"0x{s.id:04x}")
async def test_official_cli_and_kmsclient_open_each_others_messages_across_regions(
    world: CliWorld, tmp_path: Path, suite: Suite
) -> None:
    data = os.urandom(300_000)  # several frames of the CLI's and ours
    (tmp_path / "plain").write_bytes(data)
    eu_arn = world.mrk.replace(f":{US}:", f":{EU}:")

    made = await world.cli(
        "--encrypt", "--input", str(tmp_path / "plain"), "--output", str(tmp_path / "theirs"),
        *_wrapping_key(world.mrk, US), *_context_args(), "--algorithm", suite.name,
        "--commitment-policy", "require-encrypt-require-decrypt", "--suppress-metadata",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    theirs = (tmp_path / "theirs").read_bytes()
    assert _edk_regions(theirs) == [US]

    async with world.client() as client:
        opened = await kmsclient.decrypt(kmsclient.AwsKmsMrkKeyring(client, eu_arn), theirs, encryption_context=CONTEXT)
        assert opened.plaintext == data and opened.info.suite == suite
        ours = await kmsclient.encrypt(
            kmsclient.AwsKmsMrkKeyring(client, world.mrk), data, encryption_context=CONTEXT, suite=suite
        )
    (tmp_path / "ours").write_bytes(ours)

    done = await world.cli(
        "--decrypt", "--input", str(tmp_path / "ours"), "--output", str(tmp_path / "back"),
        *_wrapping_key(eu_arn, EU), *_context_args(), "--buffer",
        "--commitment-policy", "require-encrypt-require-decrypt", "--suppress-metadata",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "back").read_bytes() == data


async def test_official_cli_releases_nothing_of_our_message_under_a_context_it_does_not_carry(
    world: CliWorld, tmp_path: Path
) -> None:
    async with world.client() as client:
        ours = await kmsclient.encrypt(
            kmsclient.AwsKmsMrkKeyring(client, world.mrk), b"card 4111", encryption_context=CONTEXT
        )
    (tmp_path / "ours").write_bytes(ours)
    refused = await world.cli(
        "--decrypt", "--input", str(tmp_path / "ours"), "--output", str(tmp_path / "back"),
        *_wrapping_key(world.mrk, US), "--encryption-context", "app=billing", "--buffer",
        "--commitment-policy", "require-encrypt-require-decrypt", "--suppress-metadata",
    )  # fmt: skip
    # The CLI reports a failed file on stderr and removes its output rather than exiting non-zero.
    assert not (tmp_path / "back").exists(), "the CLI kept plaintext it could not authenticate"
    assert b"Operation failed" in refused.stderr, refused.stderr.decode()
    assert b"encryption context" in refused.stderr.lower(), refused.stderr.decode()
