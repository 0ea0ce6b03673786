"""Signed notifications, sent the way AliKassa sends them (API reference §8).

When a payment or payout with ``notification_endpoint_url`` becomes final, the
sandbox sends ``GET <url>?type=...&id=...&...&sign=...``: the 11 documented
fields in order (a field without a value is left out, as PHP's
``http_build_query`` drops nulls) plus ``sign`` = base64 RSA signature, with the
sandbox's notification key, over PHP ``json_encode`` of those 11 fields with
``id`` as an int and a missing one as ``null`` — exactly what the vendor's PHP
verification sample rebuilds. A non-200 answer (or no answer) is retried up to
``config.notification_attempts`` times with doubling backoff. Only hosts in
``config.notification_hosts`` (loopback by default) are contacted.

>>> delivery = sandbox.notifier.deliveries[-1]
>>> delivery.delivered, [a.status_code for a in delivery.attempts]
(True, [500, 200])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlencode, urlsplit

import attrs
import httpx

from .._encoding import php_json_encode
from .._signing import Certificate
from ..webhooks import NOTIFICATION_FIELDS
from .config import SandboxConfig
from .state import Record

__all__ = [
    "NOTIFICATION_FIELDS",
    "Delivery",
    "DeliveryAttempt",
    "Notifier",
    "notification_params",
    "signed_notification_bytes",
]

logger = logging.getLogger("alikassa_async.sandbox")


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def notification_params(record: Record) -> dict[str, str | None]:
    """The 11 notification fields of a final record, as strings (None: not sent)."""
    return {
        "type": record.kind,
        "id": str(record.id),
        "order_id": record.order_id,
        "payment_status": record.shown_status,
        "amount": _money(record.amount),
        "payment_amount": _money(record.payment_amount),
        "commission_amount": _money(record.commission_amount),
        "is_partial_payment": "1" if record.is_partial else "0",
        "account": record.account,
        "service": record.service,
        "desc": record.desc,
    }


def signed_notification_bytes(params: Mapping[str, str | None]) -> bytes:
    """What the vendor's PHP sample rebuilds from ``$_GET`` and verifies (§8.3)."""
    data: dict[str, object] = {field: params.get(field) for field in NOTIFICATION_FIELDS}
    data["id"] = int(str(params.get("id") or "0"))
    return php_json_encode(data)


@attrs.frozen
class DeliveryAttempt:
    at: datetime
    status_code: int | None
    error: str | None = None


@attrs.define(eq=False)
class Delivery:
    """One notification and every attempt to deliver it."""

    kind: str
    record_id: int
    order_id: str
    url: str
    #: the query parameters sent, ``sign`` included
    params: dict[str, str]
    #: the exact bytes that were signed
    signed: bytes
    attempts: list[DeliveryAttempt] = attrs.field(factory=list)
    delivered: bool = False
    done: bool = False
    #: why it was not sent at all (a host outside ``notification_hosts``, ...)
    skipped: str | None = None

    @property
    def full_url(self) -> str:
        separator = "&" if urlsplit(self.url).query else "?"
        return self.url + separator + urlencode(self.params)


class Notifier:
    """Builds, signs and delivers notifications in background tasks."""

    def __init__(self, key: Certificate, config: SandboxConfig) -> None:
        self.key = key
        self.config = config
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def build(self, record: Record, url: str) -> Delivery:
        values = notification_params(record)
        signed = signed_notification_bytes(values)
        params = {k: v for k, v in values.items() if v is not None}
        params["sign"] = self.key.sign(signed, self.config.notification_hash)
        return Delivery(record.kind, record.id, record.order_id, url, params, signed)

    def schedule(self, record: Record) -> Delivery | None:
        """Queue the notification of a record that just became final (if it asked for one)."""
        url = record.notification_url
        if url is None:
            return None
        delivery = self.build(record, url)
        self.deliveries.append(delivery)
        host = (urlsplit(url).hostname or "").lower()
        if host not in self.config.notification_hosts:
            delivery.skipped = f"host {host!r} is not in notification_hosts"
            delivery.done = True
            logger.warning(
                "notification for %s %s not sent: %s",
                record.kind,
                record.order_id,
                delivery.skipped,
            )
            return delivery
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            delivery.skipped = "no running event loop"
            delivery.done = True
            return delivery
        task = loop.create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
            self._client_loop = loop
        return self._client

    async def _deliver(self, delivery: Delivery) -> None:
        config = self.config
        try:
            for attempt in range(1, max(config.notification_attempts, 1) + 1):
                status: int | None = None
                error: str | None = None
                try:
                    response = await self._http().get(
                        delivery.full_url, timeout=config.notification_timeout
                    )
                    status = response.status_code
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:200]
                delivery.attempts.append(DeliveryAttempt(datetime.now(UTC), status, error))
                if status == 200:
                    delivery.delivered = True
                    return
                logger.info(
                    "notification %s %s attempt %d: %s",
                    delivery.kind,
                    delivery.order_id,
                    attempt,
                    status or error,
                )
                if attempt < config.notification_attempts:
                    pause = config.notification_backoff * 2 ** (attempt - 1)
                    await asyncio.sleep(min(pause, config.notification_max_backoff))
        finally:
            delivery.done = True

    async def wait_idle(self, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109
        """Wait until every scheduled notification was delivered or gave up."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop pending deliveries and close the HTTP client (safe to call twice)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            if self._client_loop is asyncio.get_running_loop():
                await client.aclose()
            self._client_loop = None
