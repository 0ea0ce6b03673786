"""``alikassa status``, ``alikassa balance`` and ``-v``/``-vv``, as processes against a sandbox.

The sandbox runs in its own thread on a loopback port; each command is a real
``python -m alikassa_async`` process configured the way a user configures it (flags,
or the ``ALIKASSA_*`` variables ``payouts run`` reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from alikassa_async import Certificate
from alikassa_async._encoding import php_json_encode
from alikassa_async.sandbox import Sandbox, SandboxCerts, SandboxConfig
from alikassa_async.sandbox.server import ThreadedSandboxServer

from .sandbox_helpers import ACCOUNT, payment_body, payout_body

PYTHON = [sys.executable, "-m", "alikassa_async"]


class Gateway:
    def __init__(self, server: ThreadedSandboxServer, certs: SandboxCerts) -> None:
        self.server = server
        self.url = server.url
        self.certs = certs
        self.ids: dict[str, int] = {}

    def create(self, kind: str, body: dict[str, object], cert: Certificate) -> int:
        raw = php_json_encode(body)
        answer = httpx.post(
            f"{self.url}/v1/{kind}",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "Account": ACCOUNT,
                "Sign": cert.sign(raw),
            },
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["id"])

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALIKASSA_")}
        env.update(
            {
                "ALIKASSA_ACCOUNT": ACCOUNT,
                "ALIKASSA_BASE_URL": self.url,
                "ALIKASSA_PAYOUT_CERT_DIR": str(self.certs.payout_dir),
                "ALIKASSA_PAYMENT_CERT_DIR": str(self.certs.payment_dir),
            }
        )
        env.update(extra)
        return env

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PYTHON, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env() if env is None else env,
        )


@pytest.fixture(scope="module")
def gateway(
    alikassa_certs: SandboxCerts, alikassa_certificates: tuple[Certificate, Certificate]
) -> Iterator[Gateway]:
    sandbox = Sandbox.from_certs(
        alikassa_certs, ACCOUNT, config=SandboxConfig(wait_seconds=None, wait_polls=0)
    )
    with ThreadedSandboxServer(sandbox) as server:
        gw = Gateway(server, alikassa_certs)
        payment, payout = alikassa_certificates
        gw.ids["P-1"] = gw.create("payout", payout_body(order_id="P-1", amount="1000.00"), payout)
        gw.ids["partial-1"] = gw.create(
            "payment", payment_body(order_id="partial-1", amount="100.00"), payment
        )
        yield gw


def table(text: str) -> dict[str, str]:
    rows = (line.split(None, 1) for line in text.strip().splitlines())
    return {row[0]: row[1] if len(row) > 1 else "" for row in rows}


def test_status_of_a_payout_by_order_id(gateway: Gateway) -> None:
    result = gateway.run("status", "--payout", "--order-id", "P-1")
    assert result.returncode == 0, result.stderr
    shown = table(result.stdout)
    assert shown["payment_status"] == "paid"
    assert shown["order_id"] == "P-1" and shown["id"] == str(gateway.ids["P-1"])
    assert Decimal(shown["amount"]) == Decimal("1000.00")
    assert "4111111111111111" not in result.stdout  # only the card mask is shown


def test_status_of_a_payment_by_id_with_flags_instead_of_variables(gateway: Gateway) -> None:
    bare = {k: v for k, v in gateway.env().items() if not k.startswith("ALIKASSA_")}
    result = gateway.run(
        "status",
        "--payment",
        "--id",
        str(gateway.ids["partial-1"]),
        "--account",
        ACCOUNT,
        "--base-url",
        gateway.url,
        "--payment-cert",
        str(gateway.certs.payment_dir),
        env=bare,
    )
    assert result.returncode == 0, result.stderr
    shown = table(result.stdout)
    assert shown["payment_status"] == "paid" and shown["is_partial_payment"] == "yes"
    assert Decimal(shown["payment_amount"]) == Decimal("50.00")


def test_status_json_is_the_gateways_answer(gateway: Gateway) -> None:
    result = gateway.run("status", "--payout", "--id", str(gateway.ids["P-1"]), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["id"] == gateway.ids["P-1"] and answer["payment_status"] == "paid"
    assert answer["amount"] == "1000.00"  # as sent: a string, never a float


def test_balance(gateway: Gateway) -> None:
    result = gateway.run("balance")
    assert result.returncode == 0, result.stderr
    shown = table(result.stdout)
    assert shown["currency"] == "RUB"
    assert Decimal(shown["balance"]) < Decimal("1000000.00")  # the payout was debited
    as_json = json.loads(gateway.run("balance", "--json").stdout)
    assert Decimal(as_json["balance"]) == Decimal(shown["balance"])


def test_an_unknown_order_id_exits_1_with_one_line(gateway: Gateway) -> None:
    result = gateway.run("status", "--payout", "--order-id", "no-such-order")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("alikassa: error: ") and "404" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "missing", "says"),
    [
        (["balance"], "ALIKASSA_ACCOUNT", "--account"),
        (["balance"], "ALIKASSA_PAYOUT_CERT_DIR", "--payout-cert DIR or set ALIKASSA_PAYOUT_CERT"),
        (
            ["status", "--payment", "--id", "1"],
            "ALIKASSA_PAYMENT_CERT_DIR",
            "--payment-cert DIR or set ALIKASSA_PAYMENT_CERT_DIR",
        ),
    ],
)
def test_missing_configuration_names_the_flag_and_the_variable(
    gateway: Gateway, args: list[str], missing: str, says: str
) -> None:
    env = gateway.env()
    del env[missing]
    result = gateway.run(*args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


def test_plain_http_elsewhere_names_the_cli_flag(gateway: Gateway) -> None:
    # Refused before any connection is attempted (nothing is sent to that address).
    result = gateway.run("balance", "--base-url", "http://10.0.0.5:8080")
    assert result.returncode == 2
    assert "--allow-plain-http" in result.stderr and "allow_plain_http=True" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--payout"],  # no --id / --order-id
        ["status", "--id", "1"],  # no --payout / --payment
        ["status", "--payout", "--id", "1", "--order-id", "P-1"],  # both keys
        ["status", "--payout", "--id", "0"],
    ],
)
def test_status_usage_errors(gateway: Gateway, args: list[str]) -> None:
    result = gateway.run(*args)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_v_shows_the_sdks_debug_lines_and_vv_adds_httpx(gateway: Gateway) -> None:
    quiet = gateway.run("balance")
    assert quiet.stderr == ""
    one = gateway.run("-v", "balance")
    assert one.returncode == 0, one.stderr
    sdk = [line for line in one.stderr.splitlines() if " alikassa_async: " in line]
    assert any("DEBUG" in line and "v1/account/balance -> 200" in line for line in sdk), one.stderr
    assert "httpcore" not in one.stderr and "httpx" not in one.stderr
    assert " alikassa_async.http: " not in one.stderr  # connection lines are -vv's
    assert one.stdout == quiet.stdout  # logs go to stderr only
    two = gateway.run("balance", "-vv")
    assert "v1/account/balance -> 200" in two.stderr
    # the default (built-in) sender's connection lines (httpcore's when a client runs on httpx)
    assert " alikassa_async.http: connected to 127.0.0.1:" in two.stderr, two.stderr
    assert gateway.certs.payout_certificate().sign(b"[]") not in two.stderr  # Sign stays out


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        (["balance"], 0),
        (["-v", "balance"], 1),
        (["balance", "-vv"], 2),
        (["-vv", "demo"], 2),
        (["demo", "-v"], 1),
        (["-v", "payouts", "run", "x.csv"], 1),
        (["payouts", "run", "x.csv", "-vv"], 2),
        (["sandbox", "-v"], 1),
    ],
)
def test_every_command_takes_v_before_or_after_its_name(argv: list[str], count: int) -> None:
    from alikassa_async.cli import build_parser

    assert build_parser().parse_args(argv).verbose == count


def test_a_signature_in_a_logged_url_is_redacted_at_the_terminal():
    # -vv shows httpx's INFO lines; the sandbox's notifier fetches URLs that carry `sign`.
    import io
    import logging

    from alikassa_async.cli import verbosity

    stream = io.StringIO()
    verbosity._handler = None
    try:
        verbosity.configure(2, stream)
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s"',
            "GET",
            "http://127.0.0.1:9/notify?type=payment&id=1&sign=DEA1e7Zq%2B9%3D&x=1",
            "HTTP/1.1 200 OK",
        )
    finally:
        for name in verbosity.SDK_LOGGERS + verbosity.TRANSPORT_LOGGERS:
            logger = logging.getLogger(name)
            if verbosity._handler in logger.handlers:
                logger.removeHandler(verbosity._handler)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
        verbosity._handler = None
    shown = stream.getvalue()
    assert "DEA1e7" not in shown and "sign=<redacted>&x=1" in shown and "id=1" in shown
