"""The built-in sender's response parser: strict HTTP/1.1, checked against h11.

h11 (installed with httpx) serves as the reference: on generated responses — any
status, header set, framing, and any split of the bytes into reads — both must agree
on status, headers and body. What RFC 9112 forbids must be refused.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alikassa_async._http1 import (
    MAX_HEAD_BYTES,
    ProtocolError,
    ResponseParser,
    TooLarge,
    request_head,
)

CAP = 1 << 20


def parse(
    data: bytes, splits: list[int] | None = None, *, eof: bool = False, cap: int = CAP
) -> ResponseParser:
    parser = ResponseParser(cap)
    cuts = sorted({s for s in (splits or []) if 0 < s < len(data)})
    done = False
    for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True):
        done = parser.feed(data[start:stop])
    if eof and not done:
        done = parser.feed_eof()
    assert done, "response not complete"
    return parser


def h11_parse(data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")])
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    status, headers, body = 0, [], b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, headers, body
        elif event is h11.NEED_DATA:
            raise AssertionError("h11 needs more data")


# -- generated responses: both parsers agree --------------------------------------------

_token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
    min_size=1,
    max_size=20,
)
_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
_reserved = {"content-length", "transfer-encoding", "connection"}


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, dict[str, str], bytes, list[int]]:
    status = draw(
        st.sampled_from([200, 201, 202, 400, 401, 403, 404, 422, 429, 500, 502, 503, 307, 308])
    )
    fields = draw(st.lists(st.tuples(_token, _value), max_size=8))
    fields = [(n, v) for n, v in fields if n.lower() not in _reserved]
    body = draw(st.binary(max_size=300))
    chunked = draw(st.booleans())
    head = f"HTTP/1.1 {status} {draw(st.sampled_from(['OK', 'X', '', 'Not Found']))}\r\n"
    head += "".join(
        f"{n}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{v}\r\n" for n, v in fields
    )
    if chunked:
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        pieces, at = [], 0
        for size in sizes:
            piece = body[at : at + size]
            if piece:
                ext = draw(st.sampled_from(["", ";a=b", ";x"]))
                pieces.append(b"%x%s\r\n%s\r\n" % (len(piece), ext.encode(), piece))
            at += size
        if at < len(body):
            pieces.append(b"%x\r\n%s\r\n" % (len(body) - at, body[at:]))
        trailer = draw(st.sampled_from([b"", b"X-Trailer: t\r\n"]))
        raw = (
            (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
            + b"".join(pieces)
            + (b"0\r\n" + trailer + b"\r\n")
        )
    else:
        raw = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    splits = draw(st.lists(st.integers(0, len(raw)), max_size=6))
    expected: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        expected[key] = value if key not in expected else f"{expected[key]}, {value}"
    return raw, status, expected, body, splits


@settings(max_examples=300, deadline=None)
@given(responses())
def test_the_parser_agrees_with_h11_on_any_response_split_anywhere(case):
    raw, status, expected, body, splits = case
    parser = parse(raw, splits)
    h11_status, h11_headers, h11_body = h11_parse(raw)
    assert parser.status == status == h11_status
    assert parser.body == body == h11_body
    for name, value in expected.items():
        assert parser.headers[name] == value
        assert parser.headers.get(name.upper()) == value  # case-insensitive
    h11_names = {n.decode() for n, _ in h11_headers} - _reserved
    assert set(parser.headers) - _reserved == h11_names
    assert parser.keep_alive


# -- framing --------------------------------------------------------------------------


def test_interim_answers_are_skipped_and_keep_alive_follows_the_headers():
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    parser = parse(raw)
    assert (parser.status, parser.body, parser.keep_alive) == (200, b"ok", True)
    assert "link" not in parser.headers
    closing = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert not closing.keep_alive
    old = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert not old.keep_alive and old.body == b"x"


def test_an_answer_without_framing_is_read_until_close_and_never_reused():
    raw = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":1}'
    parser = parse(raw, [20, 40], eof=True)
    assert parser.body == b'{"a":1}' and not parser.keep_alive


def test_no_body_statuses_and_both_framings():
    assert parse(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").body == b""
    both = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n"
    )
    assert both.body == b"hi" and not both.keep_alive  # chunked wins; never reused
    same = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi")
    assert same.body == b"hi"


def test_bytes_after_the_answer_make_the_connection_unusable():
    parser = ResponseParser(CAP)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n")
    assert not parser.keep_alive
    with pytest.raises(ProtocolError):
        parser.feed(b"more")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nFolded: a\r\n b\r\nContent-Length: 0\r\n\r\n",  # obs-fold
        b"HTTP/1.1 200 OK\r\nName : v\r\nContent-Length: 0\r\n\r\n",  # space before colon
        b"HTTP/1.1 200 OK\r\nBad\x00: v\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",  # NUL in a value
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",  # bare CR in a value
        b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx",  # conflicting lengths
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa1\r\n\r\n",  # a Unicode digit
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiXX0\r\n\r\n",  # no CRLF
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ],
)
def test_what_rfc_9112_forbids_is_refused(raw):
    with pytest.raises(ProtocolError):
        ResponseParser(CAP).feed(raw)


def test_caps_are_enforced_while_reading_and_early_on_content_length():
    with pytest.raises(TooLarge, match="1000001 bytes"):  # refused before any body byte
        ResponseParser(1_000_000).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000001\r\n\r\n")
    chunked = ResponseParser(100)
    chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunked.feed(b"40\r\n" + b"x" * 64 + b"\r\n")
    with pytest.raises(TooLarge):
        chunked.feed(b"40\r\n")  # the next chunk's size alone breaks the cap
    until_close = ResponseParser(100)
    until_close.feed(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100)
    with pytest.raises(TooLarge):
        until_close.feed(b"x")
    head = ResponseParser(CAP)
    with pytest.raises(TooLarge):
        head.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 6 + 1))


def test_an_incomplete_answer_at_eof_is_an_error_that_says_whether_bytes_came():
    empty = ResponseParser(CAP)
    with pytest.raises(ProtocolError, match="without a response"):
        empty.feed_eof()
    partial = ResponseParser(CAP)
    partial.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(ProtocolError, match="before the response was complete"):
        partial.feed_eof()


def test_request_heads_refuse_header_injection_and_non_ascii():
    head = request_head("POST", "/v1/payout", "example.com", {"Sign": "abc", "A": "1"}, 12)
    assert head == (
        b"POST /v1/payout HTTP/1.1\r\nHost: example.com\r\nSign: abc\r\nA: 1\r\n"
        b"Content-Length: 12\r\n\r\n"
    )
    for bad in (
        {"Application": "x\r\nEvil: 1"},
        {"A": "line\nbreak"},
        {"A": "\x00"},
        {"A": "Ω"},
        {"Bad Name": "v"},
        {"": "v"},
    ):
        with pytest.raises(ValueError):
            request_head("POST", "/", "h", bad, 0)


def test_an_answer_fed_one_byte_at_a_time():
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n"
    )
    parser = parse(raw, list(range(len(raw))))
    assert (parser.status, parser.body, parser.headers["x-a"]) == (200, b"abcde", "1")
    lengthy = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert parse(lengthy, list(range(len(lengthy)))).body == b"hello"
