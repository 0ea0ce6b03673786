"""HTTP/1.1 on the wire, strictly: the request head we write, the response we accept.

No I/O here: :class:`ResponseParser` is fed the bytes a connection receives and says
when one response is complete. It accepts what RFC 9112 says a server sends and
refuses the rest with :class:`ProtocolError` (obsolete line folding, whitespace before
a colon, control characters, conflicting or malformed ``Content-Length``, an unknown
``Transfer-Encoding``, a head or body over its cap). Refusing is safe: a refused answer
is an unknown outcome to the client, never a guess.

Why not h11: it is pure Python too, and builds event objects, a header list and a
validation pass per response: ~260k instructions to read a typical 7-header answer
against ~80k here (callgrind), plus ~160k for its connection and request events. It is
also only a dependency of httpcore, which httpx may drop or re-pin at any release; the
SDK's four runtime dependencies do not include it. tests/test_http1.py checks this
parser against h11 (a test-time reference only) on generated responses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["Headers", "ProtocolError", "ResponseParser", "TooLarge", "request_head"]

#: the response head (status line + headers) may not exceed this
MAX_HEAD_BYTES = 64 * 1024
#: a chunk-size line (hex size + extensions) may not exceed this
MAX_CHUNK_LINE = 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?")
# field-name is a token; the value has no control character but HTAB, and no
# surrounding whitespace (stripped by the pattern itself).
_FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[^\t\x20-\x7e]")

# parser states
_HEAD, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response we accept."""


class TooLarge(ProtocolError):
    """The answer's head or body is over its cap."""


class Headers(dict[str, str]):
    """Response headers: lower-case names, case-insensitive lookups; a repeated field
    is joined with ``", "`` (as httpx does)."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


def request_head(
    method: str,
    target: str,
    host: str,
    headers: Mapping[str, str],
    content_length: int,
    fixed: str = "",
) -> bytes:
    """The request line and headers, ending with the blank line.

    ``fixed`` is a block of constant header lines (CRLF-terminated, already checked).
    Raises ``ValueError`` for a name that is not a token or a value with a control
    character (CR/LF would inject headers) or non-ASCII text, before anything is sent.
    """
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{fixed}"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token")
        if _BAD_VALUE.search(value):
            raise ValueError(f"header {name} has a control or non-ASCII character")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {content_length}\r\n\r\n")
    return "".join(lines).encode("ascii")


class ResponseParser:
    """One HTTP/1.1 response at a time, fed incrementally.

    ``feed(data)`` returns True once the response is complete; then ``status``,
    ``headers``, ``body`` and ``keep_alive`` describe it. ``started`` tells whether any
    byte of a response arrived. ``reset()`` prepares for the next response on the same
    connection (the buffer is reused).
    """

    __slots__ = (
        "_body",
        "_buf",
        "_remaining",
        "_scanned",
        "_size",
        "_state",
        "body",
        "headers",
        "keep_alive",
        "max_body",
        "started",
        "status",
    )

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self.reset()

    def reset(self) -> None:
        self._buf.clear()
        self._body: list[bytes] = []
        self._state = _HEAD
        self._remaining = 0
        self._scanned = 0
        self._size = 0
        self.started = False
        self.status = 0
        self.headers = Headers()
        self.body = b""
        self.keep_alive = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bool:
        if not data:
            return self._state == _DONE
        self.started = True
        if self._state == _DONE:
            raise ProtocolError("bytes after the end of the response")
        if self._state == _HEAD and not self._buf:
            # The usual case: the whole (small) answer in one read; no buffer copies.
            end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end >= 0:
                self._head(data[:end])
                data = data[end + 4 :]
                if self._state == _LENGTH and len(data) == self._remaining:
                    self._body.append(data)
                    self._size = self._remaining
                    self._finish()
                    return True
        buf = self._buf
        buf += data
        # Each step consumes what it can of the buffer and returns None to go on with
        # the state it moved to, or what feed returns: False (more bytes are needed) or
        # True (the response is complete).
        while True:
            result = _STEPS[self._state](self, buf)
            if result is not None:
                return result

    def feed_eof(self) -> bool:
        """The server closed its side; True if that completes the response."""
        if self._state == _UNTIL_CLOSE:
            self._finish()
            self.keep_alive = False
            return True
        if self._state == _DONE:
            return True
        raise ProtocolError(
            "server closed the connection before the response was complete"
            if self.started
            else "server closed the connection without a response"
        )

    # -- internals --------------------------------------------------------------------

    def _read_head(self, buf: bytearray) -> bool | None:
        # Search only the new bytes (and 3 before them): a trickled head stays linear.
        end = buf.find(b"\r\n\r\n", max(self._scanned - 3, 0))
        self._scanned = len(buf)
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise TooLarge("response head is too large")
            return False
        if end > MAX_HEAD_BYTES:
            raise TooLarge("response head is too large")
        head = bytes(buf[:end])
        del buf[: end + 4]
        self._scanned = 0
        self._head(head)
        return None

    def _read_length(self, buf: bytearray) -> bool | None:
        if not self._take_remaining(buf):
            return False
        self._finish()
        return None

    def _read_until_close(self, buf: bytearray) -> bool | None:
        self._take(bytes(buf))
        buf.clear()
        return False

    def _read_chunk_line(self, buf: bytearray) -> bool | None:
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > MAX_CHUNK_LINE:
                raise ProtocolError("chunk-size line is too long")
            return False
        match = _CHUNK_SIZE.fullmatch(buf, 0, end)
        if match is None:
            raise ProtocolError("malformed chunk-size line")
        size = int(match.group(1), 16)
        del buf[: end + 2]
        if size == 0:
            self._state = _TRAILERS
            return None
        if self._size + size > self.max_body:
            raise TooLarge("response body is too large")
        self._remaining = size
        self._state = _CHUNK_DATA
        return None

    def _read_chunk_data(self, buf: bytearray) -> bool | None:
        if not self._take_remaining(buf):
            return False
        self._state = _CHUNK_END
        return None

    def _read_chunk_end(self, buf: bytearray) -> bool | None:
        if len(buf) < 2:
            return False
        if buf[:2] != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        del buf[:2]
        self._state = _CHUNK_LINE
        return None

    def _read_trailers(self, buf: bytearray) -> bool | None:
        if buf[:2] == b"\r\n":
            del buf[:2]
            self._finish()
            return None
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise TooLarge("response trailers are too large")
            return False
        for line in bytes(buf[:end]).split(b"\r\n"):
            if _FIELD.fullmatch(line) is None:
                raise ProtocolError("malformed trailer field")
        del buf[: end + 4]  # trailers are checked, then dropped (we need none)
        self._finish()
        return None

    def _read_done(self, buf: bytearray) -> bool | None:
        if buf:
            # We never pipeline: bytes beyond this response mean the stream is out
            # of step, so the connection must not be reused.
            self.keep_alive = False
            buf.clear()
        return True

    def _take_remaining(self, buf: bytearray) -> bool:
        """Take up to ``_remaining`` body bytes from the buffer; True once all are in."""
        if len(buf) < self._remaining:
            self._take(bytes(buf))
            self._remaining -= len(buf)
            buf.clear()
            return False
        self._take(bytes(buf[: self._remaining]))
        del buf[: self._remaining]
        return True

    def _take(self, chunk: bytes) -> None:
        if chunk:
            self._size += len(chunk)
            if self._size > self.max_body:
                raise TooLarge("response body is too large")
            self._body.append(chunk)

    def _finish(self) -> None:
        body = self._body
        self.body = body[0] if len(body) == 1 else b"".join(body)
        self._state = _DONE

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None:
            raise ProtocolError("malformed status line")
        code = int(status.group(2))
        headers = _header_fields(lines)  # checked for interim answers too
        if code < 200:
            if code == 101:
                raise ProtocolError("unexpected protocol switch")
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self.status = code
        self.headers = headers
        connection = _get(headers, "connection")
        self.keep_alive = status.group(1) == b"1" and (
            connection is None or "close" not in connection.lower()
        )
        # How the body is delimited, in RFC 9112's order of precedence.
        coding = _get(headers, "transfer-encoding")
        length = _get(headers, "content-length")
        if code in (204, 304):
            self._finish()
        elif coding is not None:
            self._expect_chunked(coding, length)
        elif length is not None:
            self._expect_length(length)
        else:
            self.keep_alive = False
            self._state = _UNTIL_CLOSE

    def _expect_chunked(self, coding: str, length: str | None) -> None:
        codings = [c.strip() for c in coding.lower().split(",")]
        if codings != ["chunked"]:
            raise ProtocolError(f"unsupported transfer-encoding {coding[:40]!r}")
        if length is not None:
            self.keep_alive = False  # both framings given: read it as chunked, then close
        self._state = _CHUNK_LINE

    def _expect_length(self, length: str) -> None:
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1:
            raise ProtocolError("conflicting content-length values")
        text = values.pop()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise ProtocolError("malformed content-length")
        self._remaining = int(text)
        if self._remaining > self.max_body:
            raise TooLarge(f"response body of {text} bytes is too large")
        if self._remaining == 0:
            self._finish()
        else:
            self._state = _LENGTH


#: ``ResponseParser.feed``'s step for each state, indexed by the state's number (a tuple:
#: the cheapest lookup on a path every read takes)
_STEPS = tuple(
    step
    for _, step in sorted(
        {
            _HEAD: ResponseParser._read_head,
            _LENGTH: ResponseParser._read_length,
            _CHUNK_LINE: ResponseParser._read_chunk_line,
            _CHUNK_DATA: ResponseParser._read_chunk_data,
            _CHUNK_END: ResponseParser._read_chunk_end,
            _TRAILERS: ResponseParser._read_trailers,
            _UNTIL_CLOSE: ResponseParser._read_until_close,
            _DONE: ResponseParser._read_done,
        }.items()
    )
)

# Headers' own get() lower-cases the key; the parser's keys are lower-case already.
_get = dict.get


def _header_fields(lines: list[bytes]) -> Headers:
    """The header fields after the status line (``lines[0]``)."""
    headers = Headers()
    match = _FIELD.fullmatch
    get = _get
    for line in lines[1:]:
        field = match(line)
        if field is None:
            raise ProtocolError("malformed header field")
        raw_name, raw_value = field.groups()
        name = raw_name.lower().decode("ascii")
        value = raw_value.decode("latin-1")
        previous = get(headers, name)
        dict.__setitem__(headers, name, value if previous is None else f"{previous}, {value}")
    return headers
