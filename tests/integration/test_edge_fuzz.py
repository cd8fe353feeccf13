"""Properties of the protocol edge, checked with generated requests against a real node
(issue 13, hardening): real HTTP over loopback, real SigV4, real PostgreSQL.

For every request, whatever its headers, bytes or body:
- the answer is never a 5xx;
- nothing is logged with a traceback (regiond's structlog events and the stdlib loggers aiohttp uses);
- a refusal that regiond gives carries ``x-amzn-RequestId`` and an AWS error code: an error
  shape of the model or a common AWS error (``edge_fuzz.KNOWN_ERRORS``);
- only HTTP that is not HTTP (aiohttp's own parser refuses it before any handler: NUL in a
  header, a repeated Content-Length, a malformed Content-Length ...) is answered by aiohttp,
  with a bare 400, and that too without a traceback.

Requests are generated (a) from botocore's KMS model, one body per operation, signed properly
so they reach validation and the handlers, and (b) by mutating the header lines and bytes of
a valid request, then signing the mutated request (so the mutation reaches past
authentication) or not (so it meets the verifier).

Deterministic (``derandomize``, no example database written). The default profile keeps the
suite to seconds per test; ``REGIONKMS_FUZZ_PROFILE=long`` runs many more examples by hand:

    REGIONKMS_FUZZ_PROFILE=long .venv/bin/python -m pytest -p no:cacheprovider tests/integration/test_edge_fuzz.py
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import edge_fuzz as ef
from tests.support.aws import aws_call
from tests.support.cluster import ACCOUNT_ID, Identity, Node, NodeFactory

LONG = os.environ.get("REGIONKMS_FUZZ_PROFILE") == "long"
SETTINGS = settings(
    max_examples=5000 if LONG else 60,
    derandomize=not LONG,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
pytestmark = pytest.mark.timeout(3600 if LONG else 300)


class LogWatch(logging.Handler):
    """Every stdlib log record (aiohttp's loggers included), kept for the checks."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Edge:
    """The node under test, what it holds, and the checks every answer must pass."""

    def __init__(
        self, node: Node, admin: Identity, realm: ef.Realm, events: list[MutableMapping[str, Any]], watch: LogWatch
    ) -> None:
        self.node = node
        self.admin = admin
        self.realm = realm
        self.signer = ef.Signer(admin.access_key_id, admin.secret_access_key, node.region,
                                urllib.parse.urlsplit(node.endpoint).netloc)  # fmt: skip
        self._events = events
        self._watch = watch

    def send(self, head: list[tuple[bytes, bytes]], body: bytes, *, operation: str | None) -> ef.Response:
        seen_events, seen_records = len(self._events), len(self._watch.records)
        resp = ef.send(self.node.endpoint, head, body)
        self.check(resp, operation)
        self.check_logs(seen_events, seen_records)
        return resp

    @staticmethod
    def check(resp: ef.Response, operation: str | None) -> None:
        assert resp.status < 500, (resp.status, resp.body[:300])
        if "x-amzn-requestid" not in resp.headers:
            # aiohttp's parser refused it: not an HTTP request regiond ever saw (refused_http.py).
            assert resp.status == 400, (resp.status, resp.body[:300])
            assert resp.headers.get("content-type", "").startswith("text/plain"), resp.headers
            return
        if resp.status == 200 and not resp.body:
            return  # an operation with no output (DeleteAlias, ...), as AWS answers it
        payload = resp.json()
        assert isinstance(payload, dict), resp.body[:300]
        if resp.status == 200:
            assert "__type" not in payload
            return
        code = payload.get("__type")
        assert code in ef.KNOWN_ERRORS, (operation, code, payload.get("message"))
        assert isinstance(payload.get("message"), str)

    def check_logs(self, seen_events: int, seen_records: int) -> None:
        for event in self._events[seen_events:]:
            assert not event.get("exc_info"), event
            assert event.get("log_level") not in ("error", "critical", "exception"), event
        for record in self._watch.records[seen_records:]:
            assert record.exc_info is None, (record.name, record.getMessage())
            assert record.levelno < logging.ERROR, (record.name, record.getMessage())


async def _realm(node: Node, admin: Identity) -> ef.Realm:
    """Keys in several states (enabled with an alias, disabled, waiting for imported material,
    multi-Region) and of other types (RSA signing and encryption, HMAC, ECC key agreement), a
    grant and a ciphertext: what generated requests name to get past lookups."""
    kms = node.client(admin)
    symmetric = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms.create_alias, AliasName="alias/fuzz", TargetKeyId=symmetric)
    disabled = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms.disable_key, KeyId=disabled)
    external = (await aws_call(kms.create_key, Origin="EXTERNAL"))["KeyMetadata"]["KeyId"]
    multi_region = (await aws_call(kms.create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
    others = [
        (await aws_call(kms.create_key, KeySpec=spec, KeyUsage=usage))["KeyMetadata"]["KeyId"]
        for spec, usage in (("RSA_2048", "SIGN_VERIFY"), ("RSA_2048", "ENCRYPT_DECRYPT"),
                            ("HMAC_256", "GENERATE_VERIFY_MAC"), ("ECC_NIST_P256", "KEY_AGREEMENT"))
    ]  # fmt: skip
    blob = (await aws_call(kms.encrypt, KeyId=symmetric, Plaintext=b"fuzz", EncryptionContext={"a": "b"}))
    grant = await aws_call(kms.create_grant, KeyId=symmetric, GranteePrincipal=admin.arn, Operations=["Decrypt"])
    return ef.Realm(
        key_ids=(symmetric, disabled, external, multi_region, *others, "00000000-0000-0000-0000-000000000000"),
        aliases=("alias/fuzz", "alias/missing"),
        ciphertexts=(blob["CiphertextBlob"], base64.b64decode("AQID")),
        grant_ids=(grant["GrantId"],),
        grant_tokens=(grant["GrantToken"],),
        account_id=ACCOUNT_ID,
        region=node.region,
    )


@pytest.fixture
def log_watch() -> Iterator[LogWatch]:
    watch = LogWatch()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        root.setLevel(previous)


async def _run(nodes: NodeFactory, watch: LogWatch, body: Callable[[Edge], None]) -> None:
    node = await nodes.start(auth_failure_burst=0)  # throttling would turn every later refusal into one code
    admin = await nodes.identity(node)
    realm = await _realm(node, admin)
    with structlog.testing.capture_logs() as events:
        edge = Edge(node, admin, realm, events, watch)
        await asyncio.to_thread(body, edge)


# --- (a) bodies from the model ---------------------------------------------------------------


@st.composite
def _model_request(draw: st.DrawFn, realm: ef.Realm) -> tuple[str, bytes]:
    operation = draw(st.sampled_from(ef.KMS_OPERATIONS))
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return operation, draw(ef.RAW_BODIES)
    body = ef.encode_json(draw(ef.request_body(operation, realm)))
    return operation, body


async def test_model_driven_bodies_signed_properly(nodes: NodeFactory, log_watch: LogWatch) -> None:
    def fuzz(edge: Edge) -> None:
        @SETTINGS
        @given(request=_model_request(edge.realm))
        def one(request: tuple[str, bytes]) -> None:
            operation, body = request
            head = edge.signer.sign(ef.base_head(f"TrentService.{operation}"), body)
            edge.send(head, body, operation=operation)

        one()

    await _run(nodes, log_watch, fuzz)


@st.composite
def _iam_request(draw: st.DrawFn) -> tuple[str, bytes]:
    operation = draw(st.sampled_from(ef.IAM_OPERATIONS))
    params = draw(st.dictionaries(
        st.sampled_from(ef.IAM_MEMBERS),
        st.one_of(st.text(max_size=40), st.sampled_from(["admin", "Active", "Inactive", "{}", '{"Statement": []}']),
                  st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)),
        max_size=4,
    ))  # fmt: skip
    return operation, ef.encode_json(params)


async def test_iam_admin_bodies_signed_properly(nodes: NodeFactory, log_watch: LogWatch) -> None:
    def fuzz(edge: Edge) -> None:
        @SETTINGS
        @given(request=_iam_request())
        def one(request: tuple[str, bytes]) -> None:
            operation, body = request
            head = edge.signer.sign(ef.base_head(f"RegionKmsIam.{operation}"), body)
            edge.send(head, body, operation=None)

        one()

    await _run(nodes, log_watch, fuzz)


# --- (b) header and byte mutations ------------------------------------------------------------


def _operation_of(head: list[tuple[bytes, bytes]]) -> str | None:
    """The operation the request names when it names exactly one (for the error-code check)."""
    targets = [v for n, v in head if n.lower() == b"x-amz-target"]
    if len(targets) != 1:
        return None
    prefix, _, operation = targets[0].decode("latin-1").partition(".")
    return operation if prefix == "TrentService" else None


@st.composite
def _mutated_request(draw: st.DrawFn, edge: Edge) -> tuple[list[tuple[bytes, bytes]], bytes]:
    operation = draw(st.sampled_from(["ListKeys", "DescribeKey", "Encrypt", "DisableKey", "GenerateRandom"]))
    body = ef.encode_json({"KeyId": edge.realm.key_ids[0], "Plaintext": "AAAA"} if operation != "ListKeys" else {})
    head = ef.base_head(f"TrentService.{operation}")
    sign_after = draw(st.booleans())
    if not sign_after:
        head = edge.signer.sign(head, body)
    for _ in range(draw(st.integers(1, 4))):
        head = draw(ef.header_mutation(head))
    if draw(st.integers(0, 5)) == 0:
        head = [*head, (b"Authorization", draw(ef.authorization_text(edge.admin.access_key_id, edge.node.region)))]
    if sign_after:
        head = edge.signer.sign(head, body)
    if draw(st.integers(0, 7)) == 0:
        body = draw(st.one_of(ef.RAW_BODIES, st.just(body[: len(body) // 2])))
        if sign_after and draw(st.booleans()):
            head = edge.signer.sign([(n, v) for n, v in head if n.lower() != b"authorization"], body)
    if draw(st.integers(0, 7)) == 0:
        # A Content-Length aiohttp must refuse, or one that leaves bytes after the body; never one
        # promising more than is sent (a stalled body is the request timeouts' business).
        fits = st.tuples(st.integers(0, len(body)), st.sampled_from(["{}", " {}", "{} ", "+{}", "0{}"]))
        value = draw(st.one_of(ef.CONTENT_LENGTHS, fits.map(lambda f: f[1].format(f[0]).encode())))
        head = [*head, (b"Content-Length", value)]
    return head, body


async def test_header_and_byte_mutations(nodes: NodeFactory, log_watch: LogWatch) -> None:
    def fuzz(edge: Edge) -> None:
        @SETTINGS
        @given(data=st.data())
        def one(data: st.DataObject) -> None:
            head, body = data.draw(_mutated_request(edge))
            edge.send(head, body, operation=_operation_of(head))

        one()

    await _run(nodes, log_watch, fuzz)


async def test_badly_signed_and_unsigned_requests(nodes: NodeFactory, log_watch: LogWatch) -> None:
    def fuzz(edge: Edge) -> None:
        @SETTINGS
        @given(data=st.data())
        def one(data: st.DataObject) -> None:
            body = b"{}"
            head = ef.base_head("TrentService.ListKeys")
            head = [(b"Host", edge.signer.host.encode()), *head]
            if data.draw(st.booleans()):
                head.append((b"X-Amz-Date", data.draw(st.sampled_from([b"20000101T000000Z", b"garbage", b""]))))
            else:
                head = [(n, v) for n, v in edge.signer.sign(head, body) if n != b"Authorization"]
            if data.draw(st.booleans()):
                auth = data.draw(ef.authorization_text(edge.admin.access_key_id, edge.node.region))
                head.append((b"Authorization", auth))
            edge.send(head, body, operation="ListKeys")

        one()

    await _run(nodes, log_watch, fuzz)
