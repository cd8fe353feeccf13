"""The audit trail end to end: events per call, durability, fail-closed, tamper evidence (issues 7 and 15).

Nodes write audit trail v2 (segments, one chain per writer); the tampering of the legacy v1 chain is
played on a database of the previous release upgraded in place (``tests.support.legacy_audit``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
import botocore.exceptions
import orjson
import pytest
from botocore.config import Config

from regiond.__main__ import parser
from regiond.audit import SegmentWriter, chain
from regiond.audit.calls import CallRecord
from regiond.audit.export import LOG_NAME, check_export
from regiond.crypto.keyring import load_file_keyring
from regiond.crypto.sign import RegionIdentityKey
from regiond.devtools.postgres import free_port
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.service.iam import IamService
from regiond.statedir import init_state_dir, load_identity
from regiond.store.pool import create_pool
from tests.support import legacy_audit
from tests.support.audit_v2 import trail_records
from tests.support.cluster import ACCOUNT_ID, Identity, NodeFactory, PgServer
from tests.support.raw import signed_post

ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["kms:*", "iam:*"], "Resource": "*"}],
}


async def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def _error(fn: Callable[..., Any], **kwargs: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return info.value


async def _events(database_url: str) -> list[dict[str, Any]]:
    return [orjson.loads(r) for r in await trail_records(database_url)]


async def _raw_trail(database_url: str) -> bytes:
    return b"\n".join(await trail_records(database_url))


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``regiond audit ...`` in this process (without reconfiguring logging as ``main`` would)."""
    args = parser().parse_args(["audit", *argv])
    capsys.readouterr()
    code = await asyncio.to_thread(args.func, args)
    return int(code), capsys.readouterr().out


def _request_id(response: dict[str, Any]) -> str:
    return str(response["ResponseMetadata"]["RequestId"])


def _secret_forms(secret: bytes | str) -> list[bytes]:
    raw = secret.encode() if isinstance(secret, str) else secret
    return [raw, base64.b64encode(raw), raw.hex().encode()]


def _assert_secrets_absent(haystack: bytes, secrets: list[bytes | str]) -> None:
    for secret in secrets:
        for form in _secret_forms(secret):
            assert form not in haystack, "a secret reached the audit trail or the logs"


# --- one event per call ---------------------------------------------------------------------


async def test_every_call_has_one_event_with_cloudtrail_fields(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    kms = node.client(admin)
    plaintext = b"the launch code is 0000 " + uuid.uuid4().bytes
    created = await _call(kms.create_key, Description="audited")
    key = created["KeyMetadata"]
    enc = await _call(kms.encrypt, KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext={"dept": "it"})
    dec = await _call(kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={"dept": "it"})
    gdk = await _call(kms.generate_data_key, KeyId=key["Arn"], KeySpec="AES_256")
    pol = await _call(kms.get_key_policy, KeyId=key["KeyId"], PolicyName="default")
    nobody = await nodes.identity(node, user="nobody")
    denied = await _error(node.client(nobody).decrypt, CiphertextBlob=enc["CiphertextBlob"],
                          EncryptionContext={"dept": "it"})  # fmt: skip
    invalid = await _error(kms.generate_data_key, KeyId=key["KeyId"], NumberOfBytes=2048)
    ids = [_request_id(r) for r in (created, enc, dec, gdk, pol)]
    ids += [denied.response["ResponseMetadata"]["RequestId"], invalid.response["ResponseMetadata"]["RequestId"]]

    trail = await _events(node.database_url)
    assert [e["requestID"] for e in trail] == ids
    names = ["CreateKey", "Encrypt", "Decrypt", "GenerateDataKey", "GetKeyPolicy", "Decrypt", "GenerateDataKey"]
    assert [e["eventName"] for e in trail] == names
    for e in trail:
        assert e["eventVersion"] == "1.08" and e["eventSource"] == "kms.amazonaws.com"
        assert e["awsRegion"] == node.region and e["sourceIPAddress"] == "127.0.0.1"
        assert e["userAgent"].startswith("Boto3/")
        assert dt.datetime.strptime(e["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
        assert uuid.UUID(e["eventID"]) and e["eventType"] == "AwsApiCall"
        assert e["userIdentity"]["type"] == "IAMUser" and e["userIdentity"]["accountId"] == ACCOUNT_ID
    create, encrypt, decrypt, datakey, policy, deny, bad = trail
    assert create["userIdentity"]["arn"] == admin.arn and create["userIdentity"]["accessKeyId"] == admin.access_key_id
    assert create["readOnly"] is False and create["requestParameters"] == {"description": "audited"}
    assert create["responseElements"]["keyMetadata"]["keyId"] == key["KeyId"]
    key_resource = [{"accountId": ACCOUNT_ID, "type": "AWS::KMS::Key", "ARN": key["Arn"]}]
    for e in (create, encrypt, decrypt, datakey, policy):
        assert e["resources"] == key_resource and "errorCode" not in e
    assert encrypt["requestParameters"] == {"keyId": key["KeyId"], "encryptionContext": {"dept": "it"}}
    assert encrypt["readOnly"] is True and encrypt["responseElements"] is None
    assert decrypt["requestParameters"] == {"encryptionContext": {"dept": "it"}}
    assert decrypt["additionalEventData"]["encryptionContext"] == {"dept": "it"}
    assert decrypt["additionalEventData"]["backingKeyVersion"] == 1
    assert datakey["requestParameters"] == {"keyId": key["Arn"], "keySpec": "AES_256"}
    assert policy["requestParameters"] == {"keyId": key["KeyId"], "policyName": "default"}
    assert policy["responseElements"] is None
    assert deny["errorCode"] == "AccessDeniedException" and deny["userIdentity"]["arn"] == nobody.arn
    assert deny["errorMessage"] == denied.response["Error"]["Message"]
    assert [r["ARN"] for r in deny["resources"]] == [key["Arn"]]  # the refused key is named, as AWS does
    assert bad["errorCode"] == "ValidationException" and "numberOfBytes" in bad["errorMessage"]
    _assert_secrets_absent(await _raw_trail(node.database_url), [
        plaintext, enc["CiphertextBlob"], dec["Plaintext"], gdk["Plaintext"], gdk["CiphertextBlob"],
        admin.secret_access_key, nobody.secret_access_key,
    ])  # fmt: skip


async def test_iam_admin_calls_are_audited_without_the_new_secret(nodes: NodeFactory) -> None:
    node = await nodes.start()
    root = await nodes.identity(node, user=None)
    status, _, _ = await signed_post(node.endpoint, node.region, root, "RegionKmsIam.CreateUser", b'{"UserName": "al"}')
    assert status == 200
    status, made, _ = await signed_post(node.endpoint, node.region, root, "RegionKmsIam.CreateAccessKey",
                                        b'{"UserName": "al"}')  # fmt: skip
    secret = made["AccessKey"]["SecretAccessKey"]
    status, _, _ = await signed_post(node.endpoint, node.region, root, "TrentService.Encrypt", b"{}")
    assert status == 400
    trail = await _events(node.database_url)
    assert [(e["eventSource"], e["eventName"], e.get("errorCode")) for e in trail] == [
        ("iam.amazonaws.com", "CreateUser", None),
        ("iam.amazonaws.com", "CreateAccessKey", None),
        ("kms.amazonaws.com", "Encrypt", "ValidationException"),
    ]
    assert trail[1]["responseElements"]["accessKey"]["accessKeyId"] == made["AccessKey"]["AccessKeyId"]
    assert trail[0]["userIdentity"]["type"] == "Root"
    _assert_secrets_absent(await _raw_trail(node.database_url), [secret, root.secret_access_key])


async def test_source_ip_honours_forwarded_for_only_from_a_trusted_proxy(nodes: NodeFactory) -> None:
    direct = await nodes.start()
    proxied = await nodes.start(
        database_url=direct.database_url, state_dir=direct.state_dir, trusted_proxies=("127.0.0.1",)
    )
    ident = await nodes.identity(direct)
    forwarded = {"X-Forwarded-For": "203.0.113.9, 127.0.0.1"}
    for node in (direct, proxied):
        status, body, _ = await signed_post(node.endpoint, node.region, ident, "RegionKmsIam.GetCallerIdentity",
                                            b"{}", extra_headers=forwarded)  # fmt: skip
        assert status == 200, body
    assert [e["sourceIPAddress"] for e in await _events(direct.database_url)] == ["127.0.0.1", "203.0.113.9"]


async def test_two_nodes_on_one_database_write_one_chain_each(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await nodes.start()
    second = await nodes.start(database_url=first.database_url, state_dir=first.state_dir)
    ident = await nodes.identity(first)
    clients = [first.client(ident), second.client(ident)]
    key_id = (await _call(clients[0].create_key))["KeyMetadata"]["KeyId"]

    def burst(i: int) -> str:
        return _request_id(clients[i % 2].encrypt(KeyId=key_id, Plaintext=b"x"))

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(pool, burst, i) for i in range(96)))
    con = await asyncpg.connect(first.database_url)
    try:
        chains = await con.fetch("SELECT writer_id, array_agg(seq ORDER BY seq) AS seqs, sum(record_count) AS n"
                                 " FROM audit_segments GROUP BY writer_id")  # fmt: skip
        writers = await con.fetchval("SELECT count(*) FROM audit_writers")
    finally:
        await con.close()
    assert writers == len(chains) == 2  # no lock, no chain shared between the nodes
    for c in chains:
        assert list(c["seqs"]) == list(range(1, len(c["seqs"]) + 1))
    assert sum(c["n"] for c in chains) == 97
    assert set(ids) <= {e["requestID"] for e in await _events(first.database_url)}
    code, out = await _cli(capsys, "verify", "--database-url", first.database_url, "--state-dir", str(first.state_dir))
    assert code == 0, out
    assert "segments of 2 writers" in out


# --- fail closed -----------------------------------------------------------------------------

REJECT_TRIGGER = """
CREATE FUNCTION audit_reject() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit is read-only'; END; $$
    LANGUAGE plpgsql;
CREATE TRIGGER audit_reject BEFORE INSERT ON audit_segments FOR EACH ROW EXECUTE FUNCTION audit_reject();
"""
DROP_TRIGGER = """
CREATE FUNCTION audit_drop() RETURNS trigger AS $$ BEGIN RETURN NULL; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_drop BEFORE INSERT ON audit_segments FOR EACH ROW EXECUTE FUNCTION audit_drop();
"""


async def test_encrypt_fails_closed_when_the_audit_table_is_unwritable(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await _call(kms.create_key))["KeyMetadata"]["KeyId"]
    con = await asyncpg.connect(node.database_url)
    try:
        for install, name in ((REJECT_TRIGGER, "audit_reject"), (DROP_TRIGGER, "audit_drop")):
            await con.execute(install)
            err = await _error(kms.encrypt, KeyId=key_id, Plaintext=b"must not be returned")
            assert err.response["Error"]["Code"] == "KMSInternalException"
            assert "CiphertextBlob" not in err.response
            assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 500
            await con.execute(f"DROP TRIGGER {name} ON audit_segments; DROP FUNCTION {name}()")
        ok = await _call(kms.encrypt, KeyId=key_id, Plaintext=b"audited again")
        trail = [orjson.loads(r) for r in await trail_records(node.database_url)]
        assert [e["requestID"] for e in trail].count(_request_id(ok)) == 1
    finally:
        await con.close()
    # The refused calls' segments were retried (they may have committed unseen): the chain has no hole.
    assert "must not be returned" not in (await _raw_trail(node.database_url)).decode()


# --- durability across SIGKILL, and a whole run scanned for secrets ----------------------------


async def _bootstrap_identity(database_url: str, state_dir: Path) -> Identity:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        iam = IamService(pool, load_file_keyring(state_dir / "root.key"))
        await iam.ensure_account(ACCOUNT_ID)
        arn = principal_arn(ACCOUNT_ID, PrincipalKind.USER, "admin")
        await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, "admin")
        await iam.put_identity_policy(arn, "inline", json.dumps(ADMIN_POLICY))
        new = await iam.create_access_key(arn)
    finally:
        await pool.close()
    return Identity(arn, new.access_key_id, new.secret_access_key)


async def _wait_healthy(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            assert proc.poll() is None, "regiond serve exited early"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(endpoint + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("regiond serve did not become healthy")


async def test_sigkill_after_responses_loses_no_event_and_no_secret_is_logged(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    url = await nodes.database()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region="us-east-1")
    admin = await _bootstrap_identity(url, state_dir)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "regiond.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: ASYNC220 - a long-running server, not awaited
            [sys.executable, "-m", "regiond", "serve", "--plain-http", "--region", "us-east-1", "--database-url", url,
             "--listen", f"127.0.0.1:{port}", "--state-dir", str(state_dir), "--log-level", "debug"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        await _wait_healthy(endpoint, proc)
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=32)
        kms = boto3.client(
            "kms", endpoint_url=endpoint, region_name="us-east-1", config=cfg,
            aws_access_key_id=admin.access_key_id, aws_secret_access_key=admin.secret_access_key,
        )  # fmt: skip
        key_id = (await _call(kms.create_key))["KeyMetadata"]["KeyId"]
        status, made, _ = await signed_post(endpoint, "us-east-1", admin, "RegionKmsIam.CreateAccessKey",
                                            json.dumps({"UserName": "admin"}).encode())  # fmt: skip
        assert status == 200
        plaintexts = [f"plaintext {i} {uuid.uuid4()}".encode() for i in range(64)]
        secrets: list[bytes | str] = [admin.secret_access_key, made["AccessKey"]["SecretAccessKey"], *plaintexts]

        def work(i: int) -> list[str]:
            enc = kms.encrypt(KeyId=key_id, Plaintext=plaintexts[i])
            dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"])
            gdk = kms.generate_data_key(KeyId=key_id, NumberOfBytes=32)
            secrets.extend([enc["CiphertextBlob"], gdk["Plaintext"], gdk["CiphertextBlob"]])
            return [_request_id(enc), _request_id(dec), _request_id(gdk)]

        rejected = await _error(kms.generate_data_key, KeyId=key_id, NumberOfBytes=2048)
        rejected_id = rejected.response["ResponseMetadata"]["RequestId"]
        with ThreadPoolExecutor(max_workers=32) as executor:
            loop = asyncio.get_running_loop()
            answered = await asyncio.gather(*(loop.run_in_executor(executor, work, i) for i in range(len(plaintexts))))
        proc.send_signal(signal.SIGKILL)  # right after the last response: no drain, no flush
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    recorded = {e["requestID"] for e in await _events(url)}
    assert rejected_id in recorded
    missing = {rid for ids in answered for rid in ids} - recorded
    assert not missing, f"{len(missing)} answered requests have no audit event"

    verify = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "regiond", "audit", "verify", "--database-url", url],
        capture_output=True, env=env, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()

    logs = log_path.read_bytes()
    assert f'"request_id": "{rejected_id}"'.encode() in logs, "application logs must carry the request id"
    assert b'"eventVersion"' not in logs, "audit events must not be copied into the application log"
    _assert_secrets_absent(logs + await _raw_trail(url), secrets)


# --- integrity: verify -----------------------------------------------------------------------


async def test_verify_passes_on_an_untouched_chain_and_reports_each_tampering(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The closed legacy chain of a database upgraded from the previous release, with its v1 digests."""
    region = "us-east-1"
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region=region)
    signer = load_identity(state_dir, load_file_keyring(state_dir / "root.key"))
    url = await legacy_audit.v1_trail(pg_server, f"v1_tamper_{uuid.uuid4().hex[:8]}", region, signer, events=24,
                                      digest_every=5)  # fmt: skip
    try:
        await _tamper_legacy(url, region, state_dir, capsys)
    finally:
        await pg_server.drop_database(url)


async def _tamper_legacy(url: str, region: str, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database-url", url, "--state-dir", str(state_dir)]
    code, out = await _cli(capsys, "verify", *db)
    assert code == 0, out
    assert "OK: 24 events" in out
    now = dt.datetime.now(dt.UTC)
    since, until = (now - dt.timedelta(hours=1)).isoformat(), (now + dt.timedelta(hours=1)).isoformat()
    assert (await _cli(capsys, "verify", *db, "--from", since, "--to", until))[0] == 0

    async def findings() -> list[tuple[str, int | None]]:
        code, out = await _cli(capsys, "verify", *db, "--format", "json")
        report = json.loads(out)
        assert (code == 0) == report["ok"]
        return [(f["kind"], f["seq"]) for f in report["findings"]]

    con = await asyncpg.connect(url)
    try:
        original = {r["seq"]: r for r in await con.fetch("SELECT * FROM audit_events ORDER BY seq")}
        columns = list(original[1].keys())

        async def put_back(seq: int) -> None:
            row = original[seq]
            await con.execute(f"INSERT INTO audit_events ({', '.join(columns)}) VALUES "
                              f"({', '.join(f'${i + 1}' for i in range(len(columns)))})", *row.values())  # fmt: skip

        # An edited event.
        await con.execute("UPDATE audit_events SET record = convert_to(replace(convert_from(record, 'UTF8'),"
                          " '\"ListKeys\"', '\"Decrypt\"'), 'UTF8') WHERE seq = 7")  # fmt: skip
        assert ("changed", 7) in await findings()
        await con.execute("DELETE FROM audit_events WHERE seq = 7")
        await put_back(7)

        # A deleted event.
        await con.execute("DELETE FROM audit_events WHERE seq = 12")
        assert ("deleted", 12) in await findings()
        await put_back(12)

        # A swapped pair.
        await con.execute("UPDATE audit_events SET seq = seq + 1000000 WHERE seq IN (3, 4)")
        await con.execute("UPDATE audit_events SET seq = CASE seq WHEN 1000003 THEN 4 ELSE 3 END WHERE seq > 1000000")
        assert ("reordered", 3) in await findings()
        await con.execute("DELETE FROM audit_events WHERE seq IN (3, 4)")
        await put_back(3)
        await put_back(4)

        # An inserted event that even links correctly (the attacker knows the hash scheme).
        forged = orjson.dumps({"eventName": "Decrypt", "forged": True})
        prev = bytes(original[9]["hash"])
        await con.execute("UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= 10")
        await con.execute("UPDATE audit_events SET seq = seq - 999999 WHERE seq > 1000000")
        await con.execute(
            "INSERT INTO audit_events (region, seq, event_id, event_time, event_source, event_name, read_only,"
            " record, prev_hash, hash) VALUES ($1, 10, $2, now(), 'kms.amazonaws.com', 'Decrypt', true, $3, $4, $5)",
            region, uuid.uuid4(), forged, prev, chain.event_hash(prev, forged),
        )  # fmt: skip
        assert ("inserted", 10) in await findings()
        await con.execute("DELETE FROM audit_events WHERE seq = 10")
        await con.execute("UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= 11")
        await con.execute("UPDATE audit_events SET seq = seq - 1000001 WHERE seq > 1000000")

        # History rewritten and re-hashed to the end: only the signed digests can tell.
        rows = await con.fetch("SELECT seq, record, prev_hash FROM audit_events WHERE seq >= 7 ORDER BY seq")
        prev = bytes(rows[0]["prev_hash"])
        for r in rows:
            record = bytes(r["record"]).replace(b'"ListKeys"', b'"Decrypt"') if r["seq"] == 7 else bytes(r["record"])
            digest = chain.event_hash(prev, record)
            await con.execute("UPDATE audit_events SET record = $2, prev_hash = $3, hash = $4 WHERE seq = $1",
                              r["seq"], record, prev, digest)  # fmt: skip
            prev = digest
        await con.execute("UPDATE audit_chain_head SET hash = $1", prev)
        assert any(kind == "digest-mismatch" for kind, _ in await findings())
        await con.execute("DELETE FROM audit_events WHERE seq >= 7")
        for seq in sorted(s for s in original if s >= 7):
            await put_back(seq)
        await con.execute("UPDATE audit_chain_head SET hash = $1", bytes(original[max(original)]["hash"]))

        # A forged digest: edited, or re-signed with a key that is not the region's.
        stored = await con.fetchrow("SELECT * FROM audit_digests ORDER BY last_seq LIMIT 1")
        assert stored is not None
        await con.execute("UPDATE audit_digests SET last_hash = $2 WHERE last_seq = $1", stored["last_seq"], b"\0" * 32)
        assert ("digest-forged", stored["last_seq"]) in await findings()
        mallory = RegionIdentityKey.generate()
        fake = chain.Digest(region, stored["first_seq"], stored["last_seq"], bytes(stored["last_hash"]),
                            stored["prev_digest"], stored["digest_time"]).signed(mallory)  # fmt: skip
        await con.execute("UPDATE audit_digests SET last_hash = $2, public_key = $3, signature = $4"
                          " WHERE last_seq = $1", stored["last_seq"], fake.last_hash, fake.public_key,
                          fake.signature)  # fmt: skip
        assert ("digest-forged", stored["last_seq"]) in await findings()
        await con.execute("UPDATE audit_digests SET public_key = $2, signature = $3 WHERE last_seq = $1",
                          stored["last_seq"], stored["public_key"], stored["signature"])  # fmt: skip
    finally:
        await con.close()
    code, out = await _cli(capsys, "verify", *db)
    assert code == 0, f"after every restore the chain verifies again:\n{out}"


# --- query and export ------------------------------------------------------------------------


async def test_query_filters_and_export_writes_cloudtrail_files(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    kms = node.client(admin)
    key = (await _call(kms.create_key))["KeyMetadata"]
    other = (await _call(kms.create_key))["KeyMetadata"]
    blob = (await _call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p"))["CiphertextBlob"]
    await _call(kms.decrypt, CiphertextBlob=blob)
    await _call(kms.encrypt, KeyId=other["KeyId"], Plaintext=b"p")
    nobody = await nodes.identity(node, user="nobody")
    await _error(node.client(nobody).decrypt, CiphertextBlob=blob)
    await nodes.stop(node)
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({"regions": {node.region: {"database_url": node.database_url,
                                                             "state_dir": str(node.state_dir)}}}))  # fmt: skip
    by_cluster = ["--cluster", str(cluster), "--region", node.region]

    code, out = await _cli(capsys, "query", *by_cluster, "--event-name", "Decrypt", "--key", key["KeyId"],
                           "--principal", admin.arn, "--since", "1h")  # fmt: skip
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1
    assert json.loads(lines[0])["eventName"] == "Decrypt" and json.loads(lines[0])["userIdentity"]["arn"] == admin.arn
    code, out = await _cli(capsys, "query", "--database-url", node.database_url, "--key", key["Arn"])
    events = [json.loads(line) for line in out.splitlines()]
    # The refused Decrypt names the key too, as AWS records it.
    assert [(e["eventName"], e.get("errorCode")) for e in events] == [
        ("CreateKey", None), ("Encrypt", None), ("Decrypt", None), ("Decrypt", "AccessDeniedException")
    ]
    code, out = await _cli(capsys, "query", *by_cluster, "--error-code", "AccessDeniedException", "--format", "table")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["eventTime", "eventName", "principal"]
    assert len(out.splitlines()) == 2 and nobody.arn in out
    assert (await _cli(capsys, "query", *by_cluster, "--since", "tomorrow"))[0] == 2

    # The hour in progress is exported only when --to says it has ended (CloudTrail delivers after the fact).
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out = await _cli(capsys, "export", *by_cluster, "--out", str(tmp_path / "siem"), "--to", later)
    assert code == 0
    files = sorted((tmp_path / "siem").rglob("*_CloudTrail_*.json.gz"))
    assert files and all(LOG_NAME.match(f.name) for f in files)
    exported = [e for f in files for e in json.loads(gzip.decompress(f.read_bytes()))["Records"]]
    assert sorted(e["requestID"] for e in exported) == sorted(e["requestID"] for e in await _events(node.database_url))
    public = load_identity(node.state_dir, node.keyring).public_bytes()
    assert check_export(tmp_path / "siem", [public]) == []
    files[0].write_bytes(gzip.compress(b'{"Records":[]}'))
    problems = check_export(tmp_path / "siem", [public])
    assert len(problems) == 1 and files[0].name in problems[0] and "does not match" in problems[0]

# --- the writer on its own ----------------------------------------------------------------------


def _record(when: dt.datetime, n: int) -> CallRecord:
    return CallRecord(operation="ListKeys", event_source="kms.amazonaws.com", request_id=f"r{n}", event_time=when,
                      region="us-east-1", source_ip="127.0.0.1", user_agent="test")  # fmt: skip


async def test_close_while_a_batch_is_in_flight_writes_everything_queued_behind_it(nodes: NodeFactory) -> None:
    url = await nodes.database()
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        writer = SegmentWriter(pool, "us-east-1")
        await writer.start()
        first = asyncio.create_task(writer.submit(_record(dt.datetime.now(dt.UTC), 0)))
        await asyncio.sleep(0.001)  # the writer has taken event 0 and is committing it
        queued = [asyncio.create_task(writer.submit(_record(dt.datetime.now(dt.UTC), n))) for n in range(1, 6)]
        await asyncio.sleep(0)  # every submit is queued before close starts
        await asyncio.wait_for(writer.close(), timeout=30)
        await asyncio.gather(first, *queued)
    finally:
        await pool.close()
    assert sorted(e["requestID"] for e in await _events(url)) == [f"r{n}" for n in range(6)]
