"""Property tests for the builders (hypothesis).

1. Any valid input for any registered (or unknown) service builds, and its wire
   bytes decode to exactly the fields given — normalised, in documented order.
2. PHP's own ``json_encode`` re-encodes those bytes to the same bytes.
3. Arbitrary junk, to the generic and the named builders, only ever raises
   ``RequestValidationError``.

Strategies are picked per field from the registry's rule descriptions, so a
new rule without a strategy here fails the suite instead of going untested.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alikassa_async import (
    PaymentRequest,
    PayoutRequest,
    RequestValidationError,
    build_payment,
    build_payout,
    payments,
    payouts,
)
from alikassa_async._encoding import php_json_encode
from alikassa_async._models import PAYMENT_FIELD_ORDER, PAYOUT_FIELD_ORDER
from alikassa_async._validation import EUR_CARD_EXTRA_FIELDS, ISO_COUNTRY_CODES, Rule
from alikassa_async.services import PAYMENT_RULES, PAYOUT_RULES, SERVICES, ServiceSpec

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------
# Valid values, by rule

UNICODE = st.characters(exclude_categories=("Cs",))  # anything PHP can encode


def text(max_size: int) -> st.SearchStrategy[str]:
    """Non-blank text up to ``max_size``; long limits are hit exactly, with cheap characters."""
    short = st.text(UNICODE, min_size=1, max_size=min(max_size, 40)).filter(
        lambda s: s.strip() != ""
    )
    at_limit = st.text(
        st.sampled_from('aZ9 é"\\/\x7f\u2028😀'), min_size=max_size, max_size=max_size
    ).filter(lambda s: s.strip() != "")
    return short if max_size <= 40 else st.one_of(short, at_limit)


def digits(count: int) -> st.SearchStrategy[str]:
    return st.from_regex(rf"[0-9]{{{count}}}", fullmatch=True)


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        number = body + check
        total = sum(
            int(d) if i % 2 == 0 else (int(d) * 2 - 9 if int(d) > 4 else int(d) * 2)
            for i, d in enumerate(reversed(number))
        )
        if total % 10 == 0:
            return number
    raise AssertionError("unreachable")


CARD = st.integers(11, 18).flatmap(digits).map(_luhn_complete)
SBP_ID = st.from_regex(r"1000000[0-9]{5}", fullmatch=True)
HOST = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,10}){1,2}", fullmatch=True)
URL = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https"]),
    HOST,
    st.from_regex(r"[A-Za-z0-9/._~?=&%-]{0,80}", fullmatch=True),
)
PAST = st.dates(
    min_value=datetime.date(1900, 1, 1),
    max_value=datetime.date.today() - datetime.timedelta(days=1),
)
EXTRA_CARD = st.fixed_dictionaries(
    {
        "card_exp_year": digits(2),
        "card_exp_month": st.sampled_from([f"{m:02d}" for m in range(1, 13)]),
        "card_holder": text(100),
        "card_country": st.sampled_from(sorted(ISO_COUNTRY_CODES)),
        "card_recipient_birth_date": st.one_of(PAST, PAST.map(datetime.date.isoformat)),
    }
)
SNAKE = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


@functools.cache
def strategy_for(rule: Rule) -> st.SearchStrategy[Any]:
    """A strategy of values ``rule`` accepts, chosen by its README description."""
    d = rule.describe
    fixed: dict[str, st.SearchStrategy[Any]] = {
        "string 1..128, printable, no surrounding whitespace": text(128)
        .map(str.strip)
        .filter(lambda s: s != "" and s.isprintable()),
        "e-mail ≤ 50": st.from_regex(
            r"[a-z0-9._+]{1,15}@[a-z0-9]{1,15}\.[a-z]{2,6}", fullmatch=True
        ),
        "positive int": st.integers(1, 2**63 - 1),
        "IPv4 or IPv6 address": st.ip_addresses().flatmap(
            lambda ip: st.sampled_from([ip, str(ip)])
        ),
        "http(s) URL ≤ 255": URL,
        "int or string ≤ 12": st.one_of(st.integers(0, 10**12 - 1), text(12)),
        "SBP bank id 1000000XXXXX": SBP_ID,
        "SBP bank id or bank slug": st.one_of(
            SBP_ID, st.from_regex(r"[a-z][a-z0-9_-]{0,30}", fullmatch=True)
        ),
        "card number, 12..19 digits, Luhn": CARD,
        "phone 7XXXXXXXXXX (leading + dropped)": st.from_regex(r"\+?7[0-9]{10}", fullmatch=True),
        "all five card_* keys": EXTRA_CARD,
        "object; card_* keys checked": st.one_of(
            EXTRA_CARD, st.dictionaries(SNAKE.map(lambda s: "x_" + s), text(20), max_size=3)
        ),
    }
    if d in fixed:
        return fixed[d]
    if m := re.fullmatch(r"string ≤ (\d+)", d):
        return text(int(m[1]))
    if m := re.fullmatch(r"int (?:seconds )?(\d+)\.\.(\d+)", d):
        return st.integers(int(m[1]), int(m[2]))
    if m := re.fullmatch(r"one of (.+)", d):
        return st.sampled_from(m[1].split(", "))
    if m := re.fullmatch(r"(\d+) digits", d):
        return digits(int(m[1]))
    raise AssertionError(f"no strategy for rule {d!r}: add one")


CENTS = st.integers(1, 10**11 - 1)


def amount_forms(cents: int) -> st.SearchStrategy[object]:
    """Every accepted spelling of the same amount: Decimal, str, int."""
    value = Decimal(cents).scaleb(-2)
    forms: list[object] = [value, str(value), format(value.normalize(), "f"), f" {value}0 "]
    if cents % 100 == 0:
        forms.append(cents // 100)
    return st.sampled_from(forms)


def normalised(value: object) -> object:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\+7[0-9]{10}", value):
        return value[1:]
    if isinstance(value, Mapping):  # as json.loads(object_pairs_hook=list) sees it
        documented = [k for k in EUR_CARD_EXTRA_FIELDS if k in value]
        rest = [k for k in value if k not in EUR_CARD_EXTRA_FIELDS]
        return [(k, normalised(value[k])) for k in documented + rest]
    return value


UNKNOWN = {
    d: ServiceSpec(f"brand_new_{d}", d, None, None, None, "unknown") for d in ("payment", "payout")
}
ORDER = {"payment": PAYMENT_FIELD_ORDER, "payout": PAYOUT_FIELD_ORDER}
SHARED = {"payment": PAYMENT_RULES, "payout": PAYOUT_RULES}


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[ServiceSpec, dict[str, object], list[Any]]:
    """(spec, builder kwargs, expected wire pairs)."""
    spec = draw(st.sampled_from([*SERVICES.values(), *UNKNOWN.values()]))
    code = spec.code
    fields: dict[str, object] = {}
    cents = draw(CENTS)
    fields["amount"] = draw(amount_forms(cents))
    names = [n for n in SHARED[spec.direction] if n != "amount"]
    for name in names:
        rule = spec.rule(name)
        assert rule is not None
        if name in spec.required_fields or draw(st.booleans()):
            fields[name] = draw(strategy_for(rule))
    # the shared order_id/amount are always required
    new = draw(
        st.dictionaries(
            SNAKE.map(lambda s: "zz_" + s),
            st.one_of(text(30), st.integers(-(2**63), 2**63 - 1)),
            max_size=2,
        )
    )
    fields.update(new)
    wanted = {k: normalised(v) for k, v in fields.items()}
    wanted["amount"] = f"{Decimal(cents).scaleb(-2):.2f}"
    wanted["service"] = code
    keys = [k for k in ORDER[spec.direction] if k in wanted] + list(new)
    return spec, fields, [(k, wanted[k]) for k in keys]


def build(spec: ServiceSpec, fields: Mapping[str, object]) -> PaymentRequest | PayoutRequest:
    builder = build_payment if spec.direction == "payment" else build_payout
    return builder(spec.code, **fields)


@PROPERTY
@given(valid_requests())
def test_valid_inputs_build_and_round_trip_to_the_wire(
    case: tuple[ServiceSpec, dict[str, object], list[Any]],
) -> None:
    spec, fields, expected = case
    request = build(spec, fields)
    body = php_json_encode(request.to_wire())
    assert json.loads(body, object_pairs_hook=list) == expected
    # building again from the normalised wire fields gives the same bytes (idempotent)
    again = build(spec, {k: v for k, v in request.to_wire().items() if k != "service"})
    assert php_json_encode(again.to_wire()) == body


PHP = shutil.which("php")
# One PHP process for the module: a line of JSON in, json_encode(json_decode(line)) out.
PHP_REENCODE = r"""
while (($line = fgets(STDIN)) !== false) {
    echo json_encode(json_decode(rtrim($line, "\n"), true)), "\n";
    flush();
}
"""


@pytest.fixture(scope="module")
def php_reencode() -> Iterator[Callable[[bytes], bytes]]:
    if PHP is None:
        pytest.skip("php-cli not installed (CI installs it)")
    process = subprocess.Popen(
        [PHP, "-r", PHP_REENCODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def reencode(body: bytes) -> bytes:
        stdin.write(body + b"\n")
        stdin.flush()
        return stdout.readline().rstrip(b"\n")

    try:
        yield reencode
    finally:
        stdin.close()
        process.wait(timeout=30)
        stdout.close()


@settings(PROPERTY, max_examples=100)
@given(case=valid_requests())
def test_php_json_encode_produces_the_same_bytes(
    php_reencode: Callable[[bytes], bytes], case: tuple[ServiceSpec, dict[str, object], list[Any]]
) -> None:
    spec, fields, _ = case
    body = php_json_encode(build(spec, fields).to_wire())
    assert php_reencode(body) == body


# ---------------------------------------------------------------------------
# Junk

SURROGATES = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
)
PLAUSIBLE = st.sampled_from(
    [
        "4111111111111111",
        "+79031112233",
        "100000000111",
        "bkash",
        "1.2.3.4",
        "https://x.example/",
        "041351902",
        "500.00",
        "29",
        "UA",
        "1999-12-15",
        "40817120273018899310",
        "",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=300),
    SURROGATES,
    st.binary(max_size=10),
    st.decimals(),
    st.dates(),
    st.datetimes(),
    st.ip_addresses(),
    st.just(object()),
    PLAUSIBLE,
)
JUNK = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(
        st.one_of(
            st.text(max_size=8), st.integers(), st.sampled_from(["card_exp_year", "card_holder"])
        ),
        SCALARS,
        max_size=4,
    ),
)
FIELD_NAMES = st.one_of(
    st.sampled_from(
        sorted(
            {
                *PAYMENT_RULES,
                *PAYOUT_RULES,
                "service",
                "other_fields",
                "wallet",
                "method",
                "currency",
                "card_holder",
                "card_exp_year",
            }
        )
    ),
    st.text(max_size=10),
)
JUNK_FIELDS = st.dictionaries(FIELD_NAMES, JUNK, max_size=10)
SERVICE = st.one_of(st.sampled_from(sorted(SERVICES)), st.text(max_size=12), SCALARS)


def only_validation_errors(call: Callable[[], object]) -> None:
    try:
        request = call()
    except RequestValidationError as exc:
        assert exc.errors and all(isinstance(k, str) for k in exc.errors)
        assert all(m and isinstance(m, str) for ms in exc.errors.values() for m in ms)
        str(exc), repr(exc)  # printable
    else:
        assert isinstance(request, (PaymentRequest, PayoutRequest))
        php_json_encode(request.to_wire())  # whatever builds can be sent
        repr(request)


@PROPERTY
@given(st.sampled_from([build_payment, build_payout]), SERVICE, JUNK_FIELDS)
def test_junk_to_the_generic_builders_only_raises_validation_errors(
    builder: Callable[..., Any], service: object, fields: dict[str, object]
) -> None:
    only_validation_errors(lambda: builder(service, **fields))


NAMED = [
    getattr(module, name)
    for module in (payments, payouts)
    for name in module.__all__
    if name not in ("Amount", "PaymentOptions", "PayoutOptions")
]


@st.composite
def named_calls(draw: st.DrawFn) -> tuple[Callable[..., Any], list[object], dict[str, object]]:
    builder = draw(st.sampled_from(NAMED))
    params = [p for p in inspect.signature(builder).parameters if p != "options"]
    kwargs = draw(
        st.dictionaries(st.one_of(st.sampled_from(params), FIELD_NAMES), JUNK, max_size=12)
    )
    args = draw(st.lists(SCALARS, max_size=1))
    return builder, args, kwargs


@PROPERTY
@given(named_calls())
def test_junk_to_the_named_builders_only_raises_validation_errors(
    call: tuple[Callable[..., Any], list[object], dict[str, object]],
) -> None:
    builder, args, kwargs = call
    only_validation_errors(lambda: builder(*args, **kwargs))


def test_every_named_builder_is_exercised_by_the_junk_property() -> None:
    assert len(NAMED) == 15 + 4


@PROPERTY
@given(valid_requests(), FIELD_NAMES, JUNK)
def test_one_junk_field_in_a_valid_request_only_raises_validation_errors(
    case: tuple[ServiceSpec, dict[str, object], list[Any]], name: str, junk: object
) -> None:
    spec, fields, _ = case
    fields = {**fields, name: junk}
    only_validation_errors(lambda: build(spec, fields))
