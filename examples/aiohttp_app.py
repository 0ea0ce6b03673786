"""aiohttp.web: take a payment with AliKassa and receive its signed notification.

Run it (settings from the environment, see :meth:`Settings.from_env`)::

    ALIKASSA_ACCOUNT=93d5df06-... ALIKASSA_PAYMENT_CERT_DIR=cert/payment \\
    ALIKASSA_NOTIFICATION_KEY=cert/notification/public.pem \\
    python -m aiohttp.web -H 127.0.0.1 -P 8080 examples.aiohttp_app:init_app

- one ``AliKassaClient`` (one connection pool) lives as long as the app: a ``cleanup_ctx``
  owns it;
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
from dataclasses import dataclass

from aiohttp import web

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


CLIENT = web.AppKey("alikassa_client", AliKassaClient)
VERIFIER = web.AppKey("alikassa_verifier", NotificationVerifier)
STORE = web.AppKey("processed_notifications", ProcessedNotifications)
SETTINGS = web.AppKey("settings", Settings)


async def checkout(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    form = await request.post()
    site = settings.public_url or f"{request.scheme}://{request.host}"
    try:
        payment = build_payment(
            settings.service,
            order_id=str(form.get("order_id", "")),
            amount=str(form.get("amount", "")),
            customer_ip=request.remote or "127.0.0.1",
            customer_browser_user_agent=request.headers.get("User-Agent", "unknown"),
            notification_endpoint_url=site + NOTIFICATION_PATH,
            success_redirect_url=site + RETURN_PATH,
            fail_redirect_url=site + RETURN_PATH,
            **({"desc": str(form["desc"])} if form.get("desc") else {}),
        )
        created = await request.app[CLIENT].create_payment(payment)
    except RequestValidationError as exc:
        return web.json_response({"errors": exc.errors}, status=422)
    except OutcomeUnknownError as exc:
        # Maybe created, maybe not: do not reuse the order_id blindly; look it up first.
        logger.warning("payment for order %s: outcome unknown", exc.order_id)
        return web.Response(text="Payment service busy, please retry", status=503)
    if created.url is None:
        return web.Response(text="this service has no payment page", status=502)
    raise web.HTTPSeeOther(created.url)


async def notification(request: web.Request) -> web.Response:
    # Verify the parameters exactly as received: raw query (GET) or raw body (POST).
    body = await request.read() if request.method == "POST" else b""
    received: str | bytes = body or request.rel_url.raw_query_string
    try:
        note = request.app[VERIFIER].verify_notification(
            received, expected_account=request.app[CLIENT].account
        )
    except SignatureError as exc:
        logger.warning("refused an AliKassa notification: %s", exc)
        return web.Response(text="bad signature", status=400)
    if not request.app[STORE].record(note):
        logger.info("repeat notification %s %s ignored", note.type, note.id)
    return web.Response(text="OK")


async def payer_returned(request: web.Request) -> web.Response:
    body = await request.read() if request.method == "POST" else b""
    try:
        back = request.app[VERIFIER].verify_redirect(body or request.rel_url.raw_query_string)
    except SignatureError:
        return web.Response(text="bad signature", status=400)
    # Only proves the payer came back; the notification says whether they paid.
    return web.Response(text=f"Thank you! Order {back.order_id} is being confirmed.")


def create_app(
    settings: Settings | None = None,
    *,
    client_factory: Callable[[], AliKassaClient] | None = None,
    verifier: NotificationVerifier | None = None,
    store: ProcessedNotifications | None = None,
) -> web.Application:
    """Build the app; every argument defaults to what ``Settings.from_env()`` describes."""
    settings = settings or Settings.from_env()

    def default_client() -> AliKassaClient:
        cert = Certificate.from_dir(settings.payment_cert_dir)
        return AliKassaClient(settings.account, cert, base_url=settings.base_url)

    make_client = client_factory or default_client

    async def alikassa_client(app: web.Application) -> AsyncIterator[None]:
        async with make_client() as client:  # closed on cleanup, pool and all
            app[CLIENT] = client
            yield

    app = web.Application()
    app[SETTINGS] = settings
    app[VERIFIER] = verifier or NotificationVerifier.from_file(settings.notification_public_key)
    app[STORE] = store or ProcessedNotifications()
    app.cleanup_ctx.append(alikassa_client)
    app.router.add_post("/checkout", checkout)
    app.router.add_route("GET", NOTIFICATION_PATH, notification)
    app.router.add_route("POST", NOTIFICATION_PATH, notification)
    app.router.add_route("GET", RETURN_PATH, payer_returned)
    app.router.add_route("POST", RETURN_PATH, payer_returned)
    return app


def init_app(argv: list[str] | None = None) -> web.Application:
    """Entry point for ``python -m aiohttp.web``."""
    return create_app()
