"""Imported key material over boto3, with only `cryptography` on the client side: each wrapping
algorithm, tokens, expiry by the sweeper, delete and re-import, and EXTERNAL-key rotation (issue 5)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from regiond.__main__ import parser
from regiond.app import IMPORT_EXPIRY
from regiond.domain import ciphertext
from regiond.protocol.routes import SERVICES
from regiond.service.authz import Requester
from regiond.service.importing import ImportMaterialRequest
from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory
from tests.support.import_material import wrap_for_import

DOES_NOT_EXPIRE = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}


async def _import(
    kms: Any, key_id: str, material: bytes, *, algorithm: str = "RSAES_OAEP_SHA_256", spec: str = "RSA_2048",
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    params = await aws_call(
        kms.get_parameters_for_import, KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )
    encrypted = wrap_for_import(params["PublicKey"], algorithm, material)
    result: dict[str, Any] = await aws_call(
        kms.import_key_material, KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=encrypted,
        **(extra or DOES_NOT_EXPIRE),
    )  # fmt: skip
    return result


async def _state(kms: Any, key_id: str) -> str:
    return str((await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]["KeyState"])


async def _external_key(kms: Any) -> str:
    return str((await aws_call(kms.create_key, Origin="EXTERNAL"))["KeyMetadata"]["KeyId"])


async def test_import_with_each_wrapping_algorithm_enables_the_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    cases = [
        ("RSAES_OAEP_SHA_1", "RSA_2048"),
        ("RSAES_OAEP_SHA_256", "RSA_3072"),
        ("RSA_AES_KEY_WRAP_SHA_1", "RSA_4096"),
        ("RSA_AES_KEY_WRAP_SHA_256", "RSA_2048"),
    ]
    for algorithm, spec in cases:
        key_id = await _external_key(kms)
        md = (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]
        assert (md["Origin"], md["KeyState"], md["Enabled"]) == ("EXTERNAL", "PendingImport", False)
        assert error_code(await expect_error(kms.encrypt, KeyId=key_id, Plaintext=b"x")) == "KMSInvalidStateException"
        params = await aws_call(kms.get_parameters_for_import, KeyId=key_id, WrappingAlgorithm=algorithm,
                             WrappingKeySpec=spec)  # fmt: skip
        assert params["KeyId"] == md["Arn"]
        public = serialization.load_der_public_key(params["PublicKey"])
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == int(spec.removeprefix("RSA_"))
        hours = (params["ParametersValidTo"] - node.clock.now()).total_seconds() / 3600
        assert 23.9 < hours <= 24
        material = os.urandom(32)
        result = await aws_call(
            kms.import_key_material, KeyId=key_id, ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_for_import(params["PublicKey"], algorithm, material), **DOES_NOT_EXPIRE,
        )  # fmt: skip
        assert result["KeyId"] == md["Arn"] and len(result["KeyMaterialId"]) == 64
        md = (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]
        assert (md["KeyState"], md["ExpirationModel"]) == ("Enabled", "KEY_MATERIAL_DOES_NOT_EXPIRE")
        assert "ValidTo" not in md
        plaintext = f"plaintext under {algorithm}".encode()  # not the algorithm's name: the secret scan would find it
        blob = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=plaintext))["CiphertextBlob"]
        assert (await aws_call(kms.decrypt, CiphertextBlob=blob))["Plaintext"] == plaintext
        [entry] = (await aws_call(kms.list_key_rotations, KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL"))[
            "Rotations"
        ]
        assert (entry["KeyMaterialId"], entry["KeyMaterialState"], entry["ImportState"]) == (
            result["KeyMaterialId"], "CURRENT", "IMPORTED",
        )  # fmt: skip


async def test_import_refusals_name_the_problem(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    kms = node.client(ident)
    key_id, other_id = await _external_key(kms), await _external_key(kms)
    aws_kms_key = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    material = os.urandom(32)

    def params_for(key: str, algorithm: str = "RSAES_OAEP_SHA_256", spec: str = "RSA_2048") -> Any:
        return aws_call(kms.get_parameters_for_import, KeyId=key, WrappingAlgorithm=algorithm, WrappingKeySpec=spec)

    for algorithm, spec in (("RSAES_PKCS1_V1_5", "RSA_2048"), ("SM2PKE", "RSA_2048"), ("RSAES_OAEP_SHA_1", "SM2")):
        err = await expect_error(kms.get_parameters_for_import, KeyId=key_id, WrappingAlgorithm=algorithm,
                           WrappingKeySpec=spec)  # fmt: skip
        assert error_code(err) == "UnsupportedOperationException"
    err = await expect_error(kms.get_parameters_for_import, KeyId=aws_kms_key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                       WrappingKeySpec="RSA_2048")  # fmt: skip
    assert error_code(err) == "UnsupportedOperationException"

    mine, foreign = await params_for(key_id), await params_for(other_id)
    encrypted = wrap_for_import(mine["PublicKey"], "RSAES_OAEP_SHA_256", material)

    async def attempt(**kwargs: Any) -> str:
        request = {"KeyId": key_id, "ImportToken": mine["ImportToken"], "EncryptedKeyMaterial": encrypted,
                   **DOES_NOT_EXPIRE, **kwargs}  # fmt: skip
        return error_code(await expect_error(kms.import_key_material, **request))

    assert await attempt(ImportToken=foreign["ImportToken"]) == "InvalidImportTokenException"
    assert await attempt(ImportToken=b"\x01" + os.urandom(16)) == "InvalidImportTokenException"
    assert await attempt(ImportToken=b"garbage") == "InvalidImportTokenException"
    assert await attempt(EncryptedKeyMaterial=wrap_for_import(mine["PublicKey"], "RSAES_OAEP_SHA_1", material)) == (
        "InvalidCiphertextException"
    )
    too_short = wrap_for_import(mine["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(16))
    assert await attempt(EncryptedKeyMaterial=too_short) == "IncorrectKeyMaterialException"
    assert await attempt(ExpirationModel="KEY_MATERIAL_EXPIRES") == "ValidationException"  # no ValidTo
    too_late = node.clock.now() + dt.timedelta(days=366)
    assert await attempt(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=too_late) == "ValidationException"
    soon = node.clock.now() + dt.timedelta(days=1)
    assert await attempt(ValidTo=soon) == "ValidationException"  # ValidTo with DOES_NOT_EXPIRE
    assert await attempt(ImportType="NEW_KEY_MATERIAL", KeyMaterialId="0" * 64) == "ValidationException"
    assert await attempt(ImportType="EXISTING_KEY_MATERIAL") == "IncorrectKeyMaterialException"  # nothing yet
    assert await _state(kms, key_id) == "PendingImport"
    err = await expect_error(kms.import_key_material, KeyId=aws_kms_key, ImportToken=mine["ImportToken"],
                       EncryptedKeyMaterial=encrypted, **DOES_NOT_EXPIRE)  # fmt: skip
    assert error_code(err) == "UnsupportedOperationException"
    assert (
        error_code(await expect_error(kms.delete_imported_key_material, KeyId=aws_kms_key))
        == "UnsupportedOperationException"
    )
    # Deleting from a key that never had material: no effect.
    assert (await aws_call(kms.delete_imported_key_material, KeyId=key_id)).get("KeyMaterialId", "") == ""

    # A token past its 24 hours (asked through the service with a later clock: moving the node's
    # clock a day would fail boto3's SigV4 skew check).
    services = node.app[SERVICES]
    assert services.importing is not None
    who = Requester(await services.iam.get_principal(ident.arn))
    request = ImportMaterialRequest(mine["ImportToken"], encrypted, expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE")
    with pytest.raises(Exception) as info:
        await services.importing.import_key_material(who, key_id, request, node.clock.now() + dt.timedelta(hours=25))
    assert getattr(info.value, "code", None) == "ExpiredImportTokenException"
    # Within its validity the same token still works (and may be used again).
    assert len((await aws_call(kms.import_key_material, KeyId=key_id, ImportToken=mine["ImportToken"],
                            EncryptedKeyMaterial=encrypted, **DOES_NOT_EXPIRE))["KeyMaterialId"]) == 64  # fmt: skip
    assert await _state(kms, key_id) == "Enabled"


async def test_expired_material_is_deleted_by_the_sweeper_and_reimport_restores_old_ciphertexts(
    nodes: NodeFactory,
) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    sweeper = node.app[IMPORT_EXPIRY]
    key_id = await _external_key(kms)
    material = os.urandom(32)
    valid_to = (node.clock.now() + dt.timedelta(hours=1)).replace(microsecond=0)
    await _import(kms, key_id, material, ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    md = (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]
    assert (md["KeyState"], md["ExpirationModel"], md["ValidTo"]) == ("Enabled", "KEY_MATERIAL_EXPIRES", valid_to)
    blob = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"before expiry"))["CiphertextBlob"]

    assert await sweeper.run_once(valid_to - dt.timedelta(minutes=1)) == []
    assert await sweeper.run_once(valid_to + dt.timedelta(seconds=1)) == [(key_id, 1)]
    assert await sweeper.run_once(valid_to + dt.timedelta(days=1)) == []
    md = (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]
    assert md["KeyState"] == "PendingImport" and "ValidTo" not in md
    assert error_code(await expect_error(kms.decrypt, CiphertextBlob=blob)) == "KMSInvalidStateException"
    [entry] = (await aws_call(kms.list_key_rotations, KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL"))["Rotations"]
    assert entry["ImportState"] == "PENDING_IMPORT"

    await _import(kms, key_id, material, algorithm="RSA_AES_KEY_WRAP_SHA_256")
    assert await _state(kms, key_id) == "Enabled"
    assert (await aws_call(kms.decrypt, CiphertextBlob=blob))["Plaintext"] == b"before expiry"
    assert await sweeper.run_once(valid_to + dt.timedelta(days=400)) == []  # no longer expires


async def test_deleted_material_comes_back_only_by_reimporting_the_same_material(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = await _external_key(kms)
    material = os.urandom(32)
    first = await _import(kms, key_id, material)
    blob = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"kept"))["CiphertextBlob"]
    deleted = await aws_call(kms.delete_imported_key_material, KeyId=key_id)
    assert deleted["KeyMaterialId"] == first["KeyMaterialId"]
    assert await _state(kms, key_id) == "PendingImport"
    assert error_code(await expect_error(kms.decrypt, CiphertextBlob=blob)) == "KMSInvalidStateException"

    for import_type in (None, "EXISTING_KEY_MATERIAL"):
        extra = {"ImportType": import_type} if import_type else {}
        err = await expect_error(_import_sync(kms), key_id=key_id, material=os.urandom(32), extra=extra)
        assert error_code(err) == "IncorrectKeyMaterialException"
    err = await expect_error(_import_sync(kms), key_id=key_id, material=material, extra={"KeyMaterialId": "a" * 64})
    assert error_code(err) == "IncorrectKeyMaterialException"
    again = await _import(kms, key_id, material, KeyMaterialId=first["KeyMaterialId"],
                          ImportType="EXISTING_KEY_MATERIAL", **DOES_NOT_EXPIRE)  # fmt: skip
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert await _state(kms, key_id) == "Enabled"
    assert (await aws_call(kms.decrypt, CiphertextBlob=blob))["Plaintext"] == b"kept"

    # Deleting while pending deletion keeps that state; the key cannot be imported into then.
    await aws_call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
    await aws_call(kms.delete_imported_key_material, KeyId=key_id)
    assert await _state(kms, key_id) == "PendingDeletion"
    err = await expect_error(kms.get_parameters_for_import, KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                       WrappingKeySpec="RSA_2048")  # fmt: skip
    assert error_code(err) == "KMSInvalidStateException"


def _import_sync(kms: Any) -> Any:
    """``_import`` as a blocking call, for ``_error`` (which runs its function in a thread)."""

    def run(*, key_id: str, material: bytes, extra: dict[str, Any]) -> Any:
        params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                               WrappingKeySpec="RSA_2048")  # fmt: skip
        return kms.import_key_material(
            KeyId=key_id, ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_for_import(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
            **DOES_NOT_EXPIRE, **extra,
        )  # fmt: skip

    return run


async def test_external_key_rotates_on_demand_to_new_imported_material(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = await _external_key(kms)
    old, new = os.urandom(32), os.urandom(32)
    first = await _import(kms, key_id, old)
    blob_old = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"old era"))["CiphertextBlob"]

    assert error_code(await expect_error(kms.enable_key_rotation, KeyId=key_id)) == "UnsupportedOperationException"
    assert (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["KeyRotationEnabled"] is False
    assert error_code(await expect_error(kms.rotate_key_on_demand, KeyId=key_id)) == "KMSInvalidStateException"
    err = await expect_error(_import_sync(kms), key_id=key_id, material=old, extra={"ImportType": "NEW_KEY_MATERIAL"})
    assert error_code(err) == "IncorrectKeyMaterialException"  # already associated

    second = await _import(kms, key_id, new, ImportType="NEW_KEY_MATERIAL", KeyMaterialDescription="second",
                           **DOES_NOT_EXPIRE)  # fmt: skip
    listing = (await aws_call(kms.list_key_rotations, KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL"))["Rotations"]
    assert [(r["KeyMaterialId"], r["KeyMaterialState"]) for r in listing] == [
        (first["KeyMaterialId"], "CURRENT"), (second["KeyMaterialId"], "PENDING_ROTATION"),
    ]  # fmt: skip
    assert listing[1]["KeyMaterialDescription"] == "second" and "RotationDate" not in listing[1]
    err = await expect_error(_import_sync(kms), key_id=key_id, material=os.urandom(32),
                       extra={"ImportType": "NEW_KEY_MATERIAL"})  # fmt: skip
    assert error_code(err) == "IncorrectKeyMaterialException"  # one pending material at a time
    # Still encrypting under the first material until the rotation.
    blob = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"x"))["CiphertextBlob"]
    assert ciphertext.unpack(blob)[0].backing_version == 1

    await aws_call(kms.rotate_key_on_demand, KeyId=key_id)
    blob_new = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"new era"))["CiphertextBlob"]
    assert ciphertext.unpack(blob_new)[0].backing_version == 2
    rotations = (await aws_call(kms.list_key_rotations, KeyId=key_id))["Rotations"]
    assert [(r["KeyMaterialId"], r["RotationType"], r["KeyMaterialState"], r["ImportState"]) for r in rotations] == [
        (second["KeyMaterialId"], "ON_DEMAND", "CURRENT", "IMPORTED"),
    ]
    assert (await aws_call(kms.decrypt, CiphertextBlob=blob_old))["Plaintext"] == b"old era"

    # Every associated material must be present for the key to be Enabled.
    deleted = await aws_call(kms.delete_imported_key_material, KeyId=key_id, KeyMaterialId=first["KeyMaterialId"])
    assert deleted["KeyMaterialId"] == first["KeyMaterialId"]
    assert await _state(kms, key_id) == "PendingImport"
    await _import(kms, key_id, old, ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=first["KeyMaterialId"],
                  **DOES_NOT_EXPIRE)  # fmt: skip
    assert await _state(kms, key_id) == "Enabled"
    for blob_, text in ((blob_old, b"old era"), (blob_new, b"new era")):
        assert (await aws_call(kms.decrypt, CiphertextBlob=blob_))["Plaintext"] == text

    # Pending new material can be deleted outright and replaced by different material.
    third = await _import(kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL", **DOES_NOT_EXPIRE)
    await aws_call(kms.delete_imported_key_material, KeyId=key_id, KeyMaterialId=third["KeyMaterialId"])
    assert await _state(kms, key_id) == "Enabled"
    fourth = await _import(kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL", **DOES_NOT_EXPIRE)
    assert fourth["KeyMaterialId"] != third["KeyMaterialId"]
    assert error_code(await expect_error(kms.delete_imported_key_material, KeyId=key_id, KeyMaterialId="b" * 64)) == (
        "NotFoundException"
    )


def _printed(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The command's JSON line (the in-process node logs to the same captured stdout)."""
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"KeyId"')]
    result: dict[str, Any] = json.loads(line)
    return result


async def test_import_material_command_runs_the_whole_flow(
    nodes: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    kms = node.client(ident)
    key_arn = (await aws_call(kms.create_key, Origin="EXTERNAL"))["KeyMetadata"]["Arn"]
    material_file = tmp_path / "material.bin"
    material_file.write_bytes(os.urandom(32))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ident.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ident.secret_access_key)

    def run(*argv: str) -> int:  # the parsed command, without main()'s process-wide logging setup
        args = parser().parse_args(["import-material", *argv])
        return int(args.func(args))

    # --endpoint: the region comes from the key ARN, credentials from the environment.
    code = await asyncio.to_thread(run, "--key", key_arn, "--material", str(material_file), "--endpoint", node.endpoint)
    assert code == 0
    out = _printed(capsys)
    assert (out["KeyId"], out["KeyState"], len(out["KeyMaterialId"])) == (key_arn, "Enabled", 64)
    blob = (await aws_call(kms.encrypt, KeyId=key_arn, Plaintext=b"via the command"))["CiphertextBlob"]

    # --cluster: endpoint and credentials from cluster.json; re-import after a delete, with expiry.
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({
        "regions": {node.region: {"endpoint": node.endpoint}},
        "credentials": {"access_key_id": ident.access_key_id, "secret_access_key": ident.secret_access_key},
    }))  # fmt: skip
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    await aws_call(kms.delete_imported_key_material, KeyId=key_arn)
    valid_to = (node.clock.now() + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code = await asyncio.to_thread(
        run, "--key", key_arn.rsplit("/", 1)[1], "--material", str(material_file), "--cluster", str(cluster),
        "--region", node.region, "--wrapping-algorithm", "RSAES_OAEP_SHA_1", "--wrapping-key-spec", "RSA_2048",
        "--valid-to", valid_to, "--key-material-id", out["KeyMaterialId"],
    )  # fmt: skip
    assert code == 0
    again = _printed(capsys)
    assert (again["KeyMaterialId"], again["KeyState"]) == (out["KeyMaterialId"], "Enabled")
    assert (await aws_call(kms.decrypt, CiphertextBlob=blob))["Plaintext"] == b"via the command"
    md = (await aws_call(kms.describe_key, KeyId=key_arn))["KeyMetadata"]
    assert md["ExpirationModel"] == "KEY_MATERIAL_EXPIRES" and "ValidTo" in md

    # Different material is refused with AWS's error code and a non-zero exit.
    material_file.write_bytes(os.urandom(32))
    code = await asyncio.to_thread(run, "--key", key_arn, "--material", str(material_file), "--cluster", str(cluster))
    assert code == 1
    assert "IncorrectKeyMaterialException" in capsys.readouterr().err
    # Material of the wrong size for the key's spec: the server says so (the command sends any size).
    material_file.write_bytes(os.urandom(16))
    code = await asyncio.to_thread(run, "--key", key_arn, "--material", str(material_file), "--cluster", str(cluster))
    assert code == 1
    err = capsys.readouterr().err
    assert "IncorrectKeyMaterialException" in err and "256 bits" in err
    material_file.write_bytes(b"")
    with pytest.raises(SystemExit, match="1 to 8192 bytes"):
        run("--key", key_arn, "--material", str(material_file), "--cluster", str(cluster))
