"""GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.

A fresh key pair of ``KeyPairSpec`` is made outside any KMS key (``crypto.asymmetric``); its
private key (PKCS#8 DER, RFC 5208) is sealed under a symmetric encryption KMS key exactly as a
data key is (``CryptoService.seal_new``: same blob format, same encryption context rule, same
checks and order), and the public key is returned as DER SubjectPublicKeyInfo. As the model
says, "the KMS rule that restricts the use of asymmetric RSA and SM2 KMS keys ... [is] not
effective on data key pairs": any spec of ``DataKeyPairSpec`` that regionkms makes is allowed
(SM2 and ML_KEM_512 are refused by ``domain.keyspec``). The KMS key must be a symmetric
encryption key; any other is InvalidKeyUsageException. The private key is generated only after
every check, off the event loop (RSA-4096 takes about a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import NamedTuple

from regiond.crypto import asymmetric
from regiond.domain.key import KeySpec
from regiond.domain.keyspec import require_data_key_pair_spec
from regiond.service.authz import Requester
from regiond.service.cryptops import CryptoService, Encrypted

__all__ = ["DataKeyPair", "DataKeyPairService"]


class DataKeyPair(NamedTuple):
    private_plaintext: bytes  # the caller drops it for ...WithoutPlaintext
    public_key: bytes
    spec: KeySpec
    sealed: Encrypted


class DataKeyPairService:
    def __init__(self, crypto: CryptoService) -> None:
        self._crypto = crypto

    async def generate(
        self, who: Requester, key_param: str, pair_spec: str, context: Mapping[str, str] | None,
        *, with_plaintext: bool, dry_run: bool = False,
    ) -> DataKeyPair:  # fmt: skip
        operation = "GenerateDataKeyPair" if with_plaintext else "GenerateDataKeyPairWithoutPlaintext"
        spec = require_data_key_pair_spec(pair_spec)
        pair: list[asymmetric.KeyPair] = []

        async def make() -> bytes:
            made = await asyncio.to_thread(asymmetric.generate_pair, spec)
            pair.append(made)
            return made.private.material()

        private, sealed = await self._crypto.seal_new(
            who, key_param, context, operation=operation, make=make, dry_run=dry_run,
            values={"kms:DataKeyPairSpec": (spec.value,)},  # conditions-kms: kms:DataKeyPairSpec
        )  # fmt: skip
        return DataKeyPair(private, pair[0].public_der, spec, sealed)
