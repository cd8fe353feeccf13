"""The forward envelope (regiond.protocol.forwarding): exact bytes both ways, strict decoding, hop-by-hop headers."""

from __future__ import annotations

import msgpack
import pytest

from regiond.protocol import forwarding
from regiond.protocol.forwarding import ForwardedReply, ForwardedRequest, ForwardError

HEADERS = ((b"Host", b"127.0.0.1:8080"), (b"X-Amz-Target", b"TrentService.ListKeys"), (b"X-Odd", b"\xff\xfe"),
           (b"x-dup", b"a"), (b"X-Dup", b"b"))  # fmt: skip


def test_request_round_trips_byte_for_byte() -> None:
    request = ForwardedRequest("POST", b"/?a=%2F", HEADERS, b'{"Limit": 1}', False, "2001:db8::1")
    back = forwarding.decode_request(forwarding.encode_request(request))
    assert back == request
    parsed = back.header_multidict()
    assert parsed.getall("x-dup") == ["a", "b"]
    assert parsed["x-odd"].encode("utf-8", "surrogateescape") == b"\xff\xfe"


@pytest.mark.parametrize(
    "raw",
    [
        [2, "POST", b"/", [], b"", True, ""],  # unknown version
        [True, "POST", b"/", [], b"", True, ""],
        [1, "POST", b"no-slash", [], b"", True, ""],
        [1, "", b"/", [], b"", True, ""],
        [1, "POST", b"/", [[b"Bad:Name", b"v"]], b"", True, ""],
        [1, "POST", b"/", [[b"X", b"v\r\nInjected: 1"]], b"", True, ""],
        [1, "POST", b"/", [[b"X"]], b"", True, ""],
        [1, "POST", b"/", [], "not bytes", True, ""],
        [1, "POST", b"/", [], b"", "yes", ""],
        [1, "POST", b"/", [], b"", True, "x" * 65],
        [1, "POST", b"/", [], b"", True, "a\nb"],
        [1, "POST", b"/", [], b"", True],  # version 1 has seven members
        {"v": 1},
    ],
)
def test_malformed_requests_are_refused(raw: object) -> None:
    with pytest.raises(ForwardError):
        forwarding.decode_request(msgpack.packb(raw, use_bin_type=True))


def test_garbage_and_oversized_envelopes_are_refused() -> None:
    with pytest.raises(ForwardError):
        forwarding.decode_request(b"\xc1")
    with pytest.raises(ForwardError):
        forwarding.decode_request(b"\x00" * (forwarding.MAX_ENVELOPE_BYTES + 1))


def test_reply_keeps_only_the_headers_clients_read() -> None:
    reply = ForwardedReply(400, (("x-amzn-RequestId", "r-1"), ("Content-Type", "application/x-amz-json-1.1"),
                                 ("x-amzn-query-error", "SignatureDoesNotMatch;Sender"),
                                 ("Set-Cookie", "x=1"), ("Server", "evil")), b"{}")  # fmt: skip
    back = forwarding.decode_reply(forwarding.encode_reply(reply))
    assert back.status == 400 and back.body == b"{}"
    assert dict(back.headers) == {"x-amzn-RequestId": "r-1", "Content-Type": "application/x-amz-json-1.1",
                                  "x-amzn-query-error": "SignatureDoesNotMatch;Sender"}  # fmt: skip
    with pytest.raises(ForwardError):
        forwarding.decode_reply(msgpack.packb([1, 99, [], b""], use_bin_type=True))


def test_hop_by_hop_headers_are_dropped_unless_signed() -> None:
    raw = [(b"Host", b"h"), (b"Connection", b"keep-alive, X-Secret-Hop"), (b"X-Secret-Hop", b"1"),
           (b"Transfer-Encoding", b"chunked"), (b"Keep-Alive", b"timeout=5"), (b"X-Amz-Date", b"d")]  # fmt: skip
    kept = forwarding.end_to_end_headers(raw, ["host", "x-amz-date"])
    assert kept == ((b"Host", b"h"), (b"X-Amz-Date", b"d"))
    signed = forwarding.end_to_end_headers(raw, ["host", "keep-alive", "x-amz-date"])
    assert (b"Keep-Alive", b"timeout=5") in signed
