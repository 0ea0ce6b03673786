"""Asyncio SDK for the AliKassa merchant API."""

import logging

from ._batch import BatchProgress, BatchResult, Outcome, ReconcilePolicy
from ._client import DEFAULT_BASE_URL, AliKassaClient
from ._defaults import __version__
from ._errors import (
    AliKassaError,
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InvalidRequestError,
    JournalError,
    JournalInUseError,
    NotFoundError,
    OrderIdConflictError,
    OutcomeUnknownError,
    PollingTimeoutError,
    RateLimitError,
    RequestValidationError,
    ServerError,
    SignatureError,
    TransportError,
)
from ._models import (
    AccountInfo,
    Balance,
    HistoryPage,
    HistoryRow,
    PaymentCreated,
    PaymentRequest,
    PaymentStatus,
    PaymentStatusResponse,
    PayoutCreated,
    PayoutRequest,
    PayoutStatusResponse,
    ServiceInfo,
)
from ._observe import (
    Hooks,
    OutcomeUnknownEvent,
    RequestEvent,
    ResponseEvent,
    RetryEvent,
)
from ._retry import RetryPolicy
from ._signing import Certificate, Verifier
from .journal import Journal, SQLiteJournal
from .services import build_payment, build_payout
from .webhooks import Notification, NotificationVerifier, Redirect

# A library never configures logging; this only silences "no handler" fallbacks.
logging.getLogger("alikassa_async").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_BASE_URL",
    "APIError",
    "AccountInfo",
    "AliKassaClient",
    "AliKassaError",
    "AuthenticationError",
    "Balance",
    "BatchProgress",
    "BatchResult",
    "Certificate",
    "ClientClosedError",
    "ConfigurationError",
    "HistoryPage",
    "HistoryRow",
    "Hooks",
    "InvalidRequestError",
    "Journal",
    "JournalError",
    "JournalInUseError",
    "NotFoundError",
    "Notification",
    "NotificationVerifier",
    "OrderIdConflictError",
    "Outcome",
    "OutcomeUnknownError",
    "OutcomeUnknownEvent",
    "PaymentCreated",
    "PaymentRequest",
    "PaymentStatus",
    "PaymentStatusResponse",
    "PayoutCreated",
    "PayoutRequest",
    "PayoutStatusResponse",
    "PollingTimeoutError",
    "RateLimitError",
    "ReconcilePolicy",
    "Redirect",
    "RequestEvent",
    "RequestValidationError",
    "ResponseEvent",
    "RetryEvent",
    "RetryPolicy",
    "SQLiteJournal",
    "ServerError",
    "ServiceInfo",
    "SignatureError",
    "TransportError",
    "Verifier",
    "__version__",
    "build_payment",
    "build_payout",
]
