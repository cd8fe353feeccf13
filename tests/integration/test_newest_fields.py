"""The KMS model's newest fields through boto3: KeyMaterialId in responses, CurrentKeyMaterialId,
DryRunModifiers IGNORE_CIPHERTEXT, ListKeys ResourceOwners."""

from __future__ import annotations

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory

NO_KEY_ACCESS = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}]}  # fmt: skip


async def test_key_material_ids_follow_the_material_that_was_used(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    created = (await aws_call(kms.create_key))["KeyMetadata"]
    key_id, first = created["KeyId"], created["CurrentKeyMaterialId"]
    assert len(first) == 64
    assert (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]["CurrentKeyMaterialId"] == first
    listed = await aws_call(kms.list_key_rotations, KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
    assert [r["KeyMaterialId"] for r in listed["Rotations"]] == [first]
    old_blob = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"era one"))["CiphertextBlob"]
    dec = await aws_call(kms.decrypt, CiphertextBlob=old_blob)
    assert dec["KeyMaterialId"] == first
    for call in (kms.generate_data_key, kms.generate_data_key_without_plaintext):
        assert (await aws_call(call, KeyId=key_id, KeySpec="AES_256"))["KeyMaterialId"] == first
    pair = await aws_call(kms.generate_data_key_pair, KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
    assert pair["KeyMaterialId"] == first
    # Rotate: new material becomes current; old ciphertexts still name the old material.
    await aws_call(kms.rotate_key_on_demand, KeyId=key_id)
    second = (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]["CurrentKeyMaterialId"]
    assert len(second) == 64 and second != first
    assert (await aws_call(kms.decrypt, CiphertextBlob=old_blob))["KeyMaterialId"] == first
    new_blob = (await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"era two"))["CiphertextBlob"]
    assert (await aws_call(kms.decrypt, CiphertextBlob=new_blob))["KeyMaterialId"] == second
    other = (await aws_call(kms.create_key))["KeyMetadata"]
    moved = await aws_call(kms.re_encrypt, CiphertextBlob=old_blob, DestinationKeyId=other["KeyId"])
    assert moved["SourceKeyMaterialId"] == first and moved["DestinationKeyMaterialId"] == other["CurrentKeyMaterialId"]
    # "present only when the operation uses a symmetric encryption KMS key"
    signer = (await aws_call(kms.create_key, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"))["KeyMetadata"]
    assert "CurrentKeyMaterialId" not in signer
    assert "CurrentKeyMaterialId" not in (await aws_call(kms.describe_key, KeyId=signer["KeyId"]))["KeyMetadata"]
    rsa_key = (await aws_call(kms.create_key, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT"))["KeyMetadata"]
    blob = (await aws_call(kms.encrypt, KeyId=rsa_key["KeyId"], Plaintext=b"p",
                           EncryptionAlgorithm="RSAES_OAEP_SHA_256"))["CiphertextBlob"]  # fmt: skip
    dec = await aws_call(kms.decrypt, KeyId=rsa_key["KeyId"], CiphertextBlob=blob,
                         EncryptionAlgorithm="RSAES_OAEP_SHA_256")  # fmt: skip
    assert "KeyMaterialId" not in dec
    external = (await aws_call(kms.create_key, Origin="EXTERNAL"))["KeyMetadata"]
    assert "CurrentKeyMaterialId" not in external  # no material yet


async def test_dry_run_ignore_ciphertext_checks_only_the_named_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    key = (await aws_call(admin.create_key))["KeyMetadata"]
    err = await expect_error(admin.decrypt, KeyId=key["KeyId"], DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])
    assert error_code(err) == "DryRunOperationException"
    err = await expect_error(admin.decrypt, KeyId=key["KeyId"], CiphertextBlob=b"not a blob", DryRun=True,
                             DryRunModifiers=["IGNORE_CIPHERTEXT"])  # fmt: skip
    assert error_code(err) == "DryRunOperationException"
    # Without the modifier the ciphertext is still validated, DryRun or not.
    err = await expect_error(admin.decrypt, KeyId=key["KeyId"], CiphertextBlob=b"not a blob", DryRun=True)
    assert error_code(err) == "InvalidCiphertextException"
    err = await expect_error(admin.decrypt, DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"], CiphertextBlob=b"x")
    assert error_code(err) == "ValidationException"  # the key must be named
    stranger = node.client(await nodes.identity(node, user="stranger", policy=NO_KEY_ACCESS))
    err = await expect_error(stranger.decrypt, KeyId=key["Arn"], DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])
    assert error_code(err) == "AccessDeniedException"
    other = (await aws_call(admin.create_key))["KeyMetadata"]
    err = await expect_error(admin.re_encrypt, SourceKeyId=key["KeyId"], DestinationKeyId=other["KeyId"], DryRun=True,
                             DryRunModifiers=["IGNORE_CIPHERTEXT"])  # fmt: skip
    assert error_code(err) == "DryRunOperationException"
    await aws_call(admin.disable_key, KeyId=key["KeyId"])
    err = await expect_error(admin.decrypt, KeyId=key["KeyId"], DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])
    assert error_code(err) == "DisabledException"


async def test_list_keys_resource_owners(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    mine = [key["KeyId"]]
    ram = "OTHER_ACCOUNTS_VIA_RAM"
    cases: tuple[tuple[list[str] | None, list[str]], ...] = (
        (None, mine), (["SELF"], mine), ([ram, "SELF"], mine), ([ram], []),
    )  # fmt: skip
    for owners, expected in cases:
        out = await aws_call(kms.list_keys, **({"ResourceOwners": owners} if owners else {}))
        assert [k["KeyId"] for k in out["Keys"]] == expected, owners
        assert out["Truncated"] is False
