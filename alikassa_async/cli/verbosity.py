"""``alikassa -v`` / ``-vv``: which loggers the command line shows on stderr.

``-v`` shows the SDK's own records (the ``alikassa_async`` loggers) down to DEBUG:
one line per request with endpoint, status, duration and order_id. ``-vv`` adds
the connection-level lines: the built-in sender's (``alikassa_async.http``:
connections opened) or, on the httpx backend, httpx and httpcore (connections, TLS,
every header event). hpack stays out at any level: the SDK already blanks the
``Sign`` header there, but its per-header chatter helps nobody at a terminal.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

__all__ = ["SDK_LOGGERS", "TRANSPORT_LOGGERS", "configure"]

SDK_LOGGERS = ("alikassa_async",)
TRANSPORT_LOGGERS = ("alikassa_async.http", "httpx", "httpcore")
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_handler: logging.Handler | None = None
#: a ``sign`` query parameter, as in the notification URLs the sandbox's notifier fetches
#: (httpx logs each URL at INFO): a signature, never shown at a terminal
_SIGN_PARAM = re.compile(r"(?i)\b(sign)=[^&\s\"']+")


class _RedactSignatures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sign=" in message.lower():
            record.msg, record.args = _SIGN_PARAM.sub(r"\1=<redacted>", message), None
        return True


def configure(verbosity: int, stream: TextIO | None = None) -> None:
    """Show the SDK's DEBUG lines at ``verbosity >= 1``, the transport's at ``>= 2``.

    Idempotent; 0 changes nothing (the SDK stays as quiet as a library should be).
    """
    global _handler
    if verbosity <= 0:
        return
    if _handler is None:
        _handler = logging.StreamHandler(stream or sys.stderr)
        _handler.setFormatter(logging.Formatter(_FORMAT))
        _handler.addFilter(_RedactSignatures())
    names = SDK_LOGGERS + (TRANSPORT_LOGGERS if verbosity >= 2 else ())
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        logger.propagate = False  # one line per record, whatever the root logger has
    if verbosity < 2:  # the built-in sender's connection lines are -vv's, not -v's
        logging.getLogger("alikassa_async.http").setLevel(logging.INFO)
