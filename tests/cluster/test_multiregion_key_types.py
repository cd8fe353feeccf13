"""Multi-Region asymmetric and HMAC keys: the private material replicates sealed like symmetric
material, a replica signs (MACs, decrypts) and the primary's public key verifies."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from regiond.crypto.keyring import AesRootKeyring
from tests.cluster.test_multiregion import AP, EU, US, call, error_code, replicate_everywhere
from tests.support.cluster import NodeFactory
from tests.support.regions import replicated_cluster, wait_until
from tests.support.secret_scan import forms

pytestmark = pytest.mark.cluster


async def test_multi_region_ecc_hmac_and_rsa_keys_work_across_regions(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        ecc = (await call(kms[US].create_key, MultiRegion=True, KeySpec="ECC_NIST_P256",
                          KeyUsage="SIGN_VERIFY"))["KeyMetadata"]["KeyId"]  # fmt: skip
        mac = (await call(kms[US].create_key, MultiRegion=True, KeySpec="HMAC_256",
                          KeyUsage="GENERATE_VERIFY_MAC"))["KeyMetadata"]["KeyId"]  # fmt: skip
        oaep = (await call(kms[US].create_key, MultiRegion=True, KeySpec="RSA_2048",
                           KeyUsage="ENCRYPT_DECRYPT"))["KeyMetadata"]["KeyId"]  # fmt: skip
        for key_id in (ecc, mac, oaep):
            await replicate_everywhere(cluster, kms, key_id, US)
        # Every region holds the same key pair: the same public key everywhere.
        primary_public = (await call(kms[US].get_public_key, KeyId=ecc))["PublicKey"]
        for region in (EU, AP):
            replica = (await call(kms[region].describe_key, KeyId=ecc))["KeyMetadata"]
            assert replica["KeySpec"] == "ECC_NIST_P256" and replica["SigningAlgorithms"] == ["ECDSA_SHA_256"]
            assert replica["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
            assert (await call(kms[region].get_public_key, KeyId=ecc))["PublicKey"] == primary_public
        public = serialization.load_der_public_key(primary_public)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        # A replica signs; the primary's public key verifies offline; every region verifies.
        for signer in (EU, AP):
            message = f"signed in {signer}".encode()
            signature = (await call(kms[signer].sign, KeyId=ecc, Message=message,
                                    SigningAlgorithm="ECDSA_SHA_256"))["Signature"]  # fmt: skip
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            for verifier in cluster.regions:
                ok = await call(kms[verifier].verify, KeyId=ecc, Message=message, Signature=signature,
                                SigningAlgorithm="ECDSA_SHA_256")  # fmt: skip
                assert ok["SignatureValid"] is True
        # MAC in one region, verify in another.
        tag = (await call(kms[AP].generate_mac, KeyId=mac, Message=b"session", MacAlgorithm="HMAC_SHA_256"))["Mac"]
        for region in cluster.regions:
            assert (await call(kms[region].generate_mac, KeyId=mac, Message=b"session",
                               MacAlgorithm="HMAC_SHA_256"))["Mac"] == tag  # fmt: skip
            ok = await call(kms[region].verify_mac, KeyId=mac, Message=b"session", Mac=tag, MacAlgorithm="HMAC_SHA_256")
            assert ok["MacValid"] is True
        assert await error_code(kms[EU].verify_mac, KeyId=mac, Message=b"other", Mac=tag,
                                MacAlgorithm="HMAC_SHA_256") == "KMSInvalidMacException"  # fmt: skip
        # RSA-OAEP: encrypted offline to the primary's public key, decrypted by a replica.
        rsa_public = serialization.load_der_public_key((await call(kms[US].get_public_key, KeyId=oaep))["PublicKey"])
        assert isinstance(rsa_public, rsa.RSAPublicKey)
        blob = rsa_public.encrypt(b"cross-region", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
        out = await call(kms[EU].decrypt, KeyId=oaep, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
        assert out["Plaintext"] == b"cross-region"
        # Asymmetric and HMAC keys do not rotate, in any region.
        for region in cluster.regions:
            assert await error_code(kms[region].rotate_key_on_demand, KeyId=ecc) == "UnsupportedOperationException"


async def test_private_material_of_multi_region_keys_crosses_the_wire_only_sealed(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The private key of an ECC key and the secret of an HMAC key reach the replica (it signs and MACs
    as the primary does) and are in no replication envelope in any form: they travel sealed to the
    destination region (HPKE), as symmetric material does."""
    sealed: list[bytes] = []
    wrap = AesRootKeyring.wrap

    def capture(self: AesRootKeyring, plaintext: bytes, aad: bytes) -> bytes:
        sealed.append(plaintext)
        return wrap(self, plaintext, aad)

    monkeypatch.setattr(AesRootKeyring, "wrap", capture)
    async with replicated_cluster(nodes, (US, EU), in_memory=True) as cluster:
        assert cluster.network is not None
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        ecc = (await call(kms[US].create_key, MultiRegion=True, KeySpec="ECC_NIST_P384",
                          KeyUsage="SIGN_VERIFY"))["KeyMetadata"]["KeyId"]  # fmt: skip
        mac = (await call(kms[US].create_key, MultiRegion=True, KeySpec="HMAC_256",
                          KeyUsage="GENERATE_VERIFY_MAC"))["KeyMetadata"]["KeyId"]  # fmt: skip
        for key_id in (ecc, mac):
            await replicate_everywhere(cluster, kms, key_id, US)
        await wait_until(cluster.drained, what="every outbox to drain")

        # Find the material the primary sealed at rest: the private key whose public key GetPublicKey
        # returns, the HMAC key whose MAC GenerateMac returns.
        public = (await call(kms[US].get_public_key, KeyId=ecc))["PublicKey"]
        tag = (await call(kms[EU].generate_mac, KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256"))["Mac"]
        private = [s for s in sealed if _private_key_of(s, public)]
        secret = [s for s in sealed if hmac.new(s, b"m", hashlib.sha256).digest() == tag]
        assert len(private) >= 1 and len(secret) >= 1, "the keys' material was not found among the sealed values"
        signature = (await call(kms[EU].sign, KeyId=ecc, Message=b"m", SigningAlgorithm="ECDSA_SHA_384"))["Signature"]
        verifier = serialization.load_der_public_key(public)
        assert isinstance(verifier, ec.EllipticCurvePublicKey)
        verifier.verify(signature, b"m", ec.ECDSA(hashes.SHA384()))  # the replica holds the same private key

        sent = [item for item in cluster.network.sent if item.dest == EU]
        for key_id in (ecc, mac):
            assert any(key_id.encode() in item.envelope for item in sent), f"{key_id} never crossed"
        scalar = _private_key_of(private[0], public)
        assert scalar is not None
        for value in (private[0], secret[0], scalar):
            for form_name, form in forms(value).items():
                for item in cluster.network.sent:
                    assert form not in item.envelope, f"key material as {form_name} in {item.source} -> {item.dest}"


def _private_key_of(value: bytes, public_der: bytes) -> bytes | None:
    """The private scalar if ``value`` is the PKCS#8 private key of ``public_der``, else None."""
    try:
        key = serialization.load_der_private_key(value, None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    mine = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.private_numbers().private_value.to_bytes(48, "big") if mine == public_der else None
