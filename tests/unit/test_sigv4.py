"""SigV4 against AWS's published example, and the verifier's refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from kmsclient import sigv4 as core
from regiond.auth import sigv4
from regiond.errors import IncompleteSignature, InvalidSignatureException, MissingAuthenticationToken

# "Create a signed AWS API request" (IAM user guide): ListUsers example.
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
    "Host": "iam.amazonaws.com",
    "X-Amz-Date": "20150830T123600Z",
}


def test_signing_key_matches_aws_example() -> None:
    key = core.signing_key(SECRET, "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


def test_signature_matches_aws_example() -> None:
    signed = ["content-type", "host", "x-amz-date"]
    canonical = core.canonical_request(
        "GET", "/", "Action=ListUsers&Version=2010-05-08", HEADERS, signed, core.sha256_hex(b"")
    )
    assert core.sha256_hex(canonical.encode()) == "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    to_sign = core.string_to_sign("20150830T123600Z", core.scope("20150830", "us-east-1", "iam"), canonical)
    key = core.signing_key(SECRET, "20150830", "us-east-1", "iam")
    assert core.signature(key, to_sign) == "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"


def _signed(now: dt.datetime, body: bytes = b"{}", region: str = "us-east-1") -> dict[str, str]:
    return core.sign_headers(
        credentials=core.Credentials("AKIDEXAMPLE", SECRET),
        method="POST",
        url="http://127.0.0.1:8080/",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"},
        body=body,
        region=region,
        service="kms",
        now=now,
    )


NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _verify(
    headers: dict[str, str], body: bytes = b"{}", *, now: dt.datetime = NOW, secret: str = SECRET
) -> sigv4.SignedHeaders:
    view = sigv4.HeaderView.of(headers)
    auth = sigv4.parse(view)
    sigv4.check_scope(auth, region="us-east-1", now=now, max_skew_s=900)
    key = core.signing_key(secret, auth.date, "us-east-1", "kms")
    return sigv4.verify(auth, method="POST", path="/", query="", headers=view, body=body, signing_key=key)


def test_client_signature_verifies_on_the_server() -> None:
    _verify(_signed(NOW))


def test_changed_body_is_refused() -> None:
    with pytest.raises(InvalidSignatureException):
        _verify(_signed(NOW), body=b'{"Limit": 1}')


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidSignatureException, match="does not match"):
        _verify(_signed(NOW), secret="x" * 40)


def test_skew_limit_is_fifteen_minutes_both_ways() -> None:
    _verify(_signed(NOW - dt.timedelta(minutes=14)))
    _verify(_signed(NOW + dt.timedelta(minutes=14)))
    with pytest.raises(InvalidSignatureException, match="expired"):
        _verify(_signed(NOW - dt.timedelta(minutes=16)))
    with pytest.raises(InvalidSignatureException, match="not yet current"):
        _verify(_signed(NOW + dt.timedelta(minutes=16)))


def test_scope_of_another_region_is_refused() -> None:
    with pytest.raises(InvalidSignatureException, match="region"):
        _verify(_signed(NOW, region="eu-west-1"))


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        (None, MissingAuthenticationToken),
        ("AWS4-HMAC-SHA512 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=00", IncompleteSignature),
        ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00", IncompleteSignature),
        ("AWS4-HMAC-SHA256 Credential=a/b/aws4_request, SignedHeaders=host, Signature=00", IncompleteSignature),
        (
            "AWS4-HMAC-SHA256 Credential=a/20261128/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date, Signature=0",
            InvalidSignatureException,
        ),
    ],
)
def test_malformed_authorization_headers(authorization: str | None, error: type[Exception]) -> None:
    headers = {"X-Amz-Date": "20261128T120000Z"}
    if authorization is not None:
        headers["Authorization"] = authorization
    with pytest.raises(error):
        sigv4.parse(sigv4.HeaderView.of(headers))


def test_amz_date_parsing_is_strict() -> None:
    assert core.parse_amz_date("20261128T120000Z") == NOW
    for bad in ("2026-11-28T12:00:00Z", "20261128T120000", "20261328T120000Z", "20261128T12000aZ"):
        with pytest.raises(ValueError):
            core.parse_amz_date(bad)


def _view(pairs: list[tuple[str, str]]) -> sigv4.HeaderView:
    return sigv4.HeaderView.of(pairs)


def test_repeated_headers_are_their_values_joined_with_commas_for_everyone() -> None:
    view = _view([("X-Amz-Target", " TrentService.ListKeys "), ("x-amz-target", "RegionKmsIam.CreateAccessKey")])
    assert view.get("x-amz-target") == "TrentService.ListKeys,RegionKmsIam.CreateAccessKey"
    assert core.canonical_headers({"X-Amz-Target": "a", "x-amz-target": "b"}, ["x-amz-target"]) == "x-amz-target:a,b\n"


def test_a_client_signature_covers_the_joined_value_and_the_server_dispatches_it() -> None:
    headers = _signed(NOW)
    pairs = [*headers.items(), ("X-Amz-Target", "RegionKmsIam.CreateAccessKey")]
    view = _view(pairs)
    auth = sigv4.parse(view)
    key = core.signing_key(SECRET, auth.date, "us-east-1", "kms")
    with pytest.raises(InvalidSignatureException, match="does not match"):
        sigv4.verify(auth, method="POST", path="/", query="", headers=view, body=b"{}", signing_key=key)


def test_verify_returns_only_the_signed_headers() -> None:
    signed = _verify(_signed(NOW))
    assert signed["x-amz-target"] == "TrentService.ListKeys"
    assert set(signed) == {"content-type", "host", "x-amz-date", "x-amz-target"}


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 Credential=a/20261128/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00, "
        "Signature=11",
        "AWS4-HMAC-SHA256 Credential=a/20261128/us-east-1/kms/aws4_request, Credential=b/20261128/us-east-1/kms/"
        "aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=a/20261128/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00, Extra=1",
        "AWS4-HMAC-SHA256 Credential=a/20261128/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00, junk",
    ],
)
def test_authorization_fields_are_exactly_the_three_once_each(authorization: str) -> None:
    with pytest.raises(IncompleteSignature):
        sigv4.parse(_view([("Authorization", authorization), ("X-Amz-Date", "20261128T120000Z")]))


def test_two_authorization_headers_are_refused() -> None:
    good = _signed(NOW)
    pairs = [*good.items(), ("Authorization", good["Authorization"])]
    with pytest.raises(IncompleteSignature):
        sigv4.parse(_view(pairs))


def test_two_dates_are_no_date() -> None:
    good = _signed(NOW)
    auth = sigv4.parse(_view([*good.items(), ("X-Amz-Date", good["X-Amz-Date"])]))
    with pytest.raises(IncompleteSignature):
        sigv4.check_scope(auth, region="us-east-1", now=NOW, max_skew_s=900)


def test_signed_header_names_must_be_lower_case() -> None:
    authorization = "AWS4-HMAC-SHA256 Credential=a/20261128/us-east-1/kms/aws4_request, SignedHeaders=Host, Signature=0"
    with pytest.raises(InvalidSignatureException, match="lower-case"):
        sigv4.parse(_view([("Authorization", authorization), ("X-Amz-Date", "20261128T120000Z")]))


def test_unsigned_target_is_refused_even_with_a_good_signature() -> None:
    headers = core.sign_headers(
        credentials=core.Credentials("AKIDEXAMPLE", SECRET), method="POST", url="http://127.0.0.1:8080/",
        headers={"Content-Type": "application/x-amz-json-1.1"}, body=b"{}", region="us-east-1", service="kms",
        now=NOW,
    )  # fmt: skip
    headers["X-Amz-Target"] = "TrentService.ListKeys"
    with pytest.raises(InvalidSignatureException, match="'X-Amz-Target' must be a 'SignedHeader'"):
        _verify(headers)


def test_access_key_id_shape() -> None:
    assert sigv4.well_formed_access_key_id("AKIAIOSFODNN7EXAMPLE")
    for bad in ("", "AKIA", "A" * 129, "AKIA-IOSFODNN7EXAMPLE", "AKIAÄOSFODNN7EXAMPLE", "AKIA\x00OSFODNN7EXAMPLE"):
        assert not sigv4.well_formed_access_key_id(bad)
