"""An in-memory, multi-region KMS behind kmsclient's ``Transport`` seam (the raft ``inmem_*`` idea).

It is a real implementation of the few operations the client SDK makes (GenerateDataKey, Encrypt,
Decrypt, DescribeKey, CreateKey) with real AES-GCM ciphertexts bound to the key and the encryption
context, so unit tests exercise routing, retries, keyrings and CMMs with no server. Regions hold
their own keys; a multi-region key exists in the regions it was replicated to. Faults: a region can
be ``down`` (connection refused: the request never left), ``lost`` (the request arrived, the answer
never came), ``throttled`` a number of times, or slow (``latency_s``). ``calls`` records every
(region, operation, KeyId, signed-for region) that reached a region.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsclient.client import KmsClient
from kmsclient.errors import TransportError
from kmsclient.message import serialize_context
from kmsclient.routing import Endpoint
from kmsclient.sigv4 import Credentials

ACCOUNT = "111122223333"
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/kms/aws4_request")


@dataclass
class Call:
    region: str
    operation: str
    key_id: str | None
    signed_region: str


@dataclass
class FakeKms:
    regions: tuple[str, ...]
    keys: dict[str, dict[str, bytes]] = field(default_factory=dict)  # region -> key id -> material
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # region -> alias -> key id
    down: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    throttled: dict[str, int] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)
    disabled: set[tuple[str, str]] = field(default_factory=set)  # (region, key id): disabled there only
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        for r in self.regions:
            self.keys.setdefault(r, {})
            self.aliases.setdefault(r, {})

    def url(self, region: str) -> str:
        return f"http://{region}.kms.test"

    def create_key(self, region: str, *, multi_region: bool = False, replicas: tuple[str, ...] = ()) -> str:
        key_id = ("mrk-" + os.urandom(16).hex()) if multi_region else str(_uuid())
        material = AESGCM.generate_key(bit_length=256)
        for r in (region, *replicas):
            self.keys[r][key_id] = material
        return f"arn:aws:kms:{region}:{ACCOUNT}:key/{key_id}"

    def alias(self, region: str, name: str, key_arn: str) -> None:
        self.aliases[region][name] = key_arn.rsplit("/", 1)[1]

    def client(self, home_region: str | None = None, **kwargs: Any) -> KmsClient:
        endpoints = [Endpoint(r, self.url(r)) for r in self.regions]
        credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        return KmsClient(endpoints, credentials, home_region=home_region or self.regions[0], transport=self, **kwargs)

    def operations(self, region: str | None = None) -> list[str]:
        return [c.operation for c in self.calls if region is None or c.region == region]

    # --- the Transport protocol ---------------------------------------------------------------

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> tuple[int, bytes]:
        region = url.split("//", 1)[1].split(".", 1)[0]
        if region in self.down:
            raise TransportError(f"cannot connect to {url}", sent=False)
        if self.latency_s.get(region):
            await asyncio.sleep(self.latency_s[region])
        if method == "GET":
            return 200, b"ok"
        target = headers["X-Amz-Target"].split(".", 1)[1]
        params = json.loads(body)
        scope = _SCOPE.search(headers["Authorization"])
        self.calls.append(Call(region, target, params.get("KeyId"), scope.group(1) if scope else "?"))
        if region in self.lost:
            raise TransportError(f"no answer from {url}", sent=True)
        if self.throttled.get(region):
            self.throttled[region] -= 1
            return _error(400, "ThrottlingException", "Rate exceeded")
        try:
            return 200, json.dumps(getattr(self, "_op_" + target)(region, params)).encode()
        except _Fail as fail:
            return _error(400, fail.code, fail.message)

    async def close(self) -> None:
        return None

    # --- operations ---------------------------------------------------------------------------

    def _resolve(self, region: str, key_id: str) -> str:
        if key_id.startswith("arn:"):
            parts = key_id.split(":", 5)
            if parts[3] != region:
                raise _Fail("NotFoundException", f"Key '{key_id}' does not exist")
            key_id = parts[5] if parts[5].startswith("alias/") else parts[5].split("/", 1)[1]
        if key_id.startswith("alias/"):
            if key_id not in self.aliases[region]:
                raise _Fail("NotFoundException", f"Alias {key_id} is not found")
            key_id = self.aliases[region][key_id]
        if key_id not in self.keys[region]:
            raise _Fail("NotFoundException", f"Key '{key_id}' does not exist")
        if (region, key_id) in self.disabled:
            raise _Fail("DisabledException", f"{self._arn(region, key_id)} is disabled.")
        return key_id

    def _arn(self, region: str, key_id: str) -> str:
        return f"arn:aws:kms:{region}:{ACCOUNT}:key/{key_id}"

    def _seal(self, region: str, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        nonce = os.urandom(12)
        kid = key_id.encode()
        sealed = AESGCM(self.keys[region][key_id]).encrypt(nonce, plaintext, serialize_context(context))
        return bytes([len(kid)]) + kid + nonce + sealed

    def _op_GenerateDataKey(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        key_id = self._resolve(region, p["KeyId"])
        data_key = os.urandom(int(p.get("NumberOfBytes", 32)))
        blob = self._seal(region, key_id, data_key, p.get("EncryptionContext") or {})
        return {"KeyId": self._arn(region, key_id), "Plaintext": _b64(data_key), "CiphertextBlob": _b64(blob)}

    def _op_Encrypt(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        key_id = self._resolve(region, p["KeyId"])
        blob = self._seal(region, key_id, base64.b64decode(p["Plaintext"]), p.get("EncryptionContext") or {})
        return {"KeyId": self._arn(region, key_id), "CiphertextBlob": _b64(blob)}

    def _op_Decrypt(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        blob = base64.b64decode(p["CiphertextBlob"])
        n = blob[0]
        key_id = blob[1 : 1 + n].decode()
        if key_id not in self.keys[region]:
            raise _Fail("NotFoundException", f"Key '{key_id}' does not exist")
        if "KeyId" in p and self._resolve(region, p["KeyId"]) != key_id:
            raise _Fail("IncorrectKeyException", "The key ID in the request does not identify the key")
        try:
            plain = AESGCM(self.keys[region][key_id]).decrypt(
                blob[1 + n : 13 + n], blob[13 + n :], serialize_context(p.get("EncryptionContext") or {})
            )
        except InvalidTag:
            raise _Fail("InvalidCiphertextException", "") from None
        return {"KeyId": self._arn(region, key_id), "Plaintext": _b64(plain)}

    def _op_DescribeKey(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        key_id = self._resolve(region, p["KeyId"])
        return {"KeyMetadata": {"KeyId": key_id, "Arn": self._arn(region, key_id)}}

    def _op_CreateKey(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        arn = self.create_key(region, multi_region=bool(p.get("MultiRegion")))
        return {"KeyMetadata": {"KeyId": arn.rsplit("/", 1)[1], "Arn": arn}}


class _Fail(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"__type": code, "message": message}).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())
