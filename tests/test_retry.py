"""RetryPolicy and Retry-After parsing: how long the client waits, and when it stops."""

from __future__ import annotations

import math
import random
from email.utils import formatdate

import attrs
import pytest

from alikassa_async import RetryPolicy
from alikassa_async._retry import parse_retry_after

NOW = 1_800_000_000.0  # a fixed "now" for HTTP dates
DRAWS = 2_000


@pytest.fixture(autouse=True)
def _seeded() -> None:
    # backoff() draws from the global `random`; seeded, a failure reproduces
    random.seed(1234)


# -- backoff ------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20])
def test_backoff_is_full_jitter_below_a_doubling_ceiling(attempt):
    policy = RetryPolicy(backoff_base=0.25, backoff_max=8.0)
    ceiling = min(8.0, 0.25 * 2 ** (attempt - 1))
    draws = [policy.backoff(attempt) for _ in range(DRAWS)]
    assert all(0.0 <= d <= ceiling for d in draws)
    # full jitter: the draws fill [0, ceiling], they are not one fixed pause
    assert min(draws) < 0.05 * ceiling and max(draws) > 0.95 * ceiling
    assert 0.4 * ceiling < sum(draws) / DRAWS < 0.6 * ceiling


def test_backoff_ceiling_doubles_per_attempt_then_holds_at_the_cap():
    policy = RetryPolicy(backoff_base=0.1, backoff_max=1.0)
    peaks = [max(policy.backoff(attempt) for _ in range(DRAWS)) for attempt in range(1, 9)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for peak, ceiling in zip(peaks, ceilings, strict=True):
        assert 0.95 * ceiling < peak <= ceiling


def test_backoff_of_a_huge_attempt_number_is_capped_not_an_overflow():
    policy = RetryPolicy(backoff_base=0.25, backoff_max=8.0)
    assert all(0.0 <= policy.backoff(1000) <= 8.0 for _ in range(100))


def test_zero_backoff_never_waits():
    policy = RetryPolicy(backoff_base=0.0, backoff_max=0.0)
    assert {policy.backoff(n) for n in range(1, 10)} == {0.0}


# -- delay: backoff, or the server's Retry-After ---------------------------------------


def test_delay_without_retry_after_is_the_backoff():
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4.0)
    assert all(0.0 <= policy.delay(3, None) <= 2.0 for _ in range(DRAWS))
    assert len({policy.delay(3, None) for _ in range(50)}) > 1  # jittered


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (0.0, 0.0),
        (0.5, 0.5),
        (12.0, 12.0),
        (30.0, 30.0),  # up to max_retry_after: exactly it
        (-3.0, 0.0),  # a negative hint is "now", never a negative sleep
    ],
)
def test_delay_honours_retry_after_exactly(retry_after, expected):
    policy = RetryPolicy(backoff_base=5.0, backoff_max=5.0, max_retry_after=30.0)
    assert policy.delay(1, retry_after) == expected
    assert policy.delay(7, retry_after) == expected  # whatever the attempt


@pytest.mark.parametrize("retry_after", [30.001, 60.0, 3600.0, math.inf])
def test_a_retry_after_longer_than_allowed_ends_the_retries(retry_after):
    assert RetryPolicy(max_retry_after=30.0).delay(1, retry_after) is None


def test_max_retry_after_is_the_callers_choice():
    patient = RetryPolicy(max_retry_after=3600.0)
    assert patient.delay(1, 3600.0) == 3600.0
    assert patient.delay(1, 3601.0) is None
    assert RetryPolicy(max_retry_after=0.0).delay(1, 0.5) is None


# -- the policy as configuration ------------------------------------------------------


def test_defaults_and_disabled():
    default = RetryPolicy()
    assert (default.max_attempts, default.total_timeout, default.create_connect_retries) == (
        4,
        60.0,
        2,
    )
    disabled = RetryPolicy.disabled()
    assert disabled.max_attempts == 1 and disabled.create_connect_retries == 0


@pytest.mark.parametrize("attempts", [0, -1])
def test_max_attempts_below_one_is_refused(attempts):
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=attempts)


def test_a_policy_is_an_immutable_value():
    policy = RetryPolicy(max_attempts=3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert policy == RetryPolicy(max_attempts=3) and hash(policy) == hash(
        RetryPolicy(max_attempts=3)
    )
    assert attrs.evolve(policy, total_timeout=None).total_timeout is None


# -- parse_retry_after ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0.05", 0.05),
        ("1.5", 1.5),
    ],
)
def test_retry_after_in_seconds(value, seconds):
    assert parse_retry_after({"retry-after": value}) == seconds


def test_retry_after_as_an_http_date_in_the_future_is_the_seconds_until_it():
    date = formatdate(NOW + 90, usegmt=True)  # "Thu, 15 Jan 2027 08:01:30 GMT"
    assert parse_retry_after({"retry-after": date}, now=NOW) == pytest.approx(90.0)


def test_retry_after_as_an_http_date_in_the_past_is_now():
    date = formatdate(NOW - 600, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=NOW) == 0.0


def test_retry_after_date_is_measured_from_the_injected_now():
    date = formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=NOW - 30) == pytest.approx(60.0)
    assert parse_retry_after({"retry-after": date}, now=NOW + 31) == 0.0


def test_retry_after_dates_in_the_other_legal_formats():
    # RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms (UTC)
    for date in (
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ):
        assert parse_retry_after({"retry-after": date}, now=784111777.0 - 10) == (
            pytest.approx(10.0)
        ), date


def test_retry_after_ms_wins_and_is_milliseconds():
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "60"}) == 1.5
    # an unusable retry-after-ms falls back to Retry-After
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "2"}) == 2.0


@pytest.mark.parametrize(
    "value",
    [
        "",
        "soon",
        "1s",
        "Tomorrow",
        "Thu, 99 Foo 2027 25:61:61 GMT",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "0x10",
        "\x00",
        "1" * 500,
    ],
)
def test_garbage_nan_and_infinite_retry_after_are_ignored(value):
    # ignored means None: the client falls back to its own backoff
    assert parse_retry_after({"retry-after": value}, now=NOW) is None


@pytest.mark.parametrize("value", ["-1", "-0.5", "-3600"])
def test_negative_retry_after_is_now(value):
    assert parse_retry_after({"retry-after": value}) == 0.0
    assert parse_retry_after({"retry-after-ms": value}) == 0.0


def test_a_date_without_a_zone_is_ignored():
    assert parse_retry_after({"retry-after": "Sun, 06 Nov 1994 08:49:37"}, now=NOW) is None


def test_no_retry_after_is_none():
    assert parse_retry_after({}) is None
    assert parse_retry_after({"content-type": "application/json"}) is None


def test_retry_after_from_real_httpx_headers_is_case_insensitive():
    import httpx

    headers = httpx.Headers({"Retry-After": "3", "Content-Type": "application/json"})
    assert parse_retry_after(headers) == 3.0
    assert parse_retry_after(httpx.Headers({"RETRY-AFTER-MS": "40"})) == 0.04
