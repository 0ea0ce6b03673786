"""Keep the ``Sign`` header out of hpack's DEBUG logs (HTTP/2 only).

hpack logs every header it encodes at DEBUG (``Adding b'sign'=b'...' to the header
table`` since 4.2, ``Adding (b'sign', b'...') to the header table`` in 4.0 and 4.1,
the encoded block, evictions), so ``logging.basicConfig(level=DEBUG)`` with
``http2=True`` would print each request's signature. h2 marks only ``authorization``
and short cookies as sensitive, and httpx offers no way to flag a header, so a filter
on hpack's two loggers blanks the value instead; every other record passes unchanged.
"""

from __future__ import annotations

import logging

__all__ = ["install"]

_SECRET_HEADERS = frozenset({b"sign", "sign"})
_REDACTED = b"<redacted>"


def _is_secret(name: object) -> bool:
    return isinstance(name, bytes | str) and name.lower() in _SECRET_HEADERS


class _SignRedactor(logging.Filter):
    """Both log formats hpack has used: 4.0/4.1 log the header as one ``(name, value)``
    tuple (``Adding %s to the header table``), 4.2+ as two arguments (``Adding %s=%s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or not args:
            return True
        if record.msg == "Encoded header block to %s":
            # Huffman coding is reversible: the block carries the Sign value too.
            block = args[0]
            record.args = (f"<{len(block)} bytes>" if isinstance(block, bytes) else "<...>",)
            return True
        redacted = list(args)
        for index, arg in enumerate(args):
            if isinstance(arg, tuple) and len(arg) == 2 and _is_secret(arg[0]):
                redacted[index] = (arg[0], _REDACTED)  # hpack 4.0/4.1: (name, value)
        if len(args) >= 2 and _is_secret(args[0]):
            redacted[1] = _REDACTED  # hpack 4.2+: name, value, ...
        record.args = tuple(redacted)
        return True


_FILTER = _SignRedactor()


def install() -> None:
    """Attach the filter to ``hpack.hpack`` and ``hpack.table`` (idempotent)."""
    for name in ("hpack.hpack", "hpack.table"):
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
