"""``alikassa demo``: the SDK end to end against a throwaway sandbox, in a few seconds.

1. certificates in a temporary directory (``alikassa keygen``);
2. the sandbox on a free loopback port, plus a notification receiver;
3. one payment per payment service family, one payout per payout family
   (the EUR card payout on a second, EUR account), a few scripted to end
   ``cancel``/``fail``;
4. their final statuses (polled), and one signed notification received and verified;
5. a payout whose connection drops after the gateway committed it:
   ``OutcomeUnknownError``, then found by ``order_id``;
6. a batch of payouts through random faults, checked to be created exactly once each.

Exit code 0 when every step behaved as expected.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Sequence
from contextlib import aclosing
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from .._batch import BatchProgress, ReconcilePolicy
from .._client import AliKassaClient
from .._defaults import DEMO_ACCOUNT
from .._errors import OutcomeUnknownError, SignatureError
from .._models import PaymentRequest, PaymentStatusResponse, PayoutRequest, PayoutStatusResponse
from .._retry import RetryPolicy
from ..sandbox.app import Sandbox
from ..sandbox.config import SandboxConfig
from ..sandbox.faults import Fault
from ..sandbox.keys import generate_certs
from ..sandbox.server import LoopbackServer, SandboxServer
from ..services import build_payment, build_payout
from ..webhooks import Notification, NotificationVerifier
from . import verbosity

__all__ = ["DEMO_ACCOUNT", "EUR_ACCOUNT", "PAYMENTS", "PAYOUTS", "run_demo"]

EUR_ACCOUNT = "5f1c2a44-7b3e-4c0d-9a61-2f8e6d4b1c07"
_IP = "18.191.80.10"
_RU = {"customer_ip": _IP, "customer_user_id": "u-42"}
_NAMES = {"customer_first_name": "Budi", "customer_last_name": "Santoso"}

#: (family, service, amount, fields): amounts ending .91/.92 are scripted to cancel/fail
PAYMENTS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("RU card number, hosted", "payment_card_number_rub_hpp", "500.00", _RU),
    (
        "RU card number, H2H",
        "payment_card_number_rub_card",
        "1500.00",
        {**_RU, "customer_code": "sberbank"},
    ),
    ("RU SBP, H2H", "payment_card_sbp_rub_card", "750.00", _RU),
    ("RU SberPay, H2H", "payment_card_sberpay_rub_card", "990.00", _RU),
    ("RU payment account, hosted", "virtual_account_rub_hpp", "12000.00", _RU),
    ("RU payment account, H2H", "virtual_account_rub_card", "3000.91", _RU),
    (
        "card form, RUB",
        "payment_card_rub_hpp",
        "2500.00",
        {"customer_ip": _IP, "customer_browser_user_agent": "Mozilla/5.0 (demo)"},
    ),
    (
        "card form, UAH",
        "payment_card_uah_hpp",
        "400.00",
        {"customer_ip": _IP, "customer_browser_user_agent": "Mozilla/5.0 (demo)"},
    ),
    (
        "BD wallet (bKash)",
        "payment_card_bdt_hpp",
        "1200.00",
        {"customer_ip": _IP, "customer_code": "bkash"},
    ),
    ("PK bank", "payment_card_pkr_hpp", "3000.00", {"customer_ip": _IP, "customer_code": "HBL"}),
    (
        "PH online banking",
        "online_banking_php_hpp",
        "800.92",
        {"customer_ip": _IP, "customer_code": "BPI"},
    ),
    (
        "ID online banking",
        "online_banking_idr_hpp",
        "150000.00",
        {"customer_ip": _IP, "customer_code": "BCA", **_NAMES},
    ),
    (
        "MY online banking",
        "online_banking_myr_hpp",
        "120.00",
        {"customer_ip": _IP, "customer_code": "MAYBANK", **_NAMES},
    ),
    ("TH QR code", "qr_code_thb_hpp", "900.00", {"customer_ip": _IP, "customer_code": "PROMPTPAY"}),
    (
        "VN online banking",
        "online_banking_vnd_hpp",
        "250000.00",
        {"customer_ip": _IP, "customer_code": "VCB"},
    ),
)

#: (family, service, amount, fields, account)
PAYOUTS: tuple[tuple[str, str, str, dict[str, Any], str], ...] = (
    ("RU card", "payment_card_rub", "3000.00", {"number": "4111111111111111"}, DEMO_ACCOUNT),
    (
        "RU SBP (phone)",
        "payment_card_sbp_rub",
        "1500.00",
        {"number": "79031112233", "customer_code": "100000000111"},
        DEMO_ACCOUNT,
    ),
    (
        "RU payment account",
        "virtual_account_rub",
        "20000.91",
        {"number": "40817810099910004312", "customer_code": "sberbank", "bik_bank": "044525225"},
        DEMO_ACCOUNT,
    ),
    (
        "EUR card",
        "payment_card_eur",
        "120.00",
        {
            "number": "5555555555554444",
            "extra": {
                "card_exp_year": "29",
                "card_exp_month": "01",
                "card_holder": "JANE DOE",
                "card_country": "DE",
                "card_recipient_birth_date": "1990-12-15",
            },
        },
        EUR_ACCOUNT,
    ),
)

_BATCH_SIZE = 1000
_BATCH_FAULTS = (
    lambda: Fault.status(503),
    lambda: Fault.status(502),
    lambda: Fault.status(500),
    lambda: Fault.status(503, after_commit=True),
    Fault.drop_before_commit,
    Fault.drop_after_commit,
    Fault.html_200,
    Fault.truncated_json_200,
)


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _inbox(
    verifier: NotificationVerifier, received: asyncio.Queue[Notification | SignatureError]
) -> Starlette:
    async def notify(request: Request) -> PlainTextResponse:
        try:
            note = verifier.verify_notification(request.query_params, expected_account=DEMO_ACCOUNT)
        except SignatureError as exc:
            await received.put(exc)
            return PlainTextResponse("bad signature", status_code=400)
        await received.put(note)
        return PlainTextResponse("OK")

    return Starlette(routes=[Route("/alikassa/notify", notify)])


async def run_demo(*, verbose: int = 0, out: TextIO | None = None) -> int:
    """Run the demo; return the exit code (0: everything behaved).

    ``verbose``: 1 logs the SDK's requests (DEBUG), 2 adds httpx/httpcore.
    """
    out = out or sys.stdout
    sdk_logger = logging.getLogger("alikassa_async")
    quiet = logging.NullHandler()
    if verbose:
        verbosity.configure(verbose)
    else:  # the faults are deliberate: keep their warnings off the terminal
        sdk_logger.addHandler(quiet)
        sdk_logger.propagate = False
    try:
        with tempfile.TemporaryDirectory(prefix="alikassa-demo-") as tmp:
            return await _demo(Path(tmp), out)
    finally:
        if not verbose:
            sdk_logger.removeHandler(quiet)
            sdk_logger.propagate = True


async def _demo(tmp: Path, out: TextIO) -> int:
    failures: list[str] = []
    certs = generate_certs(tmp / "certs")
    out.write(f"certificates: {certs.root} (payment/, payout/, notification/)\n")
    sandbox = Sandbox.from_certs(
        certs, DEMO_ACCOUNT, config=SandboxConfig(wait_seconds=0.5, wait_polls=2)
    )
    sandbox.add_account(
        EUR_ACCOUNT,
        payment_public_key=certs.payment_public_pem(),
        payout_public_key=certs.payout_public_pem(),
        currency="EUR",
        balance=Decimal("50000.00"),
    )
    verifier = NotificationVerifier.from_pem(certs.notification_public_pem())
    received: asyncio.Queue[Notification | SignatureError] = asyncio.Queue()
    payment_cert, payout_cert = certs.payment_certificate(), certs.payout_certificate()
    fast = RetryPolicy(backoff_base=0.02, backoff_max=0.2, total_timeout=20)

    async with (
        SandboxServer(sandbox) as server,
        LoopbackServer(_inbox(verifier, received)) as inbox,
        AliKassaClient(
            DEMO_ACCOUNT, payment_cert, payout_cert, base_url=server.url, retry=fast
        ) as client,
        AliKassaClient(
            EUR_ACCOUNT, None, payout_cert, base_url=server.url, retry=fast
        ) as eur_client,
    ):
        out.write(f"sandbox: {server.url}  account {DEMO_ACCOUNT}\n\n")
        start_balance = (await client.balance()).balance

        # 3. one payment per family, one payout per family
        payments = []
        for n, (family, service, amount, fields) in enumerate(PAYMENTS, 1):
            extra: dict[str, Any] = {}
            if n == 1:  # the one that asks for a notification: '/' and non-ASCII in desc
                extra = {
                    "desc": "Order #1001 / Тест ✓",
                    "notification_endpoint_url": inbox.url + "/alikassa/notify",
                }
            request = build_payment(
                service, order_id=f"DEMO-P{n:02d}", amount=amount, **fields, **extra
            )
            payments.append((family, request, client.create_payment(request)))
        created_payments = await asyncio.gather(*(c for _, _, c in payments))
        payouts = []
        for n, (family, service, amount, fields, account) in enumerate(PAYOUTS, 1):
            payout = build_payout(service, order_id=f"DEMO-O{n:02d}", amount=amount, **fields)
            owner = client if account == DEMO_ACCOUNT else eur_client
            payouts.append((family, payout, owner, await owner.create_payout(payout)))

        # 4. final statuses
        waits: list[Awaitable[PaymentStatusResponse | PayoutStatusResponse]] = [
            client.wait_for_payment(id=c.id, timeout=15, interval=0.05, max_interval=0.2)
            for c in created_payments
        ]
        waits += [
            owner.wait_for_payout(id=c.id, timeout=15, interval=0.05, max_interval=0.2)
            for _, _, owner, c in payouts
        ]
        finals = await asyncio.gather(*waits)
        rows = [["kind", "family", "service", "order_id", "status", "amount", "commission"]]
        requests: list[tuple[str, str, PaymentRequest | PayoutRequest]] = [
            ("payment", f, r) for f, r, _ in payments
        ]
        requests += [("payout", f, r) for f, r, _, _ in payouts]
        for (kind, family, sent), status in zip(requests, finals, strict=True):
            amount_text = f"{sent.amount:.2f}"
            rows.append(
                [
                    kind,
                    family,
                    sent.service,
                    sent.order_id,
                    str(status.payment_status),
                    amount_text,
                    f"{status.commission_amount or 0:.2f}",
                ]
            )
            expected = {"91": "cancel", "92": "fail"}.get(amount_text[-2:], "paid")
            if status.payment_status != expected:
                failures.append(f"{sent.order_id}: {status.payment_status} != {expected}")
        _table(rows, out)

        try:
            note = await asyncio.wait_for(received.get(), timeout=10)
        except TimeoutError:
            failures.append("no notification arrived")
        else:
            if isinstance(note, SignatureError):
                failures.append(f"notification did not verify: {note}")
            else:
                out.write(
                    f"\nnotification: GET {inbox.url}/alikassa/notify  {note.type} "
                    f"{note.order_id} {note.payment_status}  signature OK "
                    f"({note.signature_hash}, {note.variant} layout)  desc={note.desc!r}\n"
                )
        end_balance = (await client.balance()).balance
        out.write(f"balance {DEMO_ACCOUNT[:8]}…: {start_balance:.2f} -> {end_balance:.2f} RUB\n")

        # 5. the connection drops after the gateway committed the payout
        sandbox.faults.add("v1/payout", Fault.drop_after_commit())
        doubtful = build_payout(
            "payment_card_rub", order_id="DEMO-DROP", amount="700", number="4111111111111111"
        )
        try:
            await client.create_payout(doubtful)
            failures.append("the dropped connection was not reported")
        except OutcomeUnknownError as exc:
            found = await client.payout_status(order_id=exc.order_id)
            times = sandbox.state.payout_creations["DEMO-DROP"]
            out.write(
                f"\nfault drop_after_commit on v1/payout: OutcomeUnknownError("
                f"{exc.order_id!r}) -> payout_status(order_id=...) finds id {found.id}, "
                f"{found.payment_status}; created {times} time(s)\n"
            )

        # 6. a batch through random faults
        failures += await _batch(client, sandbox, out)

    if failures:
        out.write("\nFAILED:\n" + "".join(f"  {f}\n" for f in failures))
        return 1
    out.write("\ndemo OK\n")
    return 0


async def _batch(client: AliKassaClient, sandbox: Sandbox, out: TextIO) -> list[str]:
    sandbox.faults.set_random(
        0.15, seed=7, choices=_BATCH_FAULTS, endpoints=("v1/payout", "v1/payout/status")
    )
    items = [
        build_payout(
            "payment_card_rub",
            order_id=f"DEMO-B{n:03d}",
            amount=f"{100 + n}",
            number="4111111111111111",
        )
        for n in range(_BATCH_SIZE)
    ]
    bar = _Progress(sys.stderr)
    counts: Counter[str] = Counter()
    reconcile = ReconcilePolicy(settle=0.3, backoff_base=0.05, backoff_max=0.2, pause=0.1)
    try:
        async with aclosing(
            client.payouts_batch(items, concurrency=16, reconcile=reconcile, progress=bar)
        ) as results:
            async for result in results:
                counts[str(result.outcome)] += 1
    finally:
        bar.close()
        sandbox.faults.set_random(0)
    fired = sum(1 for f in sandbox.faults.fired if f.order_id and f.order_id.startswith("DEMO-B"))
    created = sandbox.state.payout_creations
    twice = [o for o in (i.order_id for i in items) if created[o] > 1]
    out.write(
        f"\nbatch of {_BATCH_SIZE} payouts through {fired} random faults: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + f"; created twice: {len(twice)}\n"
    )
    problems = [f"{o} created {created[o]} times" for o in twice]
    if counts.get("created", 0) + counts.get("unknown", 0) != _BATCH_SIZE:
        problems.append(f"batch outcomes {dict(counts)}")
    return problems


class _Progress:
    """The batch progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, stream: TextIO) -> None:
        from .progress import ProgressBar

        self._bar = ProgressBar(stream) if stream.isatty() else None

    def __call__(self, progress: BatchProgress) -> None:
        if self._bar is not None:
            self._bar(progress)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
