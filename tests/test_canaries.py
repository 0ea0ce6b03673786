"""Secret canaries: a recognisable key, password, card and phone go through every call,
on every success and failure path, and must surface nowhere a human or a log shipper reads.

Planted: a real RSA key per certificate (its PEM lines and private exponent are searched
for), the archive password, a Luhn-valid card number, a phone number (SBP payout and
``customer_phone``), and every ``Sign`` header value actually sent. Paths: 200, 400,
401, 404, 429, 500, 502, a 200 of HTML, a dropped connection, a server that never
answers (read timeout) and a refused connection — over real loopback sockets (so
httpx/httpcore/h11 log at DEBUG too) and through ``httpx.MockTransport``. Searched:
every log record of every logger at DEBUG (message, args, extras, formatted
``exc_info``), every exception's ``str``/``repr``/traceback and its ``cause``, and
``repr()`` of every public object the calls made or returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alikassa_async import (
    AliKassaClient,
    AliKassaError,
    Certificate,
    ReconcilePolicy,
    RequestValidationError,
    RetryPolicy,
    build_payment,
    payouts,
)

from .conftest import ACCOUNT, write_archive
from .reliability_support import BACKENDS, H2Server, RawServer, http_response, read_request

#: the API reference's example answer of each endpoint (§6), as parsed JSON
DEFAULTS: dict[str, Any] = {
    "v1/payment": {
        "url": "https://pay-merchant.alikassa.com/u-1",
        "payment_status": "wait",
        "id": 108465371,
        "uuid": "bd291fe1-0000-4000-8000-000000000001",
        "success_redirect_url": None,
    },
    "v1/payment/status": {
        "order_id": "A-1",
        "id": 108465371,
        "payment_status": "paid",
        "amount": "300",
        "payment_amount": "350",
        "hold_at": None,
        "account_payment_amount": "290",
        "commission_amount": "10",
        "service_code": "payment_card_number_rub_hpp",
        "account_old_balance": "93.84000000",
        "account_new_balance": "383.84000000",
    },
    "v1/payment/history": {"data": [], "meta": {"current_page": 1, "last_page": 1}},
    "v1/payout": {"payment_status": "wait", "id": 100001524},
    "v1/payout/status": {
        "order_id": "P-1",
        "id": 100001524,
        "payment_status": "paid",
        "amount": "3000.00",
        "payment_amount": "3000.00",
        "is_partial_payment": False,
        "RRN": "11111111111",
        "commission_amount": "10",
    },
    "v1/account/balance": {
        "currency": "RUB",
        "balance": "93.84000000",
        "hold": "0.00000000",
        "rolling_reserve": "0.00000000",
        "pending_payouts": "1234.00000000",
    },
    "v1/account/info": {
        "is_allowed_payment": True,
        "is_allowed_payout": True,
        "payments": [
            {
                "method": "payment_card",
                "currency": "RUB",
                "service_code": "payment_card_rub_hpp",
                "status": "active",
            }
        ],
        "payouts": [
            {
                "method": "payment_card",
                "currency": "RUB",
                "service_code": "payment_card_rub",
                "status": "active",
            }
        ],
    },
}


def _luhn_complete(prefix: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return prefix + str((10 - total % 10) % 10)


PASSWORD = "Canary-Pass-7f3a9c51"
CARD = _luhn_complete("427638" + "00917734" + "5")  # 16 digits, Luhn-valid
BAD_CARD = CARD[:-1] + str((int(CARD[-1]) + 1) % 10)  # fails Luhn: the builder's error path
PHONE = "79035550199"
#: the recipient card an H2H payment answer carries (``cardNumber``)
H2H_CARD = _luhn_complete("220070" + "11223344" + "5")

SCENARIOS = ["ok", "400", "401", "404", "429", "500", "502", "html", "drop", "stall", "refused"]
LOGGERS = ("alikassa_async", "httpx", "httpcore", "h11", "hpack", "h2", "asyncio")

# -- the canary key material --------------------------------------------------------------


@dataclass
class Canaries:
    certs: dict[str, Certificate]
    needles: set[str] = field(default_factory=set)

    def add_key(self, key: rsa.RSAPrivateKey) -> None:
        for fmt, enc in (
            (
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.BestAvailableEncryption(PASSWORD.encode()),
            ),
            (serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()),
            (serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ):
            pem = key.private_bytes(serialization.Encoding.PEM, fmt, enc).decode()
            self.needles.update(
                line
                for line in pem.splitlines()
                if len(line) >= 32 and "-----" not in line and ":" not in line
            )
        d = key.private_numbers().d
        self.needles.update({str(d)[:40], format(d, "x")[:40], format(d, "X")[:40]})


@pytest.fixture(scope="module")
def canaries(tmp_path_factory: pytest.TempPathFactory) -> Canaries:
    root = tmp_path_factory.mktemp("canary-certs")
    found = Canaries(certs={})
    for role in ("payment", "payout"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        folder = write_archive(Path(root) / role, key, password=PASSWORD.encode())
        found.certs[role] = Certificate.from_dir(folder)
        found.add_key(key)
    found.needles.update({PASSWORD, CARD, BAD_CARD, H2H_CARD, PHONE, PHONE[1:]})
    return found


# -- the gateway: one scripted answer per scenario, on the wire or in-process ---------------


def answer_for(scenario: str, path: str) -> tuple[int, bytes, dict[str, str]] | str:
    """(status, body, headers), or one of "drop" / "stall" for the transport faults."""
    if scenario in ("drop", "stall"):
        return scenario
    if scenario == "ok":
        body: dict[str, Any] = dict(DEFAULTS[path])
        if path == "v1/payment":
            body |= {"cardNumber": H2H_CARD, "cardHolderName": "CANARY HOLDER"}
        if path == "v1/payout/status":
            body |= {"card_mask": CARD[:6] + "******" + CARD[-4:]}
        return 200, json.dumps(body).encode(), {}
    if scenario == "html":
        return 200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {}
    status = int(scenario)
    headers = {"Retry-After": "0"} if status == 429 else {}
    bodies = {
        400: {
            "message": "The given data was invalid.",
            "errors": {"number": ["The number format is invalid."]},
        },
        401: {"message": "Invalid signature"},
    }
    return status, json.dumps(bodies.get(status, {"message": "nope"})).encode(), headers


@dataclass
class Gateway:
    scenario: str = "ok"
    signs: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, headers, body = await read_request(reader)
            path = _.split()[1].decode().lstrip("/")
            self.signs.append(headers["sign"])
            self.bodies.append(body)
            answer = answer_for(self.scenario, path)
            if answer == "drop":
                return
            if answer == "stall":
                await asyncio.sleep(3600)
            status, payload, extra = answer  # type: ignore[misc]
            writer.write(http_response(status, payload, extra))
            await writer.drain()

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.signs.append(request.headers["sign"])
        self.bodies.append(request.content)
        if self.scenario == "refused":
            raise httpx.ConnectError("All connection attempts failed")
        answer = answer_for(self.scenario, request.url.path.lstrip("/"))
        if answer == "drop":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if answer == "stall":
            raise httpx.ReadTimeout("timed out")
        status, payload, extra = answer  # type: ignore[misc]
        return httpx.Response(status, content=payload, headers=extra)


# -- every call the SDK offers, with the canaries in its input --------------------------------

FAST_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_max=0.001, total_timeout=2.0)
FAST_RECONCILE = ReconcilePolicy(
    lookups=1, settle=0.0, backoff_base=0.001, backoff_max=0.001, pause=0.01
)


def payout_requests(tag: str) -> list[Any]:
    return [
        payouts.card(order_id=f"card-{tag}", amount="3000.00", number=CARD),
        payouts.sbp(
            order_id=f"sbp-{tag}", amount=1500, number="+" + PHONE, customer_code="100000000111"
        ),
        payouts.card_eur(
            order_id=f"eur-{tag}",
            amount="25.00",
            number=CARD,
            card_exp_year="29",
            card_exp_month="01",
            card_holder="JANE CANARY",
            card_country="UA",
            card_recipient_birth_date="1999-12-15",
        ),
    ]


def payment_request(tag: str) -> Any:
    return build_payment(
        "payment_card_rub_hpp",
        order_id=f"pay-{tag}",
        amount="500",
        customer_ip="18.191.80.10",
        customer_user_id="u-42",
        customer_phone="+" + PHONE,
        customer_browser_user_agent="Mozilla/5.0",
    )


async def every_call(client: AliKassaClient, tag: str, seen: list[object]) -> None:
    """Run each call; keep every result and every AliKassaError. Anything else fails."""
    card, sbp, eur = payout_requests(tag)
    payment = payment_request(tag)
    seen += [card, sbp, eur, payment, client]

    async def history() -> list[object]:
        return [row async for row in client.payment_history()]

    async def batch() -> list[object]:
        items = payout_requests(f"batch-{tag}")
        return [
            r async for r in client.payouts_batch(items, concurrency=3, reconcile=FAST_RECONCILE)
        ]

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.create_payment(payment),
        lambda: client.create_payout(card),
        lambda: client.create_payout(sbp),
        lambda: client.create_payout(eur),
        lambda: client.payment_status(order_id=payment.order_id),
        lambda: client.payout_status(order_id=card.order_id),
        lambda: client.payout_status(id=100001524),
        lambda: client.payment_history_page(page=1),
        history,
        lambda: client.balance(),
        lambda: client.account_info(),
        lambda: client.wait_for_payout(
            order_id=sbp.order_id, timeout=0.1, interval=0.02, max_interval=0.02
        ),
        batch,
    ]
    for call in calls:
        try:
            seen.append(await call())
        except AliKassaError as exc:
            seen.append(exc)
    try:
        payouts.card(order_id=f"bad-{tag}", amount="1.00", number=BAD_CARD)
    except RequestValidationError as exc:
        seen.append(exc)


# -- where a secret could surface ----------------------------------------------------------


def texts_of(obj: object) -> list[str]:
    """What a human or a log shipper could read from ``obj``."""
    texts = [repr(obj)]
    if isinstance(obj, list):
        for item in obj:
            texts += texts_of(item)
    if isinstance(obj, BaseException):
        texts += [str(obj), "".join(traceback.format_exception(obj))]
        for attr in ("cause", "last_status", "error", "errors"):
            value = getattr(obj, attr, None)
            if value is not None:
                texts += [repr(value), str(value)]
    for attr in ("error", "response"):  # BatchResult
        value = getattr(obj, attr, None)
        if value is not None and not isinstance(obj, BaseException):
            texts += texts_of(value)
    return texts


def record_texts(record: logging.LogRecord) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(record), repr(record.__dict__), str(record.msg), repr(record.args)]


def assert_no_canary(texts: list[str], needles: set[str]) -> None:
    for text in texts:
        for needle in needles:
            assert needle not in text, f"canary {needle[:12]}… leaked into: {text[:300]}"


@contextlib.contextmanager
def debug_logging(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield


@pytest.fixture
async def gateway_server() -> AsyncIterator[tuple[Gateway, RawServer]]:
    gateway = Gateway()
    async with RawServer(gateway.serve) as server:
        yield gateway, server


@pytest.mark.parametrize("transport", [*(f"wire-{b}" for b in BACKENDS), "mock"])
async def test_no_canary_in_logs_errors_or_reprs(canaries, caplog, gateway_server, transport):
    gateway, server = gateway_server
    seen: list[object] = [*canaries.certs.values(), FAST_RETRY, FAST_RECONCILE]
    closed_port = await _closed_port()
    with debug_logging(caplog):
        for scenario in SCENARIOS:
            gateway.scenario = scenario
            base_url = f"http://127.0.0.1:{closed_port}" if scenario == "refused" else server.url
            options: dict[str, Any] = (
                {"transport": httpx.MockTransport(gateway.handle)}
                if transport == "mock"
                else {
                    "timeout": 0.1 if scenario == "stall" else 5.0,
                    "http_backend": transport.removeprefix("wire-"),
                }
            )
            async with AliKassaClient(
                ACCOUNT,
                canaries.certs["payment"],
                canaries.certs["payout"],
                base_url=base_url,
                retry=FAST_RETRY,
                **options,
            ) as client:
                await every_call(client, f"{transport}-{scenario}", seen)
                seen.append(client)

    # The canaries really went out: cards and phones in the bodies, many signatures.
    sent = b"".join(gateway.bodies)
    assert CARD.encode() in sent and PHONE.encode() in sent
    assert len(gateway.signs) > 10 * (len(SCENARIOS) - 1)
    # And the harness really observes: the SDK and (on the wire) httpcore logged at DEBUG.
    names = {r.name.split(".")[0] for r in caplog.records}
    assert "alikassa_async" in names
    if transport == "wire-httpx":  # (the SDK's own lane pool bypasses httpx's request logging)
        assert "httpcore" in names
    if transport == "wire-builtin":  # the built-in sender logs its connections at DEBUG
        assert any(r.name == "alikassa_async.http" for r in caplog.records)
    assert any(isinstance(o, AliKassaError) for o in seen)

    needles = canaries.needles | set(gateway.signs)
    texts = [t for record in caplog.records for t in record_texts(record)]
    texts += [t for obj in seen for t in texts_of(obj)]
    assert_no_canary(texts, needles)


async def test_no_sign_in_hpack_debug_logs_over_http2(canaries, caplog, tmp_path):
    """hpack logs every header it encodes at DEBUG; the SDK blanks the Sign value there.

    A real HTTP/2 exchange (TLS + ALPN h2 on loopback) with the root logger at DEBUG,
    as ``logging.basicConfig(level=logging.DEBUG)`` would set it.
    """
    signs: list[str] = []
    scenario = ["ok"]

    def respond(headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        signs.append(headers["sign"])
        answer = answer_for(scenario[0], headers[":path"].lstrip("/"))
        assert not isinstance(answer, str)
        return answer[0], answer[1]

    seen: list[object] = []
    with debug_logging(caplog):
        async with H2Server(respond, tmp_path) as server:
            for scenario[0] in ("ok", "400", "500"):
                async with AliKassaClient(
                    ACCOUNT,
                    canaries.certs["payment"],
                    canaries.certs["payout"],
                    base_url=server.url,
                    verify=server.ca,
                    http2=True,
                    retry=FAST_RETRY,
                ) as client:
                    await every_call(client, f"h2-{scenario[0]}", seen)
    assert len(signs) > 20
    # The in-process test server's hpack *decoder* logs the request headers it receives;
    # a client only ever decodes response headers, so those records are the server's.
    client_side = [
        r
        for r in caplog.records
        if not (r.name == "hpack.hpack" and str(r.msg).startswith("Decod"))
    ]
    texts = [t for record in client_side for t in record_texts(record)]
    texts += [t for obj in seen for t in texts_of(obj)]
    assert_no_canary(texts, canaries.needles | set(signs))
    hpack = [r for r in caplog.records if r.name.startswith("hpack")]
    # hpack 4.2+: "b'sign'=b'<redacted>'"; 4.0 and 4.1: "(b'sign', b'<redacted>')"
    assert any("b'sign'" in r.getMessage() and "b'<redacted>'" in r.getMessage() for r in hpack)


async def test_no_canary_when_key_loading_fails(tmp_path, canaries, caplog):
    """The load-time errors: wrong password, key in the wrong place, damaged PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    local = Canaries(certs={})
    local.add_key(key)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    errors: list[object] = []
    with debug_logging(caplog):
        for broken, password in (
            (pem, "wrong-" + PASSWORD),
            (pem[: len(pem) // 2], PASSWORD),
            (pem.replace(b"Proc-Type", b"Proc-Typo"), PASSWORD),
            (pem, ""),
        ):
            try:
                Certificate.from_pem(broken, password)
            except AliKassaError as exc:
                errors.append(exc)
    assert len(errors) == 4
    texts = [t for record in caplog.records for t in record_texts(record)]
    texts += [t for exc in errors for t in texts_of(exc)]
    assert_no_canary(texts, local.needles | {PASSWORD})


async def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


def test_canary_values_are_what_the_builders_accept():
    assert Decimal(payouts.card(order_id="x", amount=1, number=CARD).amount) == 1
    with pytest.raises(RequestValidationError):
        payouts.card(order_id="x", amount=1, number=BAD_CARD)


#: What each hpack release logs when it adds a header to its table (from the hpack sources):
#: the lowest the ``http2`` extra allows (4.0) and 4.1 pass the header as one tuple.
HPACK_ADD_FORMATS = {
    "hpack-4.0-4.1": (
        "Adding %s to the header table, sensitive:%s, huffman:%s",
        lambda name, value: ((name, value), False, True),
    ),
    "hpack-4.2+": (
        "Adding %s=%s to the header table, sensitive:%s, huffman:%s",
        lambda name, value: (name, value, False, True),
    ),
    "eviction": ("Evicting %s: %s from the header table", lambda name, value: (name, value)),
}


@pytest.mark.parametrize("fmt", HPACK_ADD_FORMATS)
@pytest.mark.parametrize("name", [b"sign", b"Sign", "sign"])
def test_sign_is_redacted_in_every_hpack_log_format(fmt, name, caplog, payout_cert):
    AliKassaClient(ACCOUNT, payout_cert=payout_cert)  # installs the filter
    secret = b"c2VjcmV0LXNpZ25hdHVyZQ==" if isinstance(name, bytes) else "c2VjcmV0LXNpZ25hdHVyZQ=="
    message, args = HPACK_ADD_FORMATS[fmt]
    with caplog.at_level(logging.DEBUG, logger="hpack"):
        for logger_name in ("hpack.hpack", "hpack.table"):
            logging.getLogger(logger_name).debug(message, *args(name, secret))
            logging.getLogger(logger_name).debug(message, *args(b"content-type", b"json"))
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 4
    assert not any("c2VjcmV0" in t for t in texts), texts
    assert sum("redacted" in t for t in texts) == 2 and sum("json" in t for t in texts) == 2


class _Wire:
    """What the mock gateway saw; a plain repr, so a captured local shows nothing."""

    def __init__(self) -> None:
        self.signs: list[str] = []

    def __repr__(self) -> str:
        return "<wire>"


def _card_payout() -> object:
    return payouts.card(order_id="LOCALS-1", amount="10.00", number=CARD)


LOCALS_FAILURES = {
    "http_400": lambda request: httpx.Response(400, json={"message": "invalid"}),
    "http_500": lambda request: httpx.Response(500, json={"message": "oops"}),
    "read_error": httpx.ReadError,
    "connect_error": httpx.ConnectError,
    "html_200": lambda request: httpx.Response(200, text="<html></html>"),
}


@pytest.mark.parametrize("failure", LOCALS_FAILURES)
async def test_no_card_or_sign_in_tracebacks_with_captured_locals(failure, payout_cert):
    """What an error tracker capturing locals (Sentry's default) would ship: every frame of
    the exception and its whole chain, each local's repr, and the exception's attributes."""
    wire = _Wire()

    async def gateway(request: httpx.Request) -> httpx.Response:
        wire.signs.append(request.headers["sign"])
        await request.aread()
        make = LOCALS_FAILURES[failure]
        if isinstance(make, type):
            raise make("boom", request=request)
        return make(request)

    async with AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        transport=httpx.MockTransport(gateway),
        retry=RetryPolicy.disabled(),
    ) as client:
        try:
            await client.create_payout(_card_payout())  # type: ignore[arg-type]
        except AliKassaError as exc:
            caught = exc
        else:
            pytest.fail("the failure did not surface")
    assert wire.signs
    shipped = [caught, getattr(caught, "cause", None), getattr(caught, "__cause__", None)]
    texts = [
        "".join(traceback.TracebackException.from_exception(e, capture_locals=True).format())
        for e in shipped
        if e is not None
    ]
    texts += [repr(vars(e)) for e in shipped if e is not None]
    for text in texts:
        assert CARD not in text
        for sign in wire.signs:
            assert sign not in text
    assert "SignedBody" in texts[0] and "<redacted>" in texts[0]  # the frames were captured
