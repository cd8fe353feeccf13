"""Workloads: which KMS calls a run replays, built from keys and ciphertexts made on that server.

Every server gets the same workloads made from its own keys (``prepare``): CreateKey and
Encrypt through its API, so Decrypt and ReEncrypt replay ciphertexts that server made.
A workload is a list of ``(X-Amz-Target, JSON body)`` calls; the load generator signs
them (``presign_all``) right before the run and picks one at random per request.

    encrypt_1k / encrypt_4k   Encrypt of random 1 KiB / 4 KiB plaintexts
    decrypt                   Decrypt (no KeyId) of 1 KiB ciphertexts
    generate_data_key         GenerateDataKey, KeySpec AES_256
    re_encrypt                ReEncrypt from key 1 to key 2
    mix                       70 % Encrypt 1 KiB, 20 % Decrypt, 10 % GenerateDataKey
    encrypt_1k over N keys    Encrypt 1 KiB, one call per key of a large key set (key scaling)
    edge                      RegionKmsIam.GetCallerIdentity: SigV4, routing, JSON and audit with no
                              key and no crypto, the protocol edge's share of an Encrypt
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from benchmarks.loadgen import Endpoint, presign_all, send_all

TARGET = "TrentService."
VARIANTS = 64  # distinct plaintexts / ciphertexts per workload
SETUP_CONCURRENCY = 32
SIGN_BATCH = 5_000  # requests signed at once while creating many keys (signatures live 15 min)

Call = tuple[str, bytes]


class SetupError(RuntimeError):
    """A server refused a set-up call (key creation, the Encrypt that makes ciphertexts)."""


@dataclass
class Fixture:
    """What the workloads of one server are made from."""

    key_ids: list[str]
    ciphertexts: list[str]  # base64 blobs of 1 KiB plaintexts under key_ids[0]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _call(operation: str, params: dict[str, object]) -> Call:
    return TARGET + operation, orjson.dumps(params)


def _send(endpoint: Endpoint, calls: Sequence[Call], what: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for start in range(0, len(calls), SIGN_BATCH):
        batch = presign_all(endpoint, calls[start : start + SIGN_BATCH])
        answers = asyncio.run(send_all(endpoint.host, endpoint.port, batch, concurrency=SETUP_CONCURRENCY))
        for status, body in answers:
            if status != 200:
                raise SetupError(f"{what} failed with HTTP {status}: {body[:300]!r}")
            out.append(orjson.loads(body))
    return out


def create_keys(endpoint: Endpoint, count: int) -> list[str]:
    answers = _send(endpoint, [_call("CreateKey", {"Description": "benchmark"})] * count, "CreateKey")
    return [str(a["KeyMetadata"]["KeyId"]) for a in answers]  # type: ignore[index]


def prepare(endpoint: Endpoint, *, keys: int = 2) -> Fixture:
    key_ids = create_keys(endpoint, keys)
    calls = [_call("Encrypt", {"KeyId": key_ids[0], "Plaintext": _b64(os.urandom(1024))}) for _ in range(VARIANTS)]
    blobs = [str(a["CiphertextBlob"]) for a in _send(endpoint, calls, "Encrypt")]
    return Fixture(key_ids, blobs)


def encrypt(fx: Fixture, size: int, key_ids: Sequence[str] | None = None) -> list[Call]:
    keys = key_ids or fx.key_ids[:1]
    n = max(VARIANTS, len(keys))
    return [_call("Encrypt", {"KeyId": keys[i % len(keys)], "Plaintext": _b64(os.urandom(size))}) for i in range(n)]


def decrypt(fx: Fixture) -> list[Call]:
    return [_call("Decrypt", {"CiphertextBlob": blob}) for blob in fx.ciphertexts]


def generate_data_key(fx: Fixture) -> list[Call]:
    return [_call("GenerateDataKey", {"KeyId": fx.key_ids[0], "KeySpec": "AES_256"})] * VARIANTS


def re_encrypt(fx: Fixture) -> list[Call]:
    dest = fx.key_ids[1 % len(fx.key_ids)]
    return [_call("ReEncrypt", {"CiphertextBlob": blob, "DestinationKeyId": dest}) for blob in fx.ciphertexts]


def mix(fx: Fixture) -> list[Call]:
    """70/20/10 Encrypt 1 KiB / Decrypt / GenerateDataKey, in 100 calls picked at random per request."""
    enc, dec, gdk = encrypt(fx, 1024), decrypt(fx), generate_data_key(fx)
    return [enc[i % len(enc)] for i in range(70)] + [dec[i % len(dec)] for i in range(20)] + gdk[:10]


def edge(_fx: Fixture) -> list[Call]:
    return [("RegionKmsIam.GetCallerIdentity", b"{}")]


WORKLOADS: dict[str, Callable[[Fixture], list[Call]]] = {
    "encrypt_1k": lambda fx: encrypt(fx, 1024),
    "encrypt_4k": lambda fx: encrypt(fx, 4096),
    "decrypt": decrypt,
    "generate_data_key": generate_data_key,
    "re_encrypt": re_encrypt,
    "mix": mix,
    "edge": edge,
}
