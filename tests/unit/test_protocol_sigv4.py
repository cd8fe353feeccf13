"""protocol.sigv4 and the kmsclient.sigv4 arithmetic it uses: the parse memo, the header view and
the kept keyed HMAC give exactly what the plain computation gives."""

from __future__ import annotations

import datetime as dt

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from kmsclient import sigv4 as core
from regiond.auth import sigv4
from regiond.errors import IncompleteSignature, InvalidSignatureException, KmsError

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
