"""The sandbox itself: an ASGI app that behaves like the AliKassa merchant API.

>>> sandbox = Sandbox.from_certs("certs", account=ACCOUNT)
>>> transport = sandbox.transport()                 # in-process, for httpx
>>> async with SandboxServer(sandbox) as server:    # or real sockets on loopback
...     client = AliKassaClient(ACCOUNT, pay, out, base_url=server.url)

One request goes: ``Account`` header (403 when no such account) -> ``Sign``
over the raw body with the public key of the certificate the path needs
(§3.1; 401 when missing/invalid, with a hint when the *other* certificate
would have matched) -> a scripted or random fault (``before`` phase) -> the
handler (validation of the raw JSON: 400 ``{"message": "The given data was
invalid.", "errors": {...}}``; then the record is committed) -> a fault of the
``after`` phase -> the answer.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from decimal import Decimal
from email.utils import formatdate
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import httpx
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .._encoding import php_json_encode
from .._errors import SignatureError
from .._signing import Certificate, Verifier
from .._validation import not_given
from . import rules, views
from .config import SandboxConfig
from .faults import ENDPOINTS, Fault, FaultPlan
from .keys import SandboxCerts, load_certs
from .notifier import Notifier
from .state import Account, InsufficientFundsError, Kind, Record, SandboxState

__all__ = ["Sandbox"]

logger = logging.getLogger("alikassa_async.sandbox")

INVALID = "The given data was invalid."
_CREATE_ENDPOINTS = frozenset({"v1/payment", "v1/payout"})
_ERROR_PAGES = {
    502: "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>",
    504: "<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway "
    "Time-out</h1></center><hr><center>nginx</center></body></html>",
}
_ERROR_MESSAGES = {500: "Server Error", 503: "Service Unavailable", 429: "Too Many Attempts."}
_HTML_200 = (
    "<!DOCTYPE html><html><head><title>AliKassa</title></head><body><h1>Technical "
    "works</h1><p>The service is temporarily unavailable.</p></body></html>"
)


def _json(status: int, data: object, headers: Mapping[str, str] | None = None) -> Response:
    # Laravel answers with PHP json_encode: "\/" and "\uXXXX" escapes, like the real thing.
    return Response(
        php_json_encode(data),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def _invalid(errors: Mapping[str, list[str]]) -> Response:
    return _json(400, {"message": INVALID, "errors": dict(errors)})


def _no_float(text: str) -> Decimal:
    return Decimal(text)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The request's fields, as a Laravel app sees them: not JSON -> no fields at all."""
    if "json" not in content_type.lower():
        return {}
    try:
        data = json.loads(body, parse_float=_no_float, parse_constant=_refuse_constant)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _verifier(key: bytes | str | Verifier) -> Verifier:
    return key if isinstance(key, Verifier) else Verifier.from_pem(key)


class Sandbox:
    """A local AliKassa: accounts, signature checks, validation, lifecycle, notifications,
    faults. An ASGI app — serve it with :class:`SandboxServer` or ``httpx.ASGITransport``.

    ``sandbox.state`` (records, balances, counters), ``sandbox.faults`` (fault script),
    ``sandbox.config`` (knobs) and ``sandbox.notifier.deliveries`` are for tests to read.
    """

    def __init__(
        self, notification_key: Certificate, *, config: SandboxConfig | None = None
    ) -> None:
        self.config = config or SandboxConfig()
        self.state = SandboxState(self.config)
        self.faults = FaultPlan()
        self.notifier = Notifier(notification_key, self.config)
        self.state.on_final = self._on_final
        self._timers: dict[tuple[str, int], asyncio.TimerHandle] = {}
        #: the loop the timers run on; another loop (or aclose) means: schedule them again
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._wakeups: set[asyncio.Future[None]] = set()
        self._late_commits: set[asyncio.Task[Response]] = set()

    @classmethod
    def from_certs(
        cls,
        certs: str | Path | SandboxCerts,
        account: str | Iterable[str],
        *,
        config: SandboxConfig | None = None,
        currency: str = "RUB",
        balance: Decimal | None = None,
    ) -> Sandbox:
        """A sandbox for a tree written by ``alikassa keygen`` (or ``generate_certs``).

        Every account in ``account`` registers the tree's payment and payout public keys.
        """
        tree = certs if isinstance(certs, SandboxCerts) else load_certs(certs)
        sandbox = cls(tree.notification_certificate(), config=config)
        accounts = [account] if isinstance(account, str) else list(account)
        payment, payout = tree.payment_public_pem(), tree.payout_public_pem()
        for uuid in accounts:
            sandbox.add_account(
                uuid,
                payment_public_key=payment,
                payout_public_key=payout,
                currency=currency,
                balance=balance,
            )
        return sandbox

    def add_account(
        self,
        uuid: str,
        *,
        payment_public_key: bytes | str | Verifier,
        payout_public_key: bytes | str | Verifier,
        currency: str = "RUB",
        balance: Decimal | None = None,
        services: Iterable[str] | None = None,
        allow_payments: bool = True,
        allow_payouts: bool = True,
    ) -> Account:
        """Register an account with the public keys its requests are signed with.

        ``services`` limits the enabled service codes (default: all the sandbox knows).
        """
        return self.state.add_account(
            Account(
                uuid=uuid.strip().lower(),
                payment_verifier=_verifier(payment_public_key),
                payout_verifier=_verifier(payout_public_key),
                balance=self.config.initial_balance if balance is None else Decimal(balance),
                currency=currency.upper(),
                services=frozenset(services) if services is not None else None,
                is_allowed_payment=allow_payments,
                is_allowed_payout=allow_payouts,
            )
        )

    # -- test API --------------------------------------------------------------

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport that calls this app in-process (no sockets)."""
        return httpx.ASGITransport(app=self)

    def finalise(
        self,
        kind: Kind,
        *,
        order_id: str | None = None,
        id: int | None = None,
        status: str | None = None,
    ) -> Record:
        """Make a payment/payout final now: its scripted outcome or ``status``.

        >>> sandbox.finalise("payout", order_id="P-1", status="fail")
        """
        table = self.state.payments if kind == "payment" else self.state.payouts
        if id is not None:
            record = table.get(int(id))
        else:
            record = next((r for r in reversed(table.values()) if r.order_id == order_id), None)
        if record is None:
            raise KeyError(f"no {kind} with id={id!r} order_id={order_id!r}")
        return self.state.finalise(record, status)

    def finalise_all(self) -> list[Record]:
        """Finalise every pending record that has a scripted final status."""
        pending = [
            r for r in self.state.records() if not r.is_final and r.outcome.final is not None
        ]
        return [self.state.finalise(r) for r in pending]

    async def wait_notifications(self, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109
        """Wait until every notification scheduled so far was delivered or gave up."""
        await self.notifier.wait_idle(timeout)

    async def aclose(self) -> None:
        """Stop timers, wake delayed requests, cancel deliveries. The sandbox stays usable."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._timer_loop = None
        for task in list(self._late_commits):  # a stopped gateway commits nothing more
            task.cancel()
        for wakeup in list(self._wakeups):
            if not wakeup.done():
                wakeup.set_result(None)
        await self.notifier.aclose()

    # -- lifecycle plumbing ----------------------------------------------------

    def _on_final(self, record: Record) -> None:
        handle = self._timers.pop((record.kind, record.id), None)
        if handle is not None:
            handle.cancel()
        self.notifier.schedule(record)

    def _schedule_final(self, record: Record) -> None:
        wait = self.config.wait_seconds
        if wait is None or record.outcome.final is None or record.is_final:
            return
        loop = asyncio.get_running_loop()
        delay = max(record.created_monotonic + wait - time.monotonic(), 0.0)
        self._timers[(record.kind, record.id)] = loop.call_later(delay, self._timer_fired, record)

    def _ensure_timers(self) -> None:
        """After :meth:`aclose` or on a new event loop, re-arm the timers of pending records."""
        loop = asyncio.get_running_loop()
        if self._timer_loop is loop:
            return
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._timer_loop = loop
        for record in self.state.records():
            self._schedule_final(record)

    def _timer_fired(self, record: Record) -> None:
        self._timers.pop((record.kind, record.id), None)
        if not record.is_final:
            self.state.finalise(record)

    async def _sleep(self, seconds: float) -> None:
        """A sleep that :meth:`aclose` cuts short, so a server can stop promptly."""
        wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakeups.add(wakeup)
        try:
            await asyncio.wait({wakeup}, timeout=seconds)
        finally:
            self._wakeups.discard(wakeup)

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._http(scope, receive, send)
        except ClientDisconnect:
            # The client hung up before its request was read (or our answer was sent):
            # nobody is left to answer, and it is not the sandbox's error.
            logger.debug("client disconnected from %s before its answer", scope.get("path"))

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        path = scope["path"].strip("/")
        if path.startswith("pay/"):
            response = await self._hosted_page(request, path[4:])
        elif path in ("", "health"):
            response = _json(
                200, {"service": "alikassa_async sandbox", "endpoints": list(ENDPOINTS)}
            )
        elif path not in ENDPOINTS:
            response = _json(404, {"message": "Not Found."})
        elif request.method != "POST":
            response = _json(
                405,
                {
                    "message": f"The {request.method} method is not supported "
                    f"for route {path}. Supported methods: POST."
                },
                {"Allow": "POST"},
            )
        else:
            await self._api(path, request, scope, receive, send)
            return
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _api(
        self, endpoint: str, request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self._ensure_timers()
        body = await request.body()
        account, refusal = self._authenticate(endpoint, request.headers, body)
        if refusal is not None or account is None:
            self.state.refused_requests[endpoint] += 1
            await cast(Response, refusal)(scope, receive, send)
            return
        self.state.requests[endpoint] += 1
        data = _parse_body(body, request.headers.get("content-type", ""))
        order_id = data.get("order_id") if isinstance(data.get("order_id"), str) else None
        fault = self.faults.take(endpoint, order_id)
        response: Response | None = None
        if fault is not None and fault.phase == "before":
            logger.info("fault %s on %s", fault.describe(), endpoint)
            response = await self._before_commit(fault, send, endpoint)
            if response is None and fault.kind == "drop":
                return
        if response is None:
            if self.config.commit_delay > 0 and endpoint in _CREATE_ENDPOINTS:
                response = await self._late_commit(endpoint, account, data, str(request.base_url))
            else:
                response = self._handle(endpoint, account, data, str(request.base_url))
            if fault is not None and fault.phase == "after":
                logger.info("fault %s on %s", fault.describe(), endpoint)
                response = await self._after_commit(fault, response, send)
                if response is None:
                    return
        await response(scope, receive, send)

    async def _late_commit(
        self, endpoint: str, account: Account, data: dict[str, Any], base_url: str
    ) -> Response:
        """Commit ``commit_delay`` seconds from now in a task of its own: a client that
        gives up (or a cancelled handler) does not stop the gateway from committing."""

        async def commit() -> Response:
            await self._sleep(self.config.commit_delay)
            return self._handle(endpoint, account, data, base_url)

        task = asyncio.create_task(commit())
        self._late_commits.add(task)
        task.add_done_callback(self._late_commits.discard)
        return await asyncio.shield(task)

    def _authenticate(
        self, endpoint: str, headers: Headers, body: bytes
    ) -> tuple[Account | None, Response | None]:
        account = self.state.account(headers.get("account", ""))
        if account is None:
            return None, _json(403, {"message": "Unknown account."})
        sign = headers.get("sign", "")
        if not sign:
            return None, _json(401, {"message": "The Sign header is missing."})
        needed = "payment" if endpoint.startswith("v1/payment") else "payout"
        verifier, other = (
            (account.payment_verifier, account.payout_verifier)
            if needed == "payment"
            else (account.payout_verifier, account.payment_verifier)
        )
        try:
            verifier.verify(body, sign)
        except SignatureError:
            wrong = "payout" if needed == "payment" else "payment"
            try:
                other.verify(body, sign)
            except SignatureError:
                return None, _json(401, {"message": "Invalid signature."})
            return None, _json(
                401,
                {
                    "message": f"Invalid signature: {endpoint} must be signed "
                    f"with the {needed} certificate, not the "
                    f"{wrong} certificate."
                },
            )
        return account, None

    # -- endpoints ---------------------------------------------------------------

    def _handle(
        self, endpoint: str, account: Account, data: dict[str, Any], base_url: str
    ) -> Response:
        base = self.config.public_url or base_url
        if endpoint == "v1/payment":
            return self._create("payment", account, data, base)
        if endpoint == "v1/payout":
            return self._create("payout", account, data, base)
        if endpoint == "v1/payment/status":
            return self._status("payment", account, data, base)
        if endpoint == "v1/payout/status":
            return self._status("payout", account, data, base)
        if endpoint == "v1/payment/history":
            return self._history(account, data, base)
        if endpoint == "v1/account/balance":
            return _json(200, views.balance(account, self.state.pending_payouts(account.uuid)))
        return _json(200, views.account_info(account))

    def _create(
        self, kind: Kind, account: Account, data: dict[str, Any], base_url: str
    ) -> Response:
        allowed = account.is_allowed_payment if kind == "payment" else account.is_allowed_payout
        if not allowed:
            return _json(403, {"message": f"{kind.capitalize()}s are not allowed on this account."})
        validate = rules.validate_payment if kind == "payment" else rules.validate_payout
        errors = validate(data, currency=account.currency, enabled=account.enabled)
        order_id = data.get("order_id")
        if isinstance(order_id, str) and order_id:
            requests = (
                self.state.payment_create_requests
                if kind == "payment"
                else self.state.payout_create_requests
            )
            requests[order_id] += 1
            if "order_id" not in errors and self.state.order_id_taken(kind, account.uuid, order_id):
                errors["order_id"] = ["The order id has already been taken."]
        if errors:
            return _invalid(errors)
        amount = rules.parse_amount(data["amount"])
        assert amount is not None  # validated above
        try:
            record = self.state.create(kind, account, data, amount)
        except InsufficientFundsError:
            return _invalid({"amount": ["Insufficient funds on the account balance."]})
        self._schedule_final(record)
        if kind == "payment":
            return _json(200, views.payment_created(record, base_url))
        return _json(200, views.payout_created(record))

    def _status(
        self, kind: Kind, account: Account, data: dict[str, Any], base_url: str
    ) -> Response:
        errors = rules.validate_lookup(data)
        if errors:
            return _invalid(errors)
        record = self.state.find(
            kind, account.uuid, id=data.get("id"), order_id=data.get("order_id")
        )
        if record is None or not self.state.visible(record):
            return self._not_found(kind, data)
        self.state.poll(record)
        if kind == "payment":
            return _json(200, views.payment_status(record, base_url))
        return _json(200, views.payout_status(record))

    def _not_found(self, kind: Kind, data: Mapping[str, Any]) -> Response:
        if self.config.not_found_status == 404:
            return _json(404, {"message": f"{kind.capitalize()} not found."})
        field = "order_id" if not_given(data.get("id")) else "id"
        return _invalid({field: [f"The selected {field.replace('_', ' ')} is invalid."]})

    def _history(self, account: Account, data: dict[str, Any], base_url: str) -> Response:
        errors = rules.validate_history(data)
        if errors:
            return _invalid(errors)
        date_from, date_to = data.get("date_from") or "", data.get("date_to") or ""
        rows = [r for r in self.state.payments.values() if r.account == account.uuid]
        rows = [
            r
            for r in rows
            if (not date_from or r.created_at.strftime("%Y-%m-%d") >= date_from)
            and (not date_to or r.created_at.strftime("%Y-%m-%d") <= date_to)
        ]
        rows.sort(key=lambda r: r.id, reverse=True)
        page = int(data.get("page") or 1)
        per_page = int(data.get("paginate") or self.config.history_page_size)
        return _json(200, views.history_page(rows, page=page, per_page=per_page, base_url=base_url))

    # -- hosted payment page (for trying the flow in a browser) ----------------

    async def _hosted_page(self, request: Request, uuid: str) -> Response:
        record = next((r for r in self.state.payments.values() if r.uuid == uuid), None)
        if record is None:
            return HTMLResponse("<h1>No such payment</h1>", status_code=404)
        if request.method == "POST":
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            action = (form.get("action") or [""])[0]
            if action in ("paid", "cancel", "fail") and not record.is_final:
                self.state.finalise(record, action)
        title = f"Payment {html.escape(record.order_id)}: {record.amount:.2f}"
        buttons = (
            ""
            if record.is_final
            else (
                '<form method="post"><button name="action" value="paid">Pay</button> '
                '<button name="action" value="cancel">Cancel</button> '
                '<button name="action" value="fail">Fail</button></form>'
            )
        )
        return HTMLResponse(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>AliKassa sandbox</h1><p>{title} ({html.escape(record.service)})</p>"
            f"<p>Status: <b>{html.escape(record.shown_status)}</b></p>{buttons}</body></html>"
        )

    # -- faults ------------------------------------------------------------------

    async def _before_commit(self, fault: Fault, send: Send, endpoint: str) -> Response | None:
        """Run a ``before`` fault: a response to send instead, or None (go on / dropped)."""
        if fault.kind == "redirect":
            return Response(
                b"",
                status_code=fault.status_code or 307,
                headers={"Location": fault.location or "/" + endpoint},
            )
        if fault.kind == "delay":
            await self._sleep(fault.seconds)
            return None
        if fault.kind == "drop":
            await self._drop(send)
            return None
        return self._fault_response(fault, None)

    async def _after_commit(self, fault: Fault, real: Response, send: Send) -> Response | None:
        if fault.kind == "delay":
            await self._sleep(fault.seconds)
            return real
        if fault.kind == "drop":
            await self._drop(send)
            return None
        if fault.kind == "slow_headers":
            return await self._trickle_head(real, send, fault.seconds)
        return self._fault_response(fault, real)

    def _fault_response(self, fault: Fault, real: Response | None) -> Response:
        real_body = (
            bytes(real.body)
            if real is not None
            else php_json_encode({"payment_status": "wait", "id": 0})
        )
        if fault.kind == "status":
            code = fault.status_code or 500
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = (
                    formatdate(time.time() + fault.retry_after, usegmt=True)
                    if fault.http_date
                    else f"{fault.retry_after:g}"
                )
            if code in _ERROR_PAGES:
                return HTMLResponse(_ERROR_PAGES[code], status_code=code, headers=headers)
            message = _ERROR_MESSAGES.get(code, f"HTTP {code}")
            return _json(code, {"message": message}, headers)
        if fault.kind == "html_200":
            return HTMLResponse(_HTML_200)
        if fault.kind == "truncated_json_200":
            return Response(real_body[: max(len(real_body) // 2, 1)], media_type="application/json")
        if fault.kind == "json_array_200":
            return Response(b"[]", media_type="application/json")
        if fault.kind == "huge_body_200":
            return self._huge(fault.size)
        if fault.kind == "slow_body_200":
            return self._slow(
                real_body, real.status_code if real is not None else 200, fault.seconds
            )
        raise AssertionError(f"fault kind {fault.kind!r} has no case")

    def _huge(self, size: int) -> Response:
        head, tail = b'{"payment_status":"wait","id":0,"padding":"', b'"}'
        padding = max(size - len(head) - len(tail), 0)

        async def chunks() -> AsyncIterator[bytes]:
            yield head
            left = padding
            block = b"x" * 65536
            while left > 0:
                yield block[:left]
                left -= len(block)
            yield tail

        return StreamingResponse(
            chunks(),
            media_type="application/json",
            headers={"Content-Length": str(len(head) + padding + len(tail))},
        )

    def _slow(self, body: bytes, status: int, seconds: float) -> Response:
        pieces = max(min(len(body), 10), 1)
        step = max(len(body) // pieces, 1)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), step):
                yield body[start : start + step]
                await self._sleep(seconds / pieces)

        return StreamingResponse(
            chunks(),
            status_code=status,
            media_type="application/json",
            headers={"Content-Length": str(len(body))},
        )

    async def _trickle_head(self, real: Response, send: Send, seconds: float) -> Response | None:
        """Write ``real`` straight to the socket, its head a byte at a time over ``seconds``.

        In-process there is no socket: the whole answer starts ``seconds`` late instead."""
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if not isinstance(transport, asyncio.WriteTransport):
            await self._sleep(seconds)
            return real
        body = bytes(real.body)
        head = (
            f"HTTP/1.1 {real.status_code} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        for byte in range(len(head)):
            if transport.is_closing():
                break  # the client gave up
            transport.write(head[byte : byte + 1])
            await self._sleep(seconds / len(head))
        else:
            transport.write(body)
        transport.close()
        for _ in range(50):  # let the server notice, so it does not send a 500 of its own
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)
        return None

    async def _drop(self, send: Send) -> None:
        """Close the connection without a response.

        Under uvicorn the ASGI ``send`` is bound to the request cycle, which holds the
        socket's transport: abort it. In-process (httpx.ASGITransport) there is no socket,
        so raise what httpx raises when a server hangs up.
        """
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if isinstance(transport, asyncio.BaseTransport) and hasattr(transport, "abort"):
            transport.abort()
            for _ in range(50):  # let the server notice, so it does not log a missing response
                if getattr(cycle, "disconnected", True):
                    break
                await asyncio.sleep(0)
            return
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
