"""Hand-made signed requests, for the protocol errors boto3 would never send."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import aiohttp

from kmsclient.sigv4 import Credentials, sign_headers
from tests.support.cluster import Identity
from tests.support.secret_scan import RECORDER, harvest_json


async def signed_post(
    endpoint: str,
    region: str,
    identity: Identity | None,
    target: str | None,
    body: bytes,
    *,
    now: dt.datetime | None = None,
    scope_region: str | None = None,
    secret: str | None = None,
    extra_headers: dict[str, str] | None = None,
    unsigned_headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/x-amz-json-1.1", **(extra_headers or {})}
    if target is not None:
        headers["X-Amz-Target"] = target
    if identity is not None:
        creds = Credentials(identity.access_key_id, secret or identity.secret_access_key)
        headers = sign_headers(
            credentials=creds,
            method="POST",
            url=endpoint + "/",
            headers=headers,
            body=body,
            region=scope_region or region,
            service="kms",
            now=now or dt.datetime.now(dt.UTC),
        )
    headers.pop("Host", None)
    headers.update(unsigned_headers or {})  # sent, but not covered by the signature
    async with (
        aiohttp.ClientSession() as session,
        session.post(endpoint + "/", data=io.BytesIO(body), headers=headers) as resp,
    ):
        payload = await resp.json(content_type=None)
    harvest_json(body, "raw request")
    RECORDER.harvest(payload, f"{target} response")
    if isinstance(payload, dict) and "message" in payload:
        RECORDER.add(f"error message of {target}", str(payload["message"]))
    return resp.status, payload, dict(resp.headers)


class RawResponse:
    """An HTTP response read off a socket: status, headers (names lower-cased, last wins) and JSON body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        import json

        return json.loads(self.body) if self.body else None


async def raw_request(endpoint: str, head: list[tuple[bytes, bytes]], body: bytes, *, method: bytes = b"POST",
                      target: bytes = b"/") -> RawResponse:  # fmt: skip
    """Send exactly these header lines (repeats, order and case kept; Content-Length added if absent)
    over a fresh connection, as no HTTP client library would, and read the response."""
    import asyncio
    import urllib.parse

    url = urllib.parse.urlsplit(endpoint)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        lines = [method + b" " + target + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in head]
        if not any(name.lower() == b"content-length" for name, _ in head):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        lines.append(b"Connection: close")
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        payload = _dechunk(payload)
    return RawResponse(int(status_line.split()[1]), headers, payload)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def capture_boto3_request(client: Any, operation: str) -> dict[str, Any]:
    """Register a hook that keeps the exact headers and body boto3 sends for ``operation``
    (after signing), and let the call go through."""
    captured: dict[str, Any] = {}

    def keep(request: Any, **_kwargs: Any) -> None:
        items = request.headers.items()
        captured["headers"] = [(k.encode(), v.encode() if isinstance(v, str) else v) for k, v in items]
        body = request.body
        captured["body"] = body.encode() if isinstance(body, str) else bytes(body or b"")
        captured["url"] = request.url

    client.meta.events.register(f"before-send.kms.{operation}", keep)
    return captured


def sign_pairs(
    node: Any,
    identity: Identity,
    pairs: list[tuple[str, str]],
    body: bytes,
    *,
    now: dt.datetime | None = None,
    signed: list[str] | None = None,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Sign header pairs as SigV4 defines it for repeated headers (values joined with commas) and
    return the header lines to send with ``raw_request``: what a correct signer of an odd request sends.
    A value may carry bytes that are not UTF-8 as surrogate escapes (``"\\udcff"`` is the byte 0xff)."""
    import urllib.parse

    from kmsclient import sigv4 as core

    stamp = core.amz_date(now or dt.datetime.now(dt.UTC))
    host = urllib.parse.urlsplit(node.endpoint).netloc
    all_pairs = [("Host", host), ("X-Amz-Date", stamp), *pairs]
    grouped: dict[str, list[str]] = {}  # written out here, not taken from the code under test
    for name, value in all_pairs:
        grouped.setdefault(name.lower(), []).append(" ".join(value.split()))
    names = sorted(grouped) if signed is None else signed
    lines = "".join(f"{name}:{','.join(grouped[name])}\n" for name in names)
    canonical = f"POST\n/\n\n{lines}\n{';'.join(names)}\n{core.sha256_hex(body)}"
    scope = core.scope(stamp[:8], node.region, "kms")
    key = core.signing_key(identity.secret_access_key, stamp[:8], node.region, "kms")
    # The bytes on the wire are what is signed: odd bytes travel as surrogate escapes here.
    digest = core.sha256_hex(canonical.encode("utf-8", "surrogateescape"))
    signature = core.signature(key, f"{core.ALGORITHM}\n{stamp}\n{scope}\n{digest}")
    authorization = (
        f"{core.ALGORITHM} Credential={identity.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    head = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in all_pairs]
    return [*head, (b"Authorization", authorization.encode())], body
