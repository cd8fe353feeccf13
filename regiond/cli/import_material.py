"""``regiond import-material``: import key material into an EXTERNAL-origin key, start to finish.

    regiond import-material --key KEY --material FILE (--cluster DIR/cluster.json --region R | --endpoint URL)
        [--wrapping-algorithm RSA_AES_KEY_WRAP_SHA_256] [--wrapping-key-spec RSA_3072]
        [--valid-to 2027-01-31T00:00:00Z] [--import-type NEW_KEY_MATERIAL|EXISTING_KEY_MATERIAL]
        [--key-material-id HEX] [--description TEXT]

FILE holds the key material in the form AWS imports it: the raw 32 bytes of a 256-bit
symmetric key, the raw bytes of an HMAC key, or an asymmetric private key as PKCS#8 (DER, or
PEM, which is converted to DER here; RSA keys need an RSA_AES wrapping algorithm, the
default). The server checks the material against the key's spec. The command does what the AWS
Developer Guide's import steps do, on the client: GetParametersForImport (a fresh wrapping
public key and an import token), wraps the material under the public key with
``regiond.crypto.import_wrap.wrap_key_material`` (the same algorithms the server opens), and
ImportKeyMaterial with the token, then prints ``{"KeyId", "KeyMaterialId", "KeyState"}`` as
JSON. Without ``--valid-to`` the material does not expire. The material never leaves this
process unwrapped and is never printed.

Calls are SigV4-signed by ``kmsclient.KmsClient`` (no boto3), pinned to one region: key
material is regional, so the call must not fail over. Credentials come from cluster.json with
``--cluster``, else from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. With ``--endpoint`` the
region is ``--region``, or the region of a key ARN given as ``--key``.

docs/ROTATION_AND_IMPORT.md shows the same flow with boto3 and ``cryptography`` for callers
who do not run regiond's tools.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from kmsclient.admin import credentials_from_env
from kmsclient.client import KmsClient
from kmsclient.errors import KmsClientError
from kmsclient.routing import Endpoint
from kmsclient.sigv4 import Credentials
from regiond.crypto import asymmetric, import_wrap, wrap
from regiond.crypto.import_wrap import WrappingAlgorithm, WrappingKeySpec

__all__ = ["add_import_parser", "cmd_import_material", "import_material"]

DEFAULT_ALGORITHM = WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256
DEFAULT_SPEC = WrappingKeySpec.RSA_3072


async def import_material(
    client: KmsClient,
    endpoint: Endpoint,
    key: str,
    material: bytes,
    *,
    algorithm: WrappingAlgorithm = DEFAULT_ALGORITHM,
    spec: WrappingKeySpec = DEFAULT_SPEC,
    valid_to: dt.datetime | None = None,
    import_type: str | None = None,
    key_material_id: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """GetParametersForImport -> wrap -> ImportKeyMaterial -> DescribeKey, all in ``endpoint``'s region."""
    params = await client.call_in(
        endpoint, "GetParametersForImport",
        {"KeyId": key, "WrappingAlgorithm": algorithm.value, "WrappingKeySpec": spec.value},
    )  # fmt: skip
    public_key = base64.b64decode(params["PublicKey"])
    encrypted = import_wrap.wrap_key_material(public_key, algorithm, material)
    request: dict[str, Any] = {
        "KeyId": key,
        "ImportToken": params["ImportToken"],
        "EncryptedKeyMaterial": base64.b64encode(encrypted).decode(),
    }
    if valid_to is None:
        request["ExpirationModel"] = "KEY_MATERIAL_DOES_NOT_EXPIRE"
    else:
        request["ExpirationModel"] = "KEY_MATERIAL_EXPIRES"
        request["ValidTo"] = valid_to.timestamp()
    for name, value in (("ImportType", import_type), ("KeyMaterialId", key_material_id),
                        ("KeyMaterialDescription", description)):  # fmt: skip
        if value is not None:
            request[name] = value
    imported = await client.call_in(endpoint, "ImportKeyMaterial", request)
    described = await client.call_in(endpoint, "DescribeKey", {"KeyId": key})
    return {
        "KeyId": imported["KeyId"],
        "KeyMaterialId": imported.get("KeyMaterialId", ""),
        "KeyState": described["KeyMetadata"]["KeyState"],
    }


def _read_material(path: str) -> bytes:
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            data = asymmetric.pkcs8_der_from_pem(data)
        except asymmetric.MaterialError as exc:
            raise SystemExit(f"regiond import-material: {path}: {exc}") from None
    if not 1 <= len(data) <= wrap.MAX_MATERIAL_BYTES:
        raise SystemExit(
            f"regiond import-material: {path} must hold 1 to {wrap.MAX_MATERIAL_BYTES} bytes of key material, "
            f"not {len(data)}"
        )
    return data


def _region_of(key: str) -> str | None:
    parts = key.split(":")
    return parts[3] if key.startswith("arn:") and len(parts) > 3 else None


def _target(args: argparse.Namespace) -> tuple[Endpoint, Credentials]:
    if args.cluster:
        cluster = json.loads(Path(args.cluster).read_text())
        region = args.region or _region_of(args.key)
        if region is None or region not in cluster["regions"]:
            known = ", ".join(cluster["regions"])
            raise SystemExit(f"regiond import-material: --region must be one of the cluster's regions ({known})")
        c = cluster["credentials"]
        return Endpoint(region, cluster["regions"][region]["endpoint"]), Credentials(
            c["access_key_id"], c["secret_access_key"]
        )
    if args.endpoint:
        region = args.region or _region_of(args.key)
        if region is None:
            raise SystemExit("regiond import-material: --endpoint needs --region (or a key ARN as --key)")
        try:
            credentials = credentials_from_env()
        except KmsClientError as exc:
            raise SystemExit(f"regiond import-material: {exc}") from None
        return Endpoint(region, args.endpoint.rstrip("/")), credentials
    raise SystemExit("regiond import-material: give --cluster (with --region) or --endpoint")


def _valid_to(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(
            f"regiond import-material: --valid-to must be an ISO 8601 date and time, not {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


async def _run(args: argparse.Namespace, material: bytes) -> dict[str, Any]:
    endpoint, credentials = _target(args)
    async with KmsClient([endpoint], credentials) as client:
        return await import_material(
            client, endpoint, args.key, material,
            algorithm=WrappingAlgorithm(args.wrapping_algorithm), spec=WrappingKeySpec(args.wrapping_key_spec),
            valid_to=_valid_to(args.valid_to), import_type=args.import_type, key_material_id=args.key_material_id,
            description=args.description,
        )  # fmt: skip


def cmd_import_material(args: argparse.Namespace) -> int:
    material = _read_material(args.material)
    try:
        out = asyncio.run(_run(args, material))
    except KmsClientError as exc:
        print(f"regiond import-material: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def add_import_parser(sub: Any) -> None:
    p = sub.add_parser("import-material", help="import key material into an EXTERNAL-origin key")
    p.add_argument("--key", required=True, help="key id or key ARN of a key created with Origin EXTERNAL")
    p.add_argument(
        "--material", required=True,
        help="file with the key material: 32 raw bytes (symmetric), the HMAC key, or a PKCS#8 private key (DER or PEM)",
    )  # fmt: skip
    p.add_argument("--cluster", help="cluster.json written by `regiond dev`")
    p.add_argument("--endpoint", help="a node's URL (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    p.add_argument("--region", help="the key's region")
    p.add_argument(
        "--wrapping-algorithm", default=DEFAULT_ALGORITHM.value, choices=[a.value for a in WrappingAlgorithm]
    )
    p.add_argument("--wrapping-key-spec", default=DEFAULT_SPEC.value, choices=[s.value for s in WrappingKeySpec])
    p.add_argument("--valid-to", help="ISO 8601 expiry of the material (default: it does not expire)")
    p.add_argument("--import-type", choices=["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"])
    p.add_argument("--key-material-id", help="with EXISTING_KEY_MATERIAL: the id the material must have")
    p.add_argument("--description", help="KeyMaterialDescription")
    p.set_defaults(func=cmd_import_material)
