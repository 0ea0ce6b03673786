"""Asyncio SDK for the AliKassa merchant API."""

from .client import DEFAULT_BASE_URL, AliKassaClient, ClientClosedError
from .errors import (
    AliKassaError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    PollingTimeoutError,
    RateLimitError,
    RequestValidationError,
    ServerError,
    SignatureError,
    TransportError,
)
from .models import (
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
from .retry import RetryPolicy
from .signing import Certificate, Verifier

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "AliKassaClient",
    "ClientClosedError",
    "RetryPolicy",
    "APIError",
    "AccountInfo",
    "AliKassaError",
    "AuthenticationError",
    "Balance",
    "Certificate",
    "ConfigurationError",
    "HistoryPage",
    "HistoryRow",
    "InvalidRequestError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PaymentCreated",
    "PaymentRequest",
    "PaymentStatus",
    "PaymentStatusResponse",
    "PayoutCreated",
    "PayoutRequest",
    "PayoutStatusResponse",
    "PollingTimeoutError",
    "RateLimitError",
    "RequestValidationError",
    "ServerError",
    "ServiceInfo",
    "SignatureError",
    "TransportError",
    "Verifier",
    "__version__",
]
