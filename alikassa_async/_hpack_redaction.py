"""Keep the ``Sign`` header out of hpack's DEBUG logs (HTTP/2 only).

hpack logs every header it encodes at DEBUG (``Adding b'sign'=b'...' to the header
table``, the encoded block, evictions), so ``logging.basicConfig(level=DEBUG)`` with
``http2=True`` would print each request's signature. h2 marks only ``authorization``
and short cookies as sensitive, and httpx offers no way to flag a header, so a filter
on hpack's two loggers blanks the value instead; every other record passes unchanged.
"""

from __future__ import annotations

import logging

__all__ = ["install"]

_SECRET_HEADERS = frozenset({b"sign", "sign"})
_REDACTED = b"<redacted>"


class _SignRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or not args:
            return True
        if record.msg == "Encoded header block to %s":
            # Huffman coding is reversible: the block carries the Sign value too.
            block = args[0]
            record.args = (f"<{len(block)} bytes>" if isinstance(block, bytes) else "<...>",)
        elif len(args) >= 2 and isinstance(args[0], bytes | str) and (
                args[0].lower() in _SECRET_HEADERS):
            record.args = (args[0], _REDACTED, *args[2:])
        return True


_FILTER = _SignRedactor()


def install() -> None:
    """Attach the filter to ``hpack.hpack`` and ``hpack.table`` (idempotent)."""
    for name in ("hpack.hpack", "hpack.table"):
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
