"""The vendor's PHP sample, run by real PHP against the sandbox over loopback.

The script below is the reference sample of the API docs (``json_encode`` the
data, ``openssl_sign`` with the key from ``private.pem`` + ``password.txt`` read
as-is, base64), sending with PHP's own HTTP stream instead of curl. It proves
that ``alikassa keygen`` archives load in PHP unchanged and that the sandbox
accepts what the vendor's reference client sends. Skipped only when ``php`` is
not on PATH (CI installs php-cli).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alikassa_async.sandbox import SandboxCerts
from alikassa_async.sandbox.server import SandboxServer

from .sandbox_helpers import ACCOUNT

pytestmark = pytest.mark.skipif(shutil.which("php") is None, reason="php is not on PATH")

VENDOR_SAMPLE = r"""
[$_, $url, $path, $certDir, $account, $json, $algo] = $argv;
$data = json_decode($json, true);          // the sample builds this array by hand

$data = json_encode($data);
$privateKey = openssl_pkey_get_private(
    file_get_contents($certDir . '/private.pem'),
    file_get_contents($certDir . '/password.txt')
);
if ($privateKey === false) { fwrite(STDERR, "cannot load private.pem\n"); exit(1); }
if ($algo === 'sha256') {
    openssl_sign($data, $sign, $privateKey, OPENSSL_ALGO_SHA256);
} else {
    openssl_sign($data, $sign, $privateKey);     // PHP's default: SHA-1
}
$sign = base64_encode($sign);

$context = stream_context_create(['http' => [
    'method' => 'POST',
    'header' => "Content-Type: application/json\r\nAccount: $account\r\nSign: $sign\r\n"
              . "User-Agent: AliKassa2.0 API\r\n",
    'content' => $data,
    'timeout' => 30,
    'ignore_errors' => true,
]]);
$body = file_get_contents($url . '/' . $path, false, $context);
echo json_encode(['status' => $http_response_header[0], 'body' => $body, 'sent' => $data]);
"""


async def php_request(
    server: SandboxServer, path: str, cert_dir: Path, data: object, algo: str = "sha1"
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "php",
        "-r",
        VENDOR_SAMPLE,
        server.url,
        path,
        str(cert_dir),
        ACCOUNT,
        json.dumps(data),
        algo,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize("algo", ["sha1", "sha256"])
async def test_a_payment_signed_by_the_php_sample_is_accepted(
    alikassa_sandbox: SandboxServer, alikassa_certs: SandboxCerts, algo: str
) -> None:
    data = {
        "amount": 500,
        "order_id": "PHP-1",
        "service": "payment_card_number_rub_hpp",
        "customer_ip": "18.191.80.10",
        "customer_user_id": "u-42",
        "success_redirect_url": "https://shop.example/ok?o=1",
        "desc": "Заказ / 1",
    }
    result = await php_request(
        alikassa_sandbox, "v1/payment", alikassa_certs.payment_dir, data, algo
    )
    assert " 200 " in result["status"], result
    assert "\\/" in result["sent"] and "\\u0417" in result["sent"]  # PHP's escaping
    body = json.loads(result["body"])
    assert (
        body["payment_status"] == "wait"
        and body["success_redirect_url"] == "https://shop.example/ok?o=1"
    )
    record = alikassa_sandbox.state.payments_by_order_id["PHP-1"]
    assert record.amount == Decimal("500.00") and record.request["desc"] == "Заказ / 1"


async def test_payouts_and_account_calls_signed_by_php_with_the_payout_archive(
    alikassa_sandbox: SandboxServer, alikassa_certs: SandboxCerts
) -> None:
    payout = {
        "amount": "3000.00",
        "number": "79031112233",
        "order_id": "PHP-P1",
        "service": "payment_card_sbp_rub",
        "customer_code": "100000000111",
    }
    result = await php_request(alikassa_sandbox, "v1/payout", alikassa_certs.payout_dir, payout)
    assert " 200 " in result["status"], result
    assert alikassa_sandbox.state.payout_creations["PHP-P1"] == 1
    # json_encode([]) is "[]": the body of balance and info.
    result = await php_request(
        alikassa_sandbox, "v1/account/balance", alikassa_certs.payout_dir, []
    )
    assert result["sent"] == "[]" and " 200 " in result["status"]
    assert Decimal(json.loads(result["body"])["pending_payouts"]) == Decimal("3000")


async def test_php_signing_a_payout_with_the_payment_archive_is_refused(
    alikassa_sandbox: SandboxServer, alikassa_certs: SandboxCerts
) -> None:
    payout = {
        "amount": "10.00",
        "number": "4111111111111111",
        "order_id": "PHP-P2",
        "service": "payment_card_rub",
    }
    result = await php_request(alikassa_sandbox, "v1/payout", alikassa_certs.payment_dir, payout)
    assert " 401 " in result["status"]
    assert "payout certificate" in json.loads(result["body"])["message"]
    assert not alikassa_sandbox.state.payouts
