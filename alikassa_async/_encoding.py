"""The one JSON encoder: byte-identical to PHP ``json_encode`` with default flags.

AliKassa verifies signatures over raw bytes, and its reference implementation
is PHP. Request bodies and rebuilt notification payloads therefore go through
this encoder, never through ``json.dumps`` (API reference §10):

- compact separators, keys in insertion order;
- ``/`` escaped as ``\\/``; non-ASCII as lowercase ``\\uXXXX`` (surrogate pairs);
- DEL (0x7f) emitted raw;
- an empty mapping or list encodes as ``[]`` (PHP's empty array);
- floats, NaN, non-str keys and ints beyond int64 are refused: money travels
  as strings.

>>> php_json_encode({"url": "https://a/b", "desc": "Привет"})
b'{"url":"https:\\\\/\\\\/a\\\\/b","desc":"\\\\u041f\\\\u0440\\\\u0438\\\\u0432\\\\u0435\\\\u0442"}'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal

__all__ = ["EncodingError", "php_json_encode", "php_json_string"]


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ascii_json = json.encoder.encode_basestring_ascii


class EncodingError(TypeError, ValueError):
    """A value has no PHP ``json_encode`` form we are willing to produce."""


def php_json_string(value: str) -> str:
    """Encode one string the way PHP does (quotes included)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: PHP returns false
            raise EncodingError("string is not valid UTF-8") from exc
    # What json.dumps(value) runs for a str, without its per-call dispatch (~1 µs a string).
    if "\x7f" not in value:
        return _ascii_json(value).replace("/", "\\/")
    # PHP leaves DEL raw where Python escapes it. Encode around each DEL rather than
    # unescape the output: the text "\u007f" (a backslash, then u007f) must stay escaped.
    pieces = (_ascii_json(piece)[1:-1].replace("/", "\\/") for piece in value.split("\x7f"))
    return '"' + "\x7f".join(pieces) + '"'


def _encode(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(php_json_string(value))
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise EncodingError("integer outside PHP's int64 range (PHP would print a float)")
        out.append(str(int(value)))
    elif isinstance(value, Decimal):
        # Decimals are sent as strings: PHP would see them as strings too.
        out.append(php_json_string(format(value, "f")))
    elif isinstance(value, Mapping):
        if not value:
            out.append("[]")
            return
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise EncodingError(f"object keys must be str, not {type(key).__name__}")
            if index:
                out.append(",")
            out.append(php_json_string(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, float):
        raise EncodingError("floats are refused: pass money as Decimal or str")
    else:
        raise EncodingError(f"cannot encode {type(value).__name__} as JSON")


def php_json_encode(value: object) -> bytes:
    """Encode ``value`` to the exact bytes PHP ``json_encode($value)`` produces."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("ascii")
