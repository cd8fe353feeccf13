"""Root key rotation online, and backup and recovery of a region (docs/OPERATIONS.md).

A real ``regiond serve`` (two workers, audit on) serves clients over HTTP while
``regiond rotate-root-key`` runs as its own process against the same database and state
directory: no request fails, every sealed value ends up under the new version (keys created
during the re-wrap too), the old version is retired, and a node restarted with only the new
version opens every old ciphertext and accepts every old access key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from regiond.crypto import wrap
from regiond.crypto.keyring import (
    AesRootKeyring,
    KeyringError,
    load_file_keyring,
    parse_keyring,
    sealed_prefix,
    wrapped_root_version,
)
from regiond.devtools.launcher import NodeProcess
from regiond.devtools.postgres import free_port
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.service.iam import IamService
from regiond.statedir import SEALED_FILES, init_state_dir, root_key_path
from regiond.store import sealed
from regiond.store.pool import create_pool
from tests.support.cluster import ACCOUNT_ID, Identity, NodeFactory
from tests.support.regions import wait_until
from tests.support.secret_scan import RECORDER

REGION = "us-east-1"
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:*", "iam:*"], "Resource": "*"}]}


@dataclass
class Region:
    database_url: str
    state_dir: Path
    port: int
    node: NodeProcess | None = None
    identity: Identity | None = None

    def client(self) -> Any:
        assert self.node is not None and self.identity is not None
        return boto3.client(
            "kms", endpoint_url=self.node.endpoint, region_name=REGION,
            aws_access_key_id=self.identity.access_key_id, aws_secret_access_key=self.identity.secret_access_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )  # fmt: skip


async def start_node(region: Region) -> NodeProcess:
    node = NodeProcess(REGION, region.database_url, region.state_dir, region.port, workers=2, log_level="warning")
    region.node = node.start()

    async def ready() -> bool:
        return await asyncio.to_thread(node.ready)

    await wait_until(ready, timeout_s=60, what="regiond serve to be ready")
    return node


async def make_admin(region: Region) -> Identity:
    pool = await create_pool(region.database_url, min_size=1, max_size=1)
    try:
        iam = IamService(pool, load_file_keyring(region.state_dir / "root.key"))
        await iam.ensure_account(ACCOUNT_ID)
        arn = principal_arn(ACCOUNT_ID, PrincipalKind.USER, "admin")
        await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, "admin")
        await iam.put_identity_policy(arn, "admin", json.dumps(ADMIN))
        new = await iam.create_access_key(arn)
    finally:
        await pool.close()
    return Identity(arn, new.access_key_id, new.secret_access_key)


@asynccontextmanager
async def served_region(nodes: NodeFactory, tmp_path: Path) -> AsyncIterator[Region]:
    region = Region(await nodes.database(), tmp_path / "state", free_port())
    init_state_dir(region.state_dir, region=REGION)
    region.identity = await make_admin(region)
    await start_node(region)
    try:
        yield region
    finally:
        if region.node is not None:
            region.node.stop()


def seed(kms: Any) -> dict[str, Any]:
    """Keys of several kinds with ciphertexts, signatures and MACs made under the first root key."""
    sym = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(4)]
    kms.rotate_key_on_demand(KeyId=sym[0])  # a second backing version
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    hmac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    kms.get_parameters_for_import(KeyId=external, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    blobs = {f"p{i}".encode(): kms.encrypt(KeyId=k, Plaintext=f"p{i}".encode())["CiphertextBlob"]
             for i, k in enumerate(sym)}  # fmt: skip
    signature = kms.sign(KeyId=rsa, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    mac = kms.generate_mac(KeyId=hmac, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    return {"sym": sym, "rsa": rsa, "hmac": hmac, "blobs": blobs, "signature": signature, "mac": mac}


def check_seeded(kms: Any, seeded: dict[str, Any]) -> None:
    for plaintext, blob in seeded["blobs"].items():
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
    assert kms.verify(KeyId=seeded["rsa"], Message=b"m", Signature=seeded["signature"],
                      SigningAlgorithm="RSASSA_PSS_SHA_256")["SignatureValid"]  # fmt: skip
    assert kms.verify_mac(KeyId=seeded["hmac"], Message=b"m", Mac=seeded["mac"], MacAlgorithm="HMAC_SHA_256")[
        "MacValid"
    ]


@dataclass
class Load:
    """Clients calling the node until stopped: crypto on existing keys, and new keys (which seal)."""

    region: Region
    keys: list[str]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    made: list[tuple[str, bytes]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, worker: int) -> None:
        kms = self.region.client()
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                key = self.keys[i % len(self.keys)]
                if worker == 0 and i % 5 == 0:  # seal under the root key while the re-wrap runs
                    new = kms.create_key()["KeyMetadata"]["KeyId"]
                    blob = kms.encrypt(KeyId=new, Plaintext=b"made during")["CiphertextBlob"]
                    with self.lock:
                        self.made.append((new, blob))
                elif worker == 1 and i % 7 == 0:
                    kms.rotate_key_on_demand(KeyId=kms.create_key()["KeyMetadata"]["KeyId"])
                else:
                    blob = kms.encrypt(KeyId=key, Plaintext=b"x" * 32)["CiphertextBlob"]
                    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x" * 32
                    kms.generate_data_key(KeyId=key, KeySpec="AES_256")
                with self.lock:
                    self.ok += 1
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, AssertionError) as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:300])

    @contextmanager
    def running(self, threads: int = 3) -> Iterator[None]:
        workers = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(threads)]
        for t in workers:
            t.start()
        try:
            yield
        finally:
            self.stop.set()
            for t in workers:
                t.join(timeout=60)


def regiond(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an operator command; its output joins the secret scan (no key may be in a report)."""
    done = subprocess.run([sys.executable, "-m", "regiond", *args], capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    RECORDER.add(f"regiond {args[0]} stdout", done.stdout)
    RECORDER.add(f"regiond {args[0]} stderr", done.stderr)
    return done


def keyring_of(state_dir: Path) -> AesRootKeyring:
    """The keyring file as it is now (parsed in this process, so the scan knows its keys)."""
    return parse_keyring(root_key_path(state_dir).read_bytes())


def kill_after_first_batch(*args: str) -> int:
    """Start an operator command, SIGKILL it once it reports its first committed batch of
    key_versions (a crash between two batches); its return code."""
    lines = []
    with subprocess.Popen([sys.executable, "-m", "regiond", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            lines.append(line)
            if "key_versions: " in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
        RECORDER.add("killed command stderr", "".join(lines) + proc.stderr.read())
        RECORDER.add("killed command stdout", proc.stdout.read())
    assert lines and "key_versions: " in lines[-1], lines
    return proc.returncode


async def not_under(database_url: str, version: int) -> dict[str, int]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        return await sealed.count_not_under(pool, sealed_prefix(version))
    finally:
        await pool.close()


@pytest.mark.timeout(300)
async def test_rotate_root_key_online_under_load_then_retire(nodes: NodeFactory, tmp_path: Path) -> None:
    async with served_region(nodes, tmp_path) as region:
        kms = region.client()
        seeded = await asyncio.to_thread(seed, kms)
        load = Load(region, seeded["sym"])
        key_file = root_key_path(region.state_dir)
        with load.running():
            await asyncio.sleep(1.0)
            before, started = load.ok, time.monotonic()
            rotated = await asyncio.to_thread(
                regiond, "rotate-root-key", "--state-dir", str(region.state_dir),
                "--database-url", region.database_url, "--batch-size", "3",
            )  # fmt: skip
            during, took_s = load.ok - before, time.monotonic() - started
            await asyncio.sleep(1.0)  # keep the load on after the re-wrap: new keys seal under version 2
        assert rotated.returncode == 0, rotated.stderr
        print(f"rotate-root-key under load: {took_s:.1f} s, {during} client calls meanwhile, 0 failed")
        progress = rotated.stderr.splitlines()
        assert any("new version 2 is active" in line for line in progress), progress
        assert any(line.startswith("regiond rotate-root-key: key_versions: ") for line in progress), progress
        assert "done:" in progress[-1], progress
        report = json.loads(rotated.stdout)
        assert report["complete"] and report["active_version"] == 2, report
        assert report["rewrapped"]["key_versions"] >= 8 and report["rewrapped"]["access_keys"] >= 1, report
        assert report["rewrapped"]["import_parameters"] == 1, report
        assert sorted(report["rewrapped_files"]) == ["encryption.hpke", "identity.ed25519"], report
        assert load.failures == [], load.failures[:5]
        assert during > 0 and load.made, (during, len(load.made))  # the load really ran across the re-wrap
        # Every value, including the keys the nodes created during and after the re-wrap, is under
        # version 2: the nodes followed the keyring file without a restart.
        assert await not_under(region.database_url, 2) == {t.table: 0 for t in sealed.SEALED_COLUMNS}
        assert keyring_of(region.state_dir).versions == (1, 2)

        retired = await asyncio.to_thread(
            regiond, "rotate-root-key", "--state-dir", str(region.state_dir),
            "--database-url", region.database_url, "--retire-old",
        )  # fmt: skip
        assert retired.returncode == 0, retired.stderr
        assert json.loads(retired.stdout)["retired"] == [1]
        only = keyring_of(region.state_dir)
        assert only.versions == (2,) and key_file.stat().st_mode & 0o777 == 0o600
        for name, aad in SEALED_FILES:
            path = region.state_dir / name
            if path.exists():
                assert wrapped_root_version(path.read_bytes()) == 2
                only.unwrap(path.read_bytes(), aad)

        # A node started with only version 2 opens everything made before and during the rotation.
        assert region.node is not None
        region.node.stop()
        await start_node(region)
        kms = region.client()
        await asyncio.to_thread(check_seeded, kms, seeded)
        for key_id, blob in load.made[-5:]:
            out = await asyncio.to_thread(kms.decrypt, CiphertextBlob=blob)
            assert out["KeyId"].endswith(key_id) and out["Plaintext"] == b"made during"


@pytest.mark.timeout(180)
async def test_rotation_killed_midway_resumes_and_retire_waits_for_it(nodes: NodeFactory, tmp_path: Path) -> None:
    """A rotation stopped by SIGKILL between two batches leaves values of both versions; retire
    refuses; the same command run again resumes under the same version (no third one) and ends it."""
    async with served_region(nodes, tmp_path) as region:
        kms = region.client()
        args = ("--state-dir", str(region.state_dir), "--database-url", region.database_url)
        staged = await asyncio.to_thread(regiond, "rotate-root-key", *args, "--stage")
        assert staged.returncode == 0, staged.stderr
        assert json.loads(staged.stdout)["active_version"] == 1
        assert keyring_of(region.state_dir).versions == (1, 2)
        blobs = {}
        for i in range(40):  # made while version 2 is staged: a staged version is opened, never sealed under
            key_id = (await asyncio.to_thread(kms.create_key))["KeyMetadata"]["KeyId"]
            blobs[key_id] = (await asyncio.to_thread(kms.encrypt, KeyId=key_id, Plaintext=f"staged-{i:04}".encode()))[
                "CiphertextBlob"
            ]
        assert (await not_under(region.database_url, 1))["key_versions"] == 0

        returncode = await asyncio.to_thread(kill_after_first_batch, "rotate-root-key", *args, "--batch-size", "1")
        assert returncode == -signal.SIGKILL
        assert keyring_of(region.state_dir).active_version == 2  # saved before anything was sealed under it
        left = (await not_under(region.database_url, 2))["key_versions"]
        assert 0 < left < 40, left

        refused = await asyncio.to_thread(regiond, "rotate-root-key", *args, "--retire-old")
        assert refused.returncode == 1 and "rewrap-only" in refused.stderr, refused.stderr
        assert json.loads(refused.stdout)["remaining"]["key_versions"] == left
        assert keyring_of(region.state_dir).versions == (1, 2)

        resumed = await asyncio.to_thread(regiond, "rotate-root-key", *args)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming: version 2 is active" in resumed.stderr, resumed.stderr
        report = json.loads(resumed.stdout)
        assert report["complete"] and report["active_version"] == 2 and report["rewrapped"]["key_versions"] == left
        again = await asyncio.to_thread(regiond, "rotate-root-key", *args)  # idempotent: nothing left, no version 3
        assert again.returncode == 0 and json.loads(again.stdout)["rewrapped"] == {}, again.stdout + again.stderr
        assert keyring_of(region.state_dir).versions == (1, 2)

        retired = await asyncio.to_thread(regiond, "rotate-root-key", *args, "--retire-old")
        assert retired.returncode == 0, retired.stderr
        assert keyring_of(region.state_dir).versions == (2,)
        await asyncio.to_thread(kms.list_keys)  # the access key's secret was re-wrapped too
        for i, (key_id, blob) in enumerate(blobs.items()):
            out = await asyncio.to_thread(kms.decrypt, CiphertextBlob=blob)
            assert out["KeyId"].endswith(key_id) and out["Plaintext"] == f"staged-{i:04}".encode()


async def test_rotate_root_key_errors_are_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    init_state_dir(state, region=REGION)
    closed = f"postgresql://regionkms@127.0.0.1:{free_port()}/nothing"
    for args, code, says in (
        (("--state-dir", str(state), "--database-url", closed), 2, "ConnectionRefusedError"),
        (("--state-dir", str(tmp_path / "none"), "--database-url", closed), 2, "not found: run `regiond init`"),
        (("--database-url", closed), 2, "give --state-dir"),
        (("--state-dir", str(state), "--database-url", closed, "--batch-size", "0"), 2, "at least 1"),
    ):
        out = await asyncio.to_thread(regiond, "rotate-root-key", *args)
        assert out.returncode == code and out.stdout == "", out
        assert len(out.stderr.splitlines()) == 1 and says in out.stderr, out.stderr
    # The database is reached before the keyring changes: a failed run leaves it as it was.
    assert keyring_of(state).versions == (1,)


def _pg(nodes: NodeFactory, tool: str, *args: str) -> None:
    """One of the test server's own client programs (same version as the server)."""
    binary = nodes.pg.server.bindir / tool
    out = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]


async def _admin_execute(nodes: NodeFactory, sql: str) -> None:
    con = await asyncpg.connect(nodes.pg.admin_url)
    try:
        await con.execute(sql)
    finally:
        await con.close()


@pytest.mark.timeout(300)
async def test_backup_wipe_restore_old_ciphertexts_decrypt(nodes: NodeFactory, tmp_path: Path) -> None:
    """The backup is the database dump plus the root key (the state directory): restored together,
    everything works; the dump alone decrypts nothing, by design."""
    async with served_region(nodes, tmp_path) as region:
        kms = region.client()
        seeded = await asyncio.to_thread(seed, kms)
        alias_key = seeded["sym"][1]
        await asyncio.to_thread(kms.create_alias, AliasName="alias/backed-up", TargetKeyId=alias_key)
        # Rotate the root key once first: the backup holds values of version 2 and the keyring file.
        rotated = await asyncio.to_thread(regiond, "rotate-root-key", "--state-dir", str(region.state_dir),
                                          "--database-url", region.database_url)  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr

        backup = tmp_path / "backup"
        backup.mkdir()
        dump = backup / "region.dump"
        _pg(nodes, "pg_dump", "--format=custom", "--file", str(dump), "--dbname", region.database_url)
        shutil.copytree(region.state_dir, backup / "state")  # root.key and the sealed identity files
        assert region.node is not None
        region.node.stop()

        # Wipe: the database and the state directory are gone.
        name = region.database_url.rsplit("/", 1)[1]
        await _admin_execute(nodes, f'DROP DATABASE "{name}" WITH (FORCE)')
        shutil.rmtree(region.state_dir)

        # The dump alone, with a new root key: nothing sealed in it opens.
        await _admin_execute(nodes, f'CREATE DATABASE "{name}"')
        _pg(nodes, "pg_restore", "--exit-on-error", "--no-owner", "--dbname", region.database_url, str(dump))
        other_root_key = AesRootKeyring(versions={2: os.urandom(32)})
        pool = await create_pool(region.database_url, min_size=1, max_size=1)
        try:
            rows = await sealed.rows_not_under(pool, sealed.SEALED_COLUMNS[0], b"\xff", None, 100)
        finally:
            await pool.close()
        assert len(rows) == 7  # 4 symmetric keys (one rotated: 5 versions), RSA, HMAC; EXTERNAL has none yet
        for row in rows:
            key_id, version = row.key
            with pytest.raises(KeyringError, match="does not unwrap"):
                other_root_key.unwrap(row.sealed, wrap.backing_key_aad(key_id, version))

        # Restore both: the dump into an empty database and the state directory.
        await _admin_execute(nodes, f'DROP DATABASE "{name}" WITH (FORCE)')
        await _admin_execute(nodes, f'CREATE DATABASE "{name}"')
        _pg(nodes, "pg_restore", "--exit-on-error", "--no-owner", "--dbname", region.database_url, str(dump))
        shutil.copytree(backup / "state", region.state_dir)
        await start_node(region)
        kms = region.client()  # the old access key authenticates: its secret was restored too
        await asyncio.to_thread(check_seeded, kms, seeded)
        blob = seeded["blobs"][b"p1"]
        assert (await asyncio.to_thread(kms.decrypt, CiphertextBlob=blob, KeyId="alias/backed-up"))[
            "Plaintext"
        ] == b"p1"
        # And the restored region goes on working: new keys, rotation of the old ones.
        await asyncio.to_thread(kms.rotate_key_on_demand, KeyId=alias_key)
        new = (await asyncio.to_thread(kms.encrypt, KeyId=alias_key, Plaintext=b"after"))["CiphertextBlob"]
        assert (await asyncio.to_thread(kms.decrypt, CiphertextBlob=new))["Plaintext"] == b"after"
        assert base64.b64encode(blob) != base64.b64encode(new)
