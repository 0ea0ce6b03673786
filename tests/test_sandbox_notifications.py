"""Notifications: signed GETs to a real loopback receiver, retries, and PHP verifying them."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from alikassa_async import NotificationVerifier, Verifier
from alikassa_async._encoding import php_json_encode
from alikassa_async.sandbox import Sandbox, SandboxCerts, SandboxConfig
from alikassa_async.sandbox.notifier import NOTIFICATION_FIELDS
from alikassa_async.sandbox.server import LoopbackServer

from .sandbox_helpers import ACCOUNT, Api, payment_body, payout_body

DESC = "Order #7 / Тест ✓ 😀"


class Receiver:
    """A merchant endpoint: records each request, answers the scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []  # (method, raw query string)
        self.answers: list[int] = []
        self.arrived = asyncio.Event()

    async def notify(self, request: Request) -> PlainTextResponse:
        self.requests.append((request.method, request.scope["query_string"]))
        code = self.answers.pop(0) if self.answers else 200
        if code == 200:
            self.arrived.set()
        return PlainTextResponse("OK" if code == 200 else "nope", status_code=code)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/notify", self.notify, methods=["GET", "POST"])])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    async with LoopbackServer(receiver.app()) as server:
        yield receiver, server.url + "/notify"


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(wait_seconds=None, wait_polls=0, notification_backoff=0.01)


async def test_a_final_payment_is_announced_by_a_signed_get(
    api: Api, sandbox: Sandbox, receiver: tuple[Receiver, str], alikassa_certs: SandboxCerts
) -> None:
    inbox, url = receiver
    await api.ok(
        "v1/payment",
        payment_body(amount="300.00", desc=DESC, notification_endpoint_url=url + "?shop=1"),
    )
    assert not inbox.requests  # nothing until it is final
    await api.ok("v1/payment/status", {"order_id": "A-1"})  # wait_polls=0: final now
    await asyncio.wait_for(inbox.arrived.wait(), 10)
    method, query = inbox.requests[0]
    assert method == "GET"
    params = parse_qsl(query.decode(), keep_blank_values=True)
    assert [k for k, _ in params] == ["shop", *NOTIFICATION_FIELDS, "sign"]
    received = dict(params)
    assert received["desc"] == DESC and received["payment_status"] == "paid"
    assert (received["amount"], received["commission_amount"]) == ("300.00", "9.00")
    assert received["is_partial_payment"] == "0" and received["account"] == ACCOUNT
    # The SDK's verifier accepts it exactly as the documented layout, SHA-1.
    note = NotificationVerifier.from_pem(
        alikassa_certs.notification_public_pem()
    ).verify_notification(query, expected_account=ACCOUNT)
    assert (note.variant, note.signature_hash, note.desc) == ("documented", "sha1", DESC)
    assert note.amount == Decimal("300.00")
    # And the signed bytes are PHP json_encode of the 11 fields, id as an int.
    signed = {f: received.get(f) for f in NOTIFICATION_FIELDS} | {"id": int(received["id"])}
    assert b"\\/" in php_json_encode(signed) and b"\\u0422" in php_json_encode(signed)
    Verifier.from_pem(alikassa_certs.notification_public_pem()).verify(
        php_json_encode(signed), received["sign"]
    )
    await sandbox.wait_notifications()
    delivery = sandbox.notifier.deliveries[0]
    assert delivery.delivered and [a.status_code for a in delivery.attempts] == [200]


async def test_a_payout_notification_leaves_out_what_it_does_not_have(
    api: Api, sandbox: Sandbox, receiver: tuple[Receiver, str], alikassa_certs: SandboxCerts
) -> None:
    inbox, url = receiver
    await api.ok("v1/payout", payout_body(amount="200.94", notification_endpoint_url=url))
    sandbox.finalise("payout", order_id="P-1")
    await asyncio.wait_for(inbox.arrived.wait(), 10)
    received = dict(parse_qsl(inbox.requests[0][1].decode()))
    assert received["type"] == "payout" and "desc" not in received  # null: not sent
    assert received["is_partial_payment"] == "1" and received["payment_amount"] == "100.47"
    note = NotificationVerifier.from_pem(
        alikassa_certs.notification_public_pem()
    ).verify_notification(inbox.requests[0][1])
    assert note.desc is None and note.is_partial_payment


async def test_non_200_answers_are_retried_with_backoff(
    api: Api, sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.answers = [500, 404]
    await api.ok("v1/payout", payout_body(notification_endpoint_url=url))
    sandbox.finalise("payout", order_id="P-1", status="cancel")
    await sandbox.wait_notifications()
    delivery = sandbox.notifier.deliveries[0]
    assert [a.status_code for a in delivery.attempts] == [500, 404, 200]
    assert delivery.delivered and len(inbox.requests) == 3
    assert len({q for _, q in inbox.requests}) == 1  # the same signed notification each time


async def test_delivery_gives_up_after_the_configured_attempts(
    api: Api, sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.answers = [503] * 10
    sandbox.config.notification_attempts = 3
    await api.ok("v1/payout", payout_body(notification_endpoint_url=url))
    sandbox.finalise("payout", order_id="P-1")
    await sandbox.wait_notifications()
    delivery = sandbox.notifier.deliveries[0]
    assert not delivery.delivered and delivery.done and len(inbox.requests) == 3


async def test_an_unreachable_endpoint_is_retried_then_abandoned(
    api: Api, sandbox: Sandbox
) -> None:
    closed = LoopbackServer(Receiver().app())
    await closed.start()
    url = closed.url + "/notify"
    await closed.stop()  # nothing listens there any more
    sandbox.config.notification_attempts = 2
    await api.ok("v1/payout", payout_body(notification_endpoint_url=url))
    sandbox.finalise("payout", order_id="P-1")
    await sandbox.wait_notifications()
    attempts = sandbox.notifier.deliveries[0].attempts
    assert len(attempts) == 2 and all(a.error and "Connect" in a.error for a in attempts)


async def test_only_loopback_hosts_are_contacted(api: Api, sandbox: Sandbox) -> None:
    await api.ok("v1/payout", payout_body(notification_endpoint_url="https://shop.example/cb"))
    sandbox.finalise("payout", order_id="P-1")
    delivery = sandbox.notifier.deliveries[0]
    assert delivery.skipped and "notification_hosts" in delivery.skipped
    assert delivery.attempts == []


async def test_notifications_can_be_signed_with_sha256(
    api: Api, sandbox: Sandbox, receiver: tuple[Receiver, str], alikassa_certs: SandboxCerts
) -> None:
    inbox, url = receiver
    sandbox.config.notification_hash = "sha256"
    await api.ok("v1/payment", payment_body(notification_endpoint_url=url))
    sandbox.finalise("payment", order_id="A-1", status="fail")
    await sandbox.wait_notifications()
    note = NotificationVerifier.from_pem(
        alikassa_certs.notification_public_pem()
    ).verify_notification(inbox.requests[0][1])
    assert (note.signature_hash, str(note.payment_status)) == ("sha256", "fail")
    assert note.payment_amount is None  # a failed payment has no paid amount: not sent


# The vendor's verification sample (API reference §8.3), run by real PHP on the query
# string the sandbox sent: parse it like $_GET, rebuild the 11 fields, openssl_verify.
PHP_VERIFY = r"""
parse_str($argv[1], $_GET);
$data = [
    'type' => $_GET['type'], 'id' => (int)$_GET['id'], 'order_id' => $_GET['order_id'],
    'payment_status' => $_GET['payment_status'], 'amount' => $_GET['amount'],
    'payment_amount' => $_GET['payment_amount'] ?? null,
    'commission_amount' => $_GET['commission_amount'] ?? null,
    'is_partial_payment' => $_GET['is_partial_payment'], 'account' => $_GET['account'],
    'service' => $_GET['service'], 'desc' => $_GET['desc'] ?? null,
];
$key = openssl_pkey_get_public(file_get_contents($argv[2]));
echo openssl_verify(json_encode($data), base64_decode($_GET['sign']), $key);
"""


@pytest.mark.skipif(shutil.which("php") is None, reason="php is not on PATH")
async def test_the_vendors_php_sample_verifies_sandbox_notifications(
    api: Api, sandbox: Sandbox, receiver: tuple[Receiver, str], alikassa_certs: SandboxCerts
) -> None:
    inbox, url = receiver
    await api.ok("v1/payment", payment_body(desc=DESC, notification_endpoint_url=url))
    await api.ok("v1/payout", payout_body(notification_endpoint_url=url))
    sandbox.finalise("payment", order_id="A-1")
    sandbox.finalise("payout", order_id="P-1", status="fail")
    await sandbox.wait_notifications()
    assert len(inbox.requests) == 2
    public = str(alikassa_certs.notification_dir / "public.pem")
    for _, query in inbox.requests:
        proc = await asyncio.create_subprocess_exec(
            "php",
            "-r",
            PHP_VERIFY,
            query.decode(),
            public,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert (out, proc.returncode) == (b"1", 0), err.decode()
