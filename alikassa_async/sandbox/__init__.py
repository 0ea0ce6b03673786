"""A local AliKassa merchant API for tests and demos (``pip install 'alikassa-async[sandbox]'``).

AliKassa has no public test environment (API reference §1); this is one. It
serves every endpoint (``v1/payment``, ``v1/payment/status``,
``v1/payment/history``, ``v1/payout``, ``v1/payout/status``,
``v1/account/balance``, ``v1/account/info``) with the documented shapes::

    alikassa keygen certs
    alikassa sandbox --certs certs --account 93d5df06-996c-48c3-9847-348d6b580b80

or from Python::

    sandbox = Sandbox.from_certs("certs", account=ACCOUNT)
    async with SandboxServer(sandbox) as server:       # uvicorn on 127.0.0.1, free port
        client = AliKassaClient(ACCOUNT, pay, out, base_url=server.url)
    # or in-process: AliKassaClient(..., base_url="http://sandbox", transport=sandbox.transport())

**Checks.** ``Account`` must be a registered account, else **403**. ``Sign``
must verify over the raw body with the public key of the certificate the path
needs (payment for ``v1/payment*``; payout for ``v1/payout*`` and
``v1/account/*``), SHA-1 or SHA-256, else **401** (with a hint when the other
certificate would have matched). 401 means "your signature", 403 means "no
such account / not allowed on this account". The raw JSON is validated field
by field (types, lengths, formats, per-service required fields; see
:mod:`.rules`): **400** ``{"message": "The given data was invalid.",
"errors": {field: [...]}}``. A reused ``order_id`` is a 400 on ``order_id``
("The order id has already been taken."); a payout larger than the balance is
a 400 on ``amount``.

**Lifecycle.** Everything starts ``wait``. A record becomes final after
``config.wait_seconds`` (default 2 s) or once ``config.wait_polls`` status
requests (default 1) have answered ``wait``, whichever comes first. The final
status is scripted (see :mod:`.outcomes`): ``order_id`` prefixes ``paid-``,
``cancel-``, ``fail-``, ``wait-`` (never final), ``partial-``, ``review-``;
else the cents of the amount: ``.91`` cancel, ``.92`` fail, ``.93`` never
final, ``.94`` partial, ``.95`` answers ``processing`` while pending; anything
else ``paid``. ``sandbox.finalise("payout", order_id=..., status=...)`` forces one.

**Money.** A paid payment credits ``payment_amount - commission`` (3 %); a
payout debits ``amount + commission`` (1 %) when created and refunds it on
``cancel``/``fail``. Status answers carry ``commission_amount``,
``account_payment_amount``, ``account_old_balance``/``account_new_balance``.

**Notifications.** A final record with ``notification_endpoint_url`` is
announced by GET with the 11 signed fields of §8.2 (see :mod:`.notifier`),
retried on non-200 with backoff, to loopback hosts only.

**Faults.** ``sandbox.faults.add("v1/payout", Fault.status(503), times=3)``;
the kinds are the table :data:`FAULT_KINDS` (see :mod:`.faults`).

The pytest plugin (:mod:`.pytest_plugin`) gives ``alikassa_sandbox``,
``alikassa_certs`` and ``alikassa_client`` fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import SandboxConfig
from .faults import FAULT_KINDS, Fault, FaultKind, FaultPlan
from .keys import SandboxCerts, generate_certs, load_certs, write_archive
from .outcomes import Outcome, plan_outcome
from .state import Account, LedgerEntry, Record, SandboxState

if TYPE_CHECKING:  # the server parts need the `sandbox` extra (starlette, uvicorn)
    from .app import Sandbox
    from .server import LoopbackServer, SandboxServer, ThreadedSandboxServer

__all__ = [
    "FAULT_KINDS",
    "Account",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "LedgerEntry",
    "LoopbackServer",
    "Outcome",
    "Record",
    "Sandbox",
    "SandboxCerts",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "ThreadedSandboxServer",
    "generate_certs",
    "load_certs",
    "plan_outcome",
    "write_archive",
]

_LAZY = {
    "Sandbox": "app",
    "LoopbackServer": "server",
    "SandboxServer": "server",
    "ThreadedSandboxServer": "server",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so `alikassa keygen` and the pytest plugin work without
    # starlette/uvicorn installed.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise ImportError(
            f"alikassa_async.sandbox.{name} needs the sandbox extra: "
            "pip install 'alikassa-async[sandbox]'"
        ) from exc
    return getattr(module, name)
