"""The FastAPI and aiohttp example apps, each under its real server, against the sandbox.

Each app runs on a loopback port (uvicorn; aiohttp's AppRunner + TCPSite), configured
only through its ``Settings`` (the sandbox's URL and certificate tree). The payer checks
out, pays on the sandbox's hosted page, and the sandbox delivers its signed notification
to the app over HTTP. Then the notification is replayed, tampered with field by field,
and re-signed with another key.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web

from alikassa_async import Certificate, PaymentStatus
from alikassa_async._encoding import php_json_encode
from alikassa_async.sandbox import SandboxConfig
from alikassa_async.sandbox.server import LoopbackServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FIELDS = (
    "type",
    "id",
    "order_id",
    "payment_status",
    "amount",
    "payment_amount",
    "commission_amount",
    "is_partial_payment",
    "account",
    "service",
    "desc",
)
# what a decoded query string would break: %, &, =, + (aiohttp's request.query_string)
DESC = 'Заказ №42 / test "quoted" \\ 😀 100%FF & a=b + c'


def load_example(name: str) -> ModuleType:
    module_name = f"alikassa_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def alikassa_sandbox_config() -> SandboxConfig:
    # Nothing becomes final on its own: the payer's click on the hosted page decides.
    return SandboxConfig(wait_seconds=None, wait_polls=None, notification_attempts=1)


class RunningApp:
    def __init__(self, url: str, store: Any, app: Any) -> None:
        self.url = url
        self.store = store
        self.app = app


@pytest.fixture(params=["fastapi_app", "aiohttp_app"])
async def running_app(
    request, alikassa_sandbox, alikassa_certs, alikassa_account
) -> AsyncIterator[RunningApp]:
    example = load_example(request.param)
    settings = example.Settings(
        account=alikassa_account,
        payment_cert_dir=str(alikassa_certs.payment_dir),
        notification_public_key=str(alikassa_certs.notification_dir / "public.pem"),
        base_url=alikassa_sandbox.url,
    )
    store = example.ProcessedNotifications()
    app = example.create_app(settings, store=store)
    if request.param == "fastapi_app":
        async with LoopbackServer(app) as server:  # uvicorn, 127.0.0.1, port 0
            yield RunningApp(server.url, store, app)
        assert app.state.client.is_closed  # the lifespan owned and closed the client
    else:
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            yield RunningApp(f"http://{host}:{port}", store, app)
        finally:
            await runner.cleanup()
        assert app[example.CLIENT].is_closed  # cleanup_ctx owned and closed the client


async def pay(
    http: httpx.AsyncClient, app: RunningApp, sandbox: Any, order_id: str, action: str = "paid"
) -> Any:
    """Check out on the app, pay on the sandbox's page, wait for the notification."""
    response = await http.post(
        app.url + "/checkout", data={"order_id": order_id, "amount": "500.00", "desc": DESC}
    )
    assert response.status_code == 303, response.text
    payment_page = response.headers["location"]
    assert payment_page.startswith(sandbox.url)
    assert (await http.post(payment_page, data={"action": action})).status_code == 200
    await sandbox.sandbox.wait_notifications()
    delivery = sandbox.sandbox.notifier.deliveries[-1]
    assert delivery.order_id == order_id and delivery.url.startswith(app.url)
    return delivery


async def test_payment_notification_is_verified_and_processed_once(
    running_app, alikassa_sandbox, alikassa_account
):
    async with httpx.AsyncClient() as http:
        delivery = await pay(http, running_app, alikassa_sandbox, "shop-1")
        assert delivery.delivered and [a.status_code for a in delivery.attempts] == [200]

        [note] = running_app.store.processed
        record = alikassa_sandbox.state.payments[delivery.record_id]
        assert note.type == "payment" and note.id == record.id
        assert note.order_id == "shop-1"
        assert note.payment_status == PaymentStatus.PAID
        assert note.amount == Decimal("500.00")
        assert note.commission_amount == record.commission_amount
        assert note.account == alikassa_account
        assert note.service == "payment_card_rub_hpp"
        assert note.desc == DESC  # '/', Cyrillic, quotes, backslash, emoji, %&=+: byte-exact
        assert note.variant == "documented" and note.signature_hash == "sha1"

        # AliKassa may deliver the same notification again (GET, or as a form POST).
        again = await http.get(delivery.full_url)
        assert (again.status_code, again.text) == (200, "OK")
        posted = await http.post(
            delivery.url,
            content=urlencode(delivery.params),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert (posted.status_code, posted.text) == (200, "OK")
        assert len(running_app.store.processed) == 1


async def test_failed_payment_is_reported_as_failed(running_app, alikassa_sandbox):
    async with httpx.AsyncClient() as http:
        await pay(http, running_app, alikassa_sandbox, "shop-2", action="fail")
    [note] = running_app.store.processed
    assert note.payment_status == PaymentStatus.FAIL and note.payment_status.is_final


async def test_tampered_or_foreign_notifications_get_400_and_nothing_is_processed(
    running_app, alikassa_sandbox, rsa_keys
):
    async with httpx.AsyncClient() as http:
        delivery = await pay(http, running_app, alikassa_sandbox, "shop-3")
        assert len(running_app.store.processed) == 1
        endpoint = delivery.url
        genuine = dict(delivery.params)

        for field in genuine:  # every sent field, sign included
            tampered = dict(genuine)
            value = tampered[field]
            tampered[field] = value[:-1] + ("7" if value[-1:] != "7" else "8")
            response = await http.get(endpoint, params=tampered)
            assert response.status_code == 400, field
        for field in FIELDS:  # a dropped field is signed as null: no longer matches
            if field in genuine:
                dropped = {k: v for k, v in genuine.items() if k != field}
                assert (await http.get(endpoint, params=dropped)).status_code == 400, field

        # The right bytes, signed with a key that is not AliKassa's notification key.
        form: dict[str, object] = {name: genuine.get(name) for name in FIELDS}
        form["id"] = int(genuine["id"])
        forged = {**genuine, "sign": Certificate(rsa_keys["other"]).sign(php_json_encode(form))}
        assert (await http.get(endpoint, params=forged)).status_code == 400
        # Junk and an empty request.
        assert (await http.get(endpoint)).status_code == 400
        assert (await http.post(endpoint, content=b"\xff" * 100)).status_code == 400

        assert len(running_app.store.processed) == 1
        # ... and the genuine one is still accepted (as a repeat).
        assert (await http.get(delivery.full_url)).status_code == 200
        assert len(running_app.store.processed) == 1


async def test_payer_return_is_verified(running_app, alikassa_certs):
    key = alikassa_certs.notification_certificate()
    redirect = {"order_id": "shop-4", "uuid": "b05119d2-206b-3d04-8365-293b3008b8b0"}
    sign = key.sign(php_json_encode(redirect))
    async with httpx.AsyncClient() as http:
        response = await http.post(
            running_app.url + "/alikassa/return", data={**redirect, "sign": sign}
        )
        assert response.status_code == 200 and "shop-4" in response.text
        response = await http.post(
            running_app.url + "/alikassa/return",
            data={**redirect, "order_id": "shop-5", "sign": sign},
        )
        assert response.status_code == 400
    assert running_app.store.processed == []  # a return alone processes nothing
