"""The hot path's memos and shortcuts give exactly what the plain computation gives."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path

import pytest
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from kmsclient import sigv4 as core
from regiond import randomids
from regiond.audit import events
from regiond.calls import CallRecord, utc_second_text
from regiond.domain import ciphertext, ids
from regiond.domain.principal import Principal, PrincipalKind
from regiond.errors import IncompleteSignature, InvalidSignatureException, KmsError
from regiond.protocol import routes, sigv4
from regiond.service import keys as keys_service

AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261129/us-east-1/kms/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
)


def _plain_parse(headers: dict[str, str]) -> sigv4.ParsedAuthorization | type[KmsError]:
    view = sigv4.HeaderView.of(headers)
    try:
        return sigv4._parse(view.get("authorization"), view.get("x-amz-date"))
    except KmsError as exc:
        return type(exc)


def _memo_parse(headers: dict[str, str]) -> sigv4.ParsedAuthorization | type[KmsError]:
    try:
        return sigv4.parse(sigv4.HeaderView.of(headers))
    except KmsError as exc:
        return type(exc)


@pytest.mark.parametrize(
    "authorization",
    [
        AUTH + "ab" * 32,
        AUTH + "cd" * 32,  # same text before the signature: served from the memo
        AUTH + "ab" * 32 + "  ",  # trailing white space after the signature
        AUTH + " ab",  # leading white space is kept, as the full parse keeps it
        AUTH + "a=b",
        AUTH,  # empty signature
        AUTH + "ab, Extra=1",  # signature not last
        AUTH.replace("SignedHeaders=content-type;host;", "SignedHeaders=content-type;") + "ab",  # no host
        AUTH.replace("aws4_request", "aws4") + "ab",
        "AWS4-HMAC-SHA256, Signature=ab",  # no space after the algorithm
        "AWS4-HMAC-SHA256 Signature=x, Signature=ab",
        "Other Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=ab",
    ],
)
def test_parse_memo_matches_full_parse(authorization: str) -> None:
    for amz_date in ("20261129T120000Z", ""):
        headers = {"Authorization": authorization, "X-Amz-Date": amz_date}
        for _ in range(2):  # the second call may be served from the memo
            assert _memo_parse(headers) == _plain_parse(headers)


def test_parse_memo_takes_each_request_s_signature_and_date() -> None:
    first = sigv4.parse(sigv4.HeaderView.of({"Authorization": AUTH + "11" * 32, "X-Amz-Date": "20261129T120000Z"}))
    second = sigv4.parse(sigv4.HeaderView.of({"Authorization": AUTH + "22" * 32, "X-Amz-Date": "20261129T120001Z"}))
    assert (first.signature, first.amz_date) == ("11" * 32, "20261129T120000Z")
    assert (second.signature, second.amz_date) == ("22" * 32, "20261129T120001Z")
    assert second.signed_headers == ("content-type", "host", "x-amz-date", "x-amz-target")
    assert second.signed_names == "content-type;host;x-amz-date;x-amz-target"


def test_bad_amz_date_is_refused_every_time() -> None:
    auth = sigv4.parse(sigv4.HeaderView.of({"Authorization": AUTH + "ab", "X-Amz-Date": "2026-11-29T12:00:00Z"}))
    for _ in range(2):
        with pytest.raises(IncompleteSignature):
            sigv4.check_scope(auth, region="us-east-1", now=dt.datetime.now(dt.UTC), max_skew_s=900)


@pytest.mark.parametrize(
    "pairs",
    [
        [("Host", "h"), ("Content-Type", " a  b "), ("X-Amz-Date", "d"), ("X-Amz-Target", "t")],
        [("host", "h"), ("CONTENT-TYPE", "a"), ("x-amz-date", "1"), ("X-Amz-Date", "2"), ("X-Amz-Target", "t")],
        [("Host", "h"), ("Content-Type", "a\tb"), ("X-Amz-Date", "d")],  # x-amz-target missing
        [("Host", "h"), ("X-Amz-Target", " a "), ("x-amz-target", "b  c"), ("X-AMZ-TARGET", "")],
    ],
)
def test_server_header_view_gives_the_generic_canonical_values(pairs: list[tuple[str, str]]) -> None:
    """What the verifier signs and dispatch reads (``HeaderView.get``) is what the signer signs
    (``core.canonical_headers``), repeated and mixed-case headers included."""
    proxy = CIMultiDictProxy(CIMultiDict(pairs))
    view = sigv4.HeaderView(proxy)
    for signed in (
        ("content-type", "host", "x-amz-date", "x-amz-target"),
        ("content-type", "host", "x-amz-date"),
        ("host", "x-amz-target"),
        ("host", "x-amz-daté"),
    ):
        try:
            expected: str | type[Exception] = core.canonical_headers(proxy, signed)
        except KeyError:
            expected = KeyError
        values = [view.get(name) for name in signed]
        got = KeyError if None in values else "".join(f"{n}:{v}\n" for n, v in zip(signed, values, strict=True))
        assert got == expected


def test_a_signed_header_missing_from_the_request_is_refused() -> None:
    headers = core.sign_headers(
        credentials=core.Credentials("AKIDEXAMPLE", "secret"), method="POST", url="http://127.0.0.1:8080/",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"},
        body=b"{}", region="us-east-1", service="kms", now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    proxy = sigv4.HeaderView.of({k: v for k, v in headers.items() if k != "X-Amz-Target"})
    auth = sigv4.parse(proxy)
    key = core.signing_key("secret", auth.date, "us-east-1", "kms")
    with pytest.raises(InvalidSignatureException, match="is missing from the request"):
        sigv4.verify(auth, method="POST", path="/", query="", headers=proxy, body=b"{}", signing_key=key)


def test_random_ids_are_distinct_version_4_uuids() -> None:
    seen: set[str] = set()
    for _ in range(1000):
        text = randomids.uuid4_str()
        value, pair_text = randomids.uuid4_pair()
        for u, s in ((uuid.UUID(text), text), (value, pair_text), (randomids.uuid4(), None)):
            assert u.version == 4 and u.variant == uuid.RFC_4122
            if s is not None:
                assert str(u) == s
        seen.update((text, pair_text))
    assert len(seen) == 2000


def test_second_text_is_strftime_of_the_second() -> None:
    start = dt.datetime(2026, 11, 29, 23, 59, 58, 999_999, tzinfo=dt.UTC)
    for step_ms in range(0, 3000, 250):
        when = start + dt.timedelta(milliseconds=step_ms)
        assert utc_second_text(when) == when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_memoised_headers_are_the_headers() -> None:
    for key_id in ("1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-" + "0f" * 16):
        header = ciphertext.header(key_id, 7)
        assert header == ciphertext.Header(key_id, 7)
        raw = header.to_bytes()
        assert ciphertext.Header.from_bytes(raw) == header
        assert ciphertext.Header.from_bytes(bytearray(raw)) == header
    with pytest.raises(ValueError):
        ciphertext.header("not-a-key-id", 1)


def test_event_identity_memo_hands_out_fresh_dicts() -> None:
    principal = Principal("arn:aws:iam::111122223333:user/a", "111122223333", PrincipalKind.USER, "a", "AIDA")
    record = CallRecord("DescribeKey", "kms.amazonaws.com", "r", dt.datetime.now(dt.UTC), "us-east-1", "ip", "ua",
                        principal, "AKIA1")  # fmt: skip
    first = events.build_event(record, uuid.uuid4())
    first["userIdentity"]["arn"] = "changed"
    second = events.build_event(record, uuid.uuid4())
    assert second["userIdentity"]["arn"] == principal.arn
    record.access_key_id = "AKIA2"
    assert events.build_event(record, uuid.uuid4())["userIdentity"]["accessKeyId"] == "AKIA2"


@pytest.mark.parametrize(
    "value",
    [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "alias/app",
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:111122223333:alias/app",
    ],
)
def test_key_reference_memo_matches_the_parse(value: str) -> None:
    first = keys_service._key_reference(value)
    assert first == ids.parse_key_reference(value)
    assert keys_service._key_reference(value) is first


@pytest.mark.parametrize("value", ["not-a-key", "arn:aws:kms:us-east-1:bad:key/x", "arn:aws:s3:::bucket"])
def test_key_reference_memo_refuses_bad_values_every_time(value: str) -> None:
    for _ in range(2):
        with pytest.raises(KmsError) as raised:
            keys_service._key_reference(value)
        with pytest.raises(type(raised.value)):
            ids.parse_key_reference(value)
    assert value not in keys_service._KEY_REFS


def test_request_log_context_starts_with_only_the_request_id() -> None:
    structlog.contextvars.bind_contextvars(request_id="previous", principal="arn:aws:iam::111122223333:user/a")
    try:
        routes._bind_log_context("next")
        assert structlog.contextvars.get_contextvars() == {"request_id": "next"}
    finally:
        structlog.contextvars.clear_contextvars()


def test_only_the_request_path_binds_log_context() -> None:
    """``_bind_log_context`` resets the keys ``handle`` binds instead of clearing the context:
    that is only the same while no other code binds context-local log values."""
    root = Path(__file__).resolve().parents[2]
    binders = {
        path.relative_to(root).as_posix()
        for package in ("regiond", "replication", "kmsclient")
        for path in (root / package).rglob("*.py")
        if "bind_contextvars(" in path.read_text()
    }
    assert binders == {"regiond/protocol/routes.py"}
    source = (root / "regiond/protocol/routes.py").read_text()
    bound = set(re.findall(r"bind_contextvars\((\w+)=", source))
    assert bound == set(routes._LOG_CONTEXT_KEYS)


def test_keyed_hmac_signs_as_the_key_bytes_every_time() -> None:
    key = core.signing_key("secret", "20261129", "us-east-1", "kms")
    keyed = core.keyed_hmac(key)
    for to_sign in ("first string to sign", "second string to sign", "first string to sign"):
        assert core.signature(keyed, to_sign) == core.signature(key, to_sign)


def test_verify_with_a_kept_keyed_hmac_accepts_and_refuses_as_with_the_bytes() -> None:
    body = b'{"KeyId": "alias/app"}'
    headers = core.sign_headers(
        credentials=core.Credentials("AKIDEXAMPLE", "secret"), method="POST", url="http://127.0.0.1:8080/",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Encrypt"},
        body=body, region="us-east-1", service="kms", now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    proxy = sigv4.HeaderView.of(CIMultiDictProxy(CIMultiDict(headers)))
    auth = sigv4.parse(proxy)
    keyed = core.keyed_hmac(core.signing_key("secret", auth.date, "us-east-1", "kms"))
    for _ in range(2):  # the kept HMAC is copied, never consumed
        sigv4.verify(auth, method="POST", path="/", query="", headers=proxy, body=body, signing_key=keyed)
    with pytest.raises(InvalidSignatureException, match="does not match"):
        sigv4.verify(auth, method="POST", path="/", query="", headers=proxy, body=body + b" ", signing_key=keyed)
    other = core.keyed_hmac(core.signing_key("other", auth.date, "us-east-1", "kms"))
    with pytest.raises(InvalidSignatureException, match="does not match"):
        sigv4.verify(auth, method="POST", path="/", query="", headers=proxy, body=body, signing_key=other)
