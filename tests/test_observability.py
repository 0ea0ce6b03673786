"""What production teams see: spans, metrics, request ids, structured logs and hooks.

OpenTelemetry is checked with the SDK's in-memory exporters (the SDK is a test
dependency; the package itself needs only ``opentelemetry-api``, extra ``otel``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from decimal import Decimal

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from alikassa_async import (
    AliKassaClient,
    ClientClosedError,
    ConfigurationError,
    Hooks,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    OutcomeUnknownEvent,
    PayoutRequest,
    RequestEvent,
    RequestValidationError,
    ResponseEvent,
    RetryEvent,
    RetryPolicy,
)
from alikassa_async._batch import Outcome, ReconcilePolicy

from .conftest import ACCOUNT, FAST_RETRY

CARD = "4111111111111111"
PHONE = "79031112233"


class _Recording(SimpleSpanProcessor):
    """Exports only while a test of this module runs: the provider stays set for the rest
    of the session (OpenTelemetry allows one), and other tests' spans must not pile up."""

    on = False

    def on_end(self, span) -> None:
        if self.on:
            super().on_end(span)


@pytest.fixture(scope="session")
def otel():
    """The process's tracer and meter providers, exporting to memory (set once)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    recording = _Recording(spans)
    provider.add_span_processor(recording)
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return spans, reader, recording


@pytest.fixture
def spans(otel):
    exporter, _, recording = otel
    exporter.clear()
    recording.on = True
    yield exporter
    recording.on = False
    exporter.clear()


def payout(order_id: str, amount: str = "10.00") -> PayoutRequest:
    return PayoutRequest(
        service="payment_card_rub",
        order_id=order_id,
        amount=Decimal(amount),
        fields={"number": CARD},
    )


def _metric_points(reader) -> dict[str, list]:
    points: dict[str, list] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_each_call_is_one_span_with_a_child_per_http_attempt(client, wire, spans):
    wire.script("v1/payout/status", httpx.Response(503), times=1)
    created = await client.create_payout(payout("OT-1"))
    await client.payout_status(order_id="OT-1")
    await client.balance()
    finished = spans.get_finished_spans()
    operations = [s for s in finished if s.name.startswith("alikassa.")]
    assert [s.name for s in operations] == [
        "alikassa.payout.create",
        "alikassa.payout.status",
        "alikassa.account.balance",
    ]
    create, status, _ = operations
    assert create.attributes["alikassa.order_id"] == "OT-1"
    assert create.attributes["alikassa.outcome"] == "created"
    attempts = [s for s in finished if s.name == "POST"]
    by_parent: dict[int, list] = {}
    for span in attempts:
        assert span.kind == trace.SpanKind.CLIENT
        by_parent.setdefault(span.parent.span_id, []).append(span)
    assert [len(by_parent[s.context.span_id]) for s in operations] == [1, 2, 1]
    retried = sorted(by_parent[status.context.span_id], key=lambda s: s.start_time)
    assert retried[0].attributes["http.response.status_code"] == 503
    assert retried[0].attributes["error.type"] == "503"
    assert "http.request.resend_count" not in retried[0].attributes
    assert retried[1].attributes["http.request.resend_count"] == 1
    assert retried[1].attributes["http.response.status_code"] == 200
    for span in attempts:
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["server.address"] == "127.0.0.1"
    assert created.id is not None


async def test_an_unknown_outcome_is_on_the_span_the_error_and_the_hook(
    wire, alikassa_certificates, spans, caplog
):
    seen: list[object] = []

    async def on_unknown(event: OutcomeUnknownEvent) -> None:
        seen.append(event)

    wire.script("v1/payout", httpx.Response(502), times=1)
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url="http://127.0.0.1",
        transport=wire,
        retry=FAST_RETRY,
        hooks=Hooks(on_outcome_unknown=on_unknown),
    ) as client:
        with (
            caplog.at_level(logging.DEBUG, logger="alikassa_async"),
            pytest.raises(OutcomeUnknownError) as caught,
        ):
            await client.create_payout(payout("OT-2"))
    error = caught.value
    assert error.request_id and error.request_id.startswith("ak_")
    [event] = seen
    assert event.order_id == "OT-2" and event.request_id == error.request_id
    [span] = [s for s in spans.get_finished_spans() if s.name == "alikassa.payout.create"]
    assert span.attributes["alikassa.outcome"] == "unknown"
    assert span.attributes["alikassa.request_id"] == error.request_id
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(r.alikassa["request_id"] == error.request_id for r in warnings)
    assert error.request_id in warnings[0].getMessage()


async def test_no_secret_reaches_a_span_or_a_metric(client, wire, spans, otel):
    _, reader, _ = otel
    await client.create_payout(
        PayoutRequest(
            service="payment_card_sbp_rub",
            order_id="OT-3",
            amount=Decimal("10.00"),
            fields={"number": PHONE, "customer_code": "100000000111"},
        )
    )
    await client.create_payout(payout("OT-4"))
    dumped = "".join(span.to_json() for span in spans.get_finished_spans())
    dumped += json.dumps(reader.get_metrics_data().to_json())
    for secret in (CARD, PHONE, CARD[-8:], ACCOUNT):
        assert secret not in dumped
    sent = wire.sent[-1]
    assert sent.headers["sign"] not in dumped


async def test_metrics_cover_durations_retries_outcomes_in_flight_and_journal_commits(
    client, wire, otel, tmp_path
):
    _, reader, _ = otel
    wire.script("v1/payout/status", httpx.Response(503), times=1)
    results = [
        r
        async for r in client.payouts_batch(
            [payout(f"OM-{i}") for i in range(5)],
            journal=tmp_path / "j.db",
            reconcile=ReconcilePolicy(settle=0.0),
        )
    ]
    assert {r.outcome for r in results} == {Outcome.CREATED}
    with pytest.raises(NotFoundError):  # a 503 then a 404: retried once, then refused
        await client.payout_status(order_id="never-made")
    points = _metric_points(reader)
    durations = points["http.client.request.duration"]
    assert sum(p.count for p in durations) >= 7
    assert any(p.attributes.get("http.response.status_code") == 503 for p in durations)
    assert sum(p.value for p in points["alikassa.client.retries"]) >= 1
    created = [
        p for p in points["alikassa.payouts"] if p.attributes["alikassa.outcome"] == "created"
    ]
    assert sum(p.value for p in created) >= 5
    assert [p.value for p in points["alikassa.batch.in_flight"]] == [0]  # back to zero
    assert sum(p.count for p in points["alikassa.journal.commit.duration"]) >= 10


async def test_a_batch_is_one_span_and_each_item_a_child_with_its_outcome(client, wire, spans):
    wire.script("v1/payout", httpx.Response(503), times=1)  # the first: in doubt, found
    results = {
        r.order_id: r
        async for r in client.payouts_batch(
            [payout(f"OB-{i}") for i in range(3)],
            reconcile=ReconcilePolicy(settle=0.05, backoff_base=0.01, backoff_max=0.02),
        )
    }
    finished = spans.get_finished_spans()
    [batch] = [s for s in finished if s.name == "alikassa.payouts.batch"]
    items = [s for s in finished if s.name == "alikassa.payout.batch_item"]
    assert len(items) == 3 and all(s.parent.span_id == batch.context.span_id for s in items)
    by_order = {s.attributes["alikassa.order_id"]: s for s in items}
    for order_id, result in results.items():
        assert by_order[order_id].attributes["alikassa.outcome"] == result.outcome.value
        assert by_order[order_id].attributes["alikassa.reconciled"] == result.reconciled
    # The client's own spans of an item are that item's children.
    creates = [s for s in finished if s.name == "alikassa.payout.create"]
    item_ids = {s.context.span_id for s in items}
    assert creates and all(s.parent.span_id in item_ids for s in creates)
    assert batch.attributes["alikassa.batch.created"] == 3


async def test_hooks_get_typed_events_and_a_raising_hook_is_ignored(
    wire, alikassa_certificates, caplog
):
    events: list[object] = []

    def broken(event: RequestEvent) -> None:
        events.append(event)
        raise RuntimeError("a bug in the caller's hook")

    async def response(event: ResponseEvent) -> None:
        events.append(event)

    wire.script("v1/account/balance", httpx.Response(503), times=1)
    hooks = Hooks(on_request=broken, on_response=response, on_retry=events.append)
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url="http://127.0.0.1",
        transport=wire,
        retry=FAST_RETRY,
        hooks=hooks,
    ) as client:
        with caplog.at_level(logging.ERROR, logger="alikassa_async"):
            balance = await client.balance()
    assert balance is not None
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RequestEvent", "ResponseEvent", "RetryEvent", "RequestEvent", "ResponseEvent"]
    assert len({e.request_id for e in events}) == 1  # one logical call
    retry = events[2]
    assert isinstance(retry, RetryEvent) and retry.error_type == "ServerError"
    assert [e.status_code for e in events if isinstance(e, ResponseEvent)] == [503, 200]
    assert "hook on_request raised" in caplog.text


def _payout(order_id: str) -> PayoutRequest:
    return PayoutRequest(
        service="payment_card_rub",
        order_id=order_id,
        amount=Decimal("10.00"),
        fields={"number": CARD},
    )


async def test_a_hook_that_cancels_itself_or_hangs_never_breaks_a_payout(
    wire, sandbox, alikassa_certificates, caplog
):
    async def cancels(event: ResponseEvent) -> None:
        raise asyncio.CancelledError  # a bug in the caller's hook, not a cancel of the call

    async def hangs(event: ResponseEvent) -> None:
        await asyncio.sleep(3600)

    policy = RetryPolicy(max_attempts=1, total_timeout=1.0)
    for hook in (cancels, hangs):
        async with AliKassaClient(
            ACCOUNT,
            *alikassa_certificates,
            base_url="http://127.0.0.1",
            transport=wire,
            retry=policy,
            hooks=Hooks(on_response=hook),
        ) as client:
            with caplog.at_level(logging.ERROR, logger="alikassa_async"):
                async with asyncio.timeout(20):  # a bound on a hang: the deadline is 1 s
                    created = await client.create_payout(_payout(f"H-{hook.__name__}"))
        assert created.id
        assert f"hook on_response {'cancelled itself' if hook is cancels else 'raised'}" in (
            caplog.text
        )
    assert sandbox.state.payout_creations == {"H-cancels": 1, "H-hangs": 1}


async def test_a_cancel_while_a_hook_runs_after_the_answer_says_the_outcome_is_unknown(
    wire, sandbox, alikassa_certificates, caplog
):
    # The caller's own timeout fires while on_response runs: the payout was created, and
    # only the WARNING (and the span) can say so.
    async def slow(event: ResponseEvent) -> None:
        await asyncio.sleep(5)

    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url="http://127.0.0.1",
        transport=wire,
        retry=RetryPolicy(max_attempts=1, total_timeout=30.0),
        hooks=Hooks(on_response=slow),
    ) as client:
        with caplog.at_level(logging.WARNING, logger="alikassa_async"):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await client.create_payout(_payout("H-late"))
    assert sandbox.state.payout_creations == {"H-late": 1}
    assert "outcome unknown for order_id=H-late" in caplog.text


async def test_items_refused_before_they_start_have_their_span_and_count(client, spans, otel):
    _, reader, _ = otel

    def rejected() -> int:
        points = _metric_points(reader).get("alikassa.payouts", [])
        return sum(p.value for p in points if p.attributes["alikassa.outcome"] == "rejected")

    before = rejected()
    items = [payout("OR-1"), {"service": "payment_card_rub", "order_id": "OR-2"}, payout("OR-1")]
    results = [r async for r in client.payouts_batch(items)]
    assert sorted(r.outcome.value for r in results) == ["created", "rejected", "rejected"]
    refused = [r for r in results if r.outcome.value == "rejected"]
    assert all(r.error is not None and r.error.__traceback__ is None for r in refused)
    finished = spans.get_finished_spans()
    [batch] = [s for s in finished if s.name == "alikassa.payouts.batch"]
    items_spans = [s for s in finished if s.name == "alikassa.payout.batch_item"]
    assert len(items_spans) == 3
    assert all(s.parent.span_id == batch.context.span_id for s in items_spans)
    outcomes = sorted(s.attributes["alikassa.outcome"] for s in items_spans)
    assert outcomes == ["created", "rejected", "rejected"]
    assert rejected() - before == 2


async def test_an_error_before_the_network_has_a_request_id_too(wire, alikassa_certificates):
    payment_cert, _ = alikassa_certificates
    async with AliKassaClient(
        ACCOUNT, payment_cert=payment_cert, base_url="http://127.0.0.1", transport=wire
    ) as no_payout_cert:
        with pytest.raises(ConfigurationError) as missing:
            await no_payout_cert.balance()
    client = AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url="http://127.0.0.1", transport=wire
    )
    with pytest.raises(RequestValidationError) as bad_argument:
        await client.payout_status(order_id="x" * 200)
    await client.aclose()
    with pytest.raises(ClientClosedError) as closed:
        await client.balance()
    ids = [e.value.request_id for e in (missing, bad_argument, closed)]
    assert all(i is not None and i.startswith("ak_") and len(i) == 27 for i in ids), ids
    assert len(set(ids)) == 3
    assert wire.sent == []


@pytest.mark.parametrize("bad", ["not callable", 42])
def test_a_hook_that_is_not_callable_is_refused_where_it_is_given(bad):
    with pytest.raises(ConfigurationError, match="on_request"):
        Hooks(on_request=bad)


async def test_the_request_id_is_sent_only_when_asked_and_the_gateways_is_kept(
    wire, alikassa_certificates, caplog
):
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url="http://127.0.0.1",
        transport=wire,
        retry=FAST_RETRY,
    ) as quiet:
        await quiet.balance()
    assert "x-request-id" not in wire.sent[-1].headers
    wire.script(
        "v1/payout/status",
        httpx.Response(
            422,
            json={"message": "bad", "errors": {"order_id": ["bad"]}},
            headers={"X-Request-Id": "gw-12345"},
        ),
    )
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url="http://127.0.0.1",
        transport=wire,
        retry=FAST_RETRY,
        send_request_id=True,
    ) as client:
        with (
            caplog.at_level(logging.DEBUG, logger="alikassa_async"),
            pytest.raises(InvalidRequestError) as caught,
        ):
            await client.payout_status(order_id="OR-9")
    sent = wire.sent[-1]
    assert sent.headers["x-request-id"] == caught.value.request_id
    assert caught.value.gateway_request_id == "gw-12345"
    [record] = [
        r for r in caplog.records if r.levelno == logging.DEBUG and r.alikassa.get("status") == 422
    ]
    facts = record.alikassa
    assert facts["endpoint"] == "v1/payout/status" and facts["order_id"] == "OR-9"
    assert facts["request_id"] == caught.value.request_id and facts["attempt"] == 1
    assert "duration_ms" in facts and "order_id=OR-9" in record.getMessage()


def test_without_opentelemetry_everything_works_and_nothing_is_traced(alikassa_certs):
    # A fresh interpreter in which `import opentelemetry` fails, as without the extra.
    root = str(alikassa_certs.payout_dir.parent)
    script = f"""
import asyncio, sys
sys.modules["opentelemetry"] = None
from alikassa_async import AliKassaClient
from alikassa_async._observe import TELEMETRY
from alikassa_async.sandbox import Sandbox, load_certs
assert not TELEMETRY.enabled
certs = load_certs({root!r})
sandbox = Sandbox.from_certs(certs, {ACCOUNT!r})
async def main():
    async with AliKassaClient({ACCOUNT!r}, certs.payment_certificate(),
                              certs.payout_certificate(), base_url="http://127.0.0.1",
                              transport=sandbox.transport()) as client:
        print((await client.balance()).balance is not None)
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
