"""The public surface is a contract: exported names are exactly these, every module says its own."""

from __future__ import annotations

import importlib
import pkgutil

import alikassa_async

PUBLIC = {
    "__version__",
    "AccountInfo",
    "AliKassaClient",
    "AliKassaError",
    "APIError",
    "AuthenticationError",
    "Balance",
    "BatchProgress",
    "BatchResult",
    "build_payment",
    "build_payout",
    "Certificate",
    "ClientClosedError",
    "ConfigurationError",
    "DEFAULT_BASE_URL",
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
    "ServerError",
    "ServiceInfo",
    "SignatureError",
    "SQLiteJournal",
    "TransportError",
    "Verifier",
}


def test_exported_names_are_exactly_the_public_api():
    assert set(alikassa_async.__all__) == PUBLIC
    namespace: dict[str, object] = {}
    exec("from alikassa_async import *", namespace)  # what a user's star import binds
    assert set(namespace) - {"__builtins__"} == PUBLIC
    for name in PUBLIC - {"__version__", "DEFAULT_BASE_URL"}:  # ours, not a re-export
        assert namespace[name].__module__.startswith("alikassa_async"), name  # type: ignore[attr-defined]


def test_every_public_module_declares_all_and_it_resolves():
    for info in pkgutil.walk_packages(alikassa_async.__path__, "alikassa_async."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"


def test_the_issue_contract_signatures_still_hold():
    import inspect

    params = inspect.signature(alikassa_async.AliKassaClient).parameters
    for name in (
        "account",
        "payment_cert",
        "payout_cert",
        "base_url",
        "signature_hash",
        "timeout",
        "max_connections",
        "max_keepalive_connections",
        "http2",
        "http_client",
        "retry",
    ):
        assert name in params, name
    for method in (
        "create_payment",
        "payment_status",
        "payment_history",
        "create_payout",
        "payout_status",
        "balance",
        "account_info",
        "wait_for_payment",
        "wait_for_payout",
        "watch_payment",
        "watch_payout",
        "payouts_batch",
        "aclose",
    ):
        assert callable(getattr(alikassa_async.AliKassaClient, method)), method
