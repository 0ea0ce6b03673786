"""FastAPI: take a payment with AliKassa and receive its signed notification.

Run it (settings from the environment, see :meth:`Settings.from_env`)::

    ALIKASSA_ACCOUNT=93d5df06-... ALIKASSA_PAYMENT_CERT_DIR=cert/payment \\
    ALIKASSA_NOTIFICATION_KEY=cert/notification/public.pem \\
    uvicorn --factory examples.fastapi_app:create_app

- one ``AliKassaClient`` (one connection pool) lives as long as the app: the lifespan owns it;
- ``POST /checkout`` (form fields ``order_id``, ``amount``, optional ``desc``) creates a
  payment and redirects the payer to AliKassa's payment page;
- ``GET|POST /alikassa/notification`` verifies the signature, records the notification once
  (AliKassa may deliver it more than once), answers ``200 OK``; a bad signature gets ``400``
  and nothing is processed;
- ``POST /alikassa/return`` is where the payer comes back. That proves only that the payer
  came back, never that they paid: the notification decides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from alikassa_async import (
    DEFAULT_BASE_URL,
    AliKassaClient,
    Certificate,
    Notification,
    NotificationVerifier,
    OutcomeUnknownError,
    RequestValidationError,
    SignatureError,
    build_payment,
)

logger = logging.getLogger("shop")

NOTIFICATION_PATH = "/alikassa/notification"
RETURN_PATH = "/alikassa/return"


@dataclass(frozen=True)
class Settings:
    account: str
    payment_cert_dir: str
    notification_public_key: str
    base_url: str = DEFAULT_BASE_URL
    service: str = "payment_card_rub_hpp"
    #: This app's address as AliKassa reaches it; None: taken from the checkout request.
    public_url: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            account=os.environ["ALIKASSA_ACCOUNT"],
            payment_cert_dir=os.environ["ALIKASSA_PAYMENT_CERT_DIR"],
            notification_public_key=os.environ["ALIKASSA_NOTIFICATION_KEY"],
            base_url=os.environ.get("ALIKASSA_BASE_URL", DEFAULT_BASE_URL),
            service=os.environ.get("ALIKASSA_SERVICE", "payment_card_rub_hpp"),
            public_url=os.environ.get("APP_PUBLIC_URL"),
        )


class ProcessedNotifications:
    """Processes each notification once. In memory here; in your app, a table with a
    UNIQUE (type, id, payment_status) key written in the same transaction as the order."""

    def __init__(self) -> None:
        self.processed: list[Notification] = []
        self._keys: set[tuple[str, int, str]] = set()

    def record(self, note: Notification) -> bool:
        """True if ``note`` is new (and now processed), False for a repeat delivery."""
        key = (note.type, note.id, str(note.payment_status))
        if key in self._keys:  # no await between check and add: atomic under asyncio
            return False
        self._keys.add(key)
        self.processed.append(note)  # here: mark the order paid/failed, ship, email, ...
        return True


def create_app(
    settings: Settings | None = None,
    *,
    client_factory: Callable[[], AliKassaClient] | None = None,
    verifier: NotificationVerifier | None = None,
    store: ProcessedNotifications | None = None,
) -> FastAPI:
    """Build the app; every argument defaults to what ``Settings.from_env()`` describes."""
    settings = settings or Settings.from_env()
    verifier = verifier or NotificationVerifier.from_file(settings.notification_public_key)
    store = store or ProcessedNotifications()

    def default_client() -> AliKassaClient:
        cert = Certificate.from_dir(settings.payment_cert_dir)
        return AliKassaClient(settings.account, cert, base_url=settings.base_url)

    make_client = client_factory or default_client

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with make_client() as client:  # closed on shutdown, pool and all
            app.state.client = client
            yield

    app = FastAPI(lifespan=lifespan)
    app.state.store = store

    @app.post("/checkout")
    async def checkout(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        client: AliKassaClient = request.app.state.client
        site = settings.public_url or str(request.base_url).rstrip("/")
        try:
            payment = build_payment(
                settings.service,
                order_id=form.get("order_id", ""),
                amount=form.get("amount", ""),
                customer_ip=request.client.host if request.client else "127.0.0.1",
                customer_browser_user_agent=request.headers.get("user-agent", "unknown"),
                notification_endpoint_url=site + NOTIFICATION_PATH,
                success_redirect_url=site + RETURN_PATH,
                fail_redirect_url=site + RETURN_PATH,
                **({"desc": form["desc"]} if form.get("desc") else {}),
            )
            created = await client.create_payment(payment)
        except RequestValidationError as exc:
            return JSONResponse({"errors": exc.errors}, status_code=422)
        except OutcomeUnknownError as exc:
            # Maybe created, maybe not: do not reuse the order_id blindly; look it up first.
            logger.warning("payment for order %s: outcome unknown", exc.order_id)
            return PlainTextResponse("Payment service busy, please retry", status_code=503)
        if created.url is None:
            return PlainTextResponse("this service has no payment page", status_code=502)
        return RedirectResponse(created.url, status_code=303)

    @app.api_route(NOTIFICATION_PATH, methods=["GET", "POST"])
    async def notification(request: Request) -> Response:
        # Verify the parameters exactly as received: raw query (GET) or raw body (POST).
        body = await request.body() if request.method == "POST" else b""
        received: str | bytes = body or request.url.query
        client: AliKassaClient = request.app.state.client
        try:
            note = verifier.verify_notification(received, expected_account=client.account)
        except SignatureError as exc:
            logger.warning("refused an AliKassa notification: %s", exc)
            return PlainTextResponse("bad signature", status_code=400)
        if not store.record(note):
            logger.info("repeat notification %s %s ignored", note.type, note.id)
        return PlainTextResponse("OK")

    @app.api_route(RETURN_PATH, methods=["GET", "POST"])
    async def payer_returned(request: Request) -> Response:
        body = await request.body() if request.method == "POST" else b""
        try:
            back = verifier.verify_redirect(body or request.url.query)
        except SignatureError:
            return PlainTextResponse("bad signature", status_code=400)
        # Only proves the payer came back; the notification says whether they paid.
        return PlainTextResponse(f"Thank you! Order {back.order_id} is being confirmed.")

    return app
