"""Every exception the SDK raises.

::

    AliKassaError
    ├── ConfigurationError        bad account uuid, missing certificate, unreadable key
    │   └── ClientClosedError     the client was closed (also a RuntimeError)
    ├── RequestValidationError    caught before the network; field -> messages
    │   └── OrderIdConflictError  an order_id reused with another body, or twice in a batch
    ├── APIError                  the server answered; status, endpoint, message, errors, raw body
    │   ├── InvalidRequestError   400/422 "The given data was invalid."
    │   ├── AuthenticationError   401/403 (signature/account rejected)
    │   ├── NotFoundError         404
    │   ├── RateLimitError        429, with retry_after
    │   └── ServerError           5xx
    ├── TransportError            could not talk to the server (wraps httpx errors)
    ├── OutcomeUnknownError       a create call may or may not have taken effect; has order_id
    ├── PollingTimeoutError       no final status by the deadline; has the last status seen
    ├── SignatureError            a notification/redirect signature does not verify
    └── JournalError              a batch journal cannot be read or written: nothing is sent
        └── JournalInUseError     another live batch run owns the journal; names the holder

Messages never contain secrets: bodies are cut to a short snippet, and the
request's ``Sign`` header is never stored on an exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .journal import JournalHolder

__all__ = [
    "APIError",
    "AliKassaError",
    "AuthenticationError",
    "ClientClosedError",
    "ConfigurationError",
    "InvalidRequestError",
    "JournalError",
    "JournalInUseError",
    "NotFoundError",
    "OrderIdConflictError",
    "OutcomeUnknownError",
    "PollingTimeoutError",
    "RateLimitError",
    "RequestValidationError",
    "ServerError",
    "SignatureError",
    "TransportError",
]

_SNIPPET = 200


def mask(value: str) -> str:
    """Hide a card/phone/account number: ``411111******1111``, ``*******2233``.

    The first six digits (the card's BIN) are shown only for numbers of 16+
    characters; shorter ones (phones) keep just the last four. (Its one home is here,
    the lowest layer: errors mask what a gateway echoes.)
    """
    if len(value) <= 6:
        return "*" * len(value)
    if len(value) < 16:
        return "*" * (len(value) - 4) + value[-4:]
    return value[:6] + "*" * (len(value) - 10) + value[-4:]


#: a run of 10+ digits in a gateway's text: a card, phone or account number it echoed
#: (ids and amounts are shorter)
_LONG_NUMBER = re.compile(r"(?<!\d)\d{10,}(?!\d)")


def mask_numbers(text: str) -> str:
    """``text`` with every long digit run masked."""
    return _LONG_NUMBER.sub(lambda m: mask(m.group()), text)


def snippet(body: bytes | str, limit: int = _SNIPPET) -> str:
    """A short, printable excerpt of a response body for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class AliKassaError(Exception):
    """Base class of every error raised by ``alikassa_async``."""

    #: the id of the client call that raised it (quote it to support), when from a call
    request_id: str | None = None
    #: the gateway's own request id, if its answer carried one
    gateway_request_id: str | None = None


class ConfigurationError(AliKassaError):
    """The client or a key is set up wrongly; fix the configuration, not the call."""


class RequestValidationError(AliKassaError, ValueError):
    """A request was refused before the network. ``errors`` maps field -> messages."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors: dict[str, list[str]] = {k: list(v) for k, v in errors.items()}
        super().__init__(self._summary())

    def _summary(self) -> str:
        parts = [f"{field}: {'; '.join(msgs)}" for field, msgs in self.errors.items()]
        return "invalid request: " + " | ".join(parts)

    def __repr__(self) -> str:
        return f"RequestValidationError({self.errors!r})"


class APIError(AliKassaError):
    """The gateway answered with something other than a usable success."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        endpoint: str,
        body: bytes = b"",
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # The gateway's words, with any number it echoed back masked (a "card 4111... is
        # blocked" must not reach logs through str(exc)); ``body`` keeps the answer as is.
        message = mask_numbers(message)
        self.message = message
        self.status_code = status_code
        self.endpoint = endpoint
        self.body = body
        self.errors: dict[str, list[str]] = {
            field: [mask_numbers(m) for m in messages] for field, messages in (errors or {}).items()
        }
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.endpoint} answered HTTP {self.status_code}: {self.message}"
        if self.errors:
            text += " (" + "; ".join(f"{k}: {', '.join(v)}" for k, v in self.errors.items()) + ")"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, endpoint={self.endpoint!r}, "
            f"message={self.message!r})"
        )


class InvalidRequestError(APIError):
    """400/422: the gateway rejected the fields (``errors`` holds field -> messages)."""


class AuthenticationError(APIError):
    """401/403: signature, certificate or account rejected."""


class NotFoundError(APIError):
    """404: no such payment/payout, or a wrong base URL."""


class RateLimitError(APIError):
    """429: slow down; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(APIError):
    """5xx from the gateway."""


class TransportError(AliKassaError):
    """The server could not be reached or the exchange broke off (wraps httpx errors)."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}")


class OutcomeUnknownError(AliKassaError):
    """A create call may or may not have taken effect. Never treat this as failed.

    Look it up by ``order_id`` (``payment_status``/``payout_status``) before
    deciding anything; AliKassa has no idempotency key.
    """

    def __init__(
        self, order_id: str, *, endpoint: str, reason: str, cause: BaseException | None = None
    ) -> None:
        self.order_id = order_id
        self.endpoint = endpoint
        self.reason = reason
        self.cause = cause
        super().__init__(
            f"{endpoint}: outcome of order_id={order_id!r} is unknown ({reason}); "
            "look it up by order_id before retrying"
        )


class PollingTimeoutError(AliKassaError, TimeoutError):
    """No final status before the deadline; ``last_status`` is the last response seen."""

    def __init__(self, message: str, *, last_status: object | None = None) -> None:
        self.last_status = last_status
        super().__init__(message)


class SignatureError(AliKassaError):
    """A notification or redirect failed verification; trust nothing in it."""


class ClientClosedError(ConfigurationError, RuntimeError):
    """The client was closed; create a new one (or keep one for the app's lifetime)."""


class OrderIdConflictError(RequestValidationError):
    """This ``order_id`` was already used with a different body, or twice in one batch."""

    def __init__(self, message: str) -> None:
        super().__init__({"order_id": [message]})


class JournalError(AliKassaError):
    """The journal could not be read or written; nothing is sent without it."""


class JournalInUseError(JournalError):
    """Another live batch run owns this journal; nothing was sent."""

    def __init__(self, message: str, holder: JournalHolder | None = None) -> None:
        super().__init__(message)
        #: who holds it, as far as the holder wrote it down
        self.holder = holder
