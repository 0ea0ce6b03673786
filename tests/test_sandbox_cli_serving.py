"""``alikassa sandbox`` as a process: start-up errors, TLS, --public-url, hostile clients.

Each test runs the real command (``python -m alikassa_async sandbox``) and talks to it
over loopback sockets, the way a user's own client (or Java's ``HttpClient``) does.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from alikassa_async import AliKassaClient, Certificate, build_payment
from alikassa_async.sandbox import SandboxCerts
from alikassa_async.sandbox.tls import ensure_tls

from .sandbox_helpers import ACCOUNT
from .test_sandbox_cli import PYTHON, start_sandbox, stop


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYTHON, *args], capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alikassa: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_busy_port_is_a_one_line_error(tmp_path: Path, alikassa_certs: SandboxCerts) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("sandbox", "--port", str(port), "--certs", str(alikassa_certs.root))
    assert_one_line_error(result, f"127.0.0.1:{port}", "in use", "--port 0")


def test_unwritable_certs_are_a_one_line_error(tmp_path: Path) -> None:
    # A regular file where a directory should be: unwritable even for root.
    (tmp_path / "not-a-dir").write_text("")
    result = run_cli("sandbox", "--port", "0", "--certs", str(tmp_path / "not-a-dir" / "certs"))
    assert_one_line_error(result, "cannot write certificates", "not-a-dir")


def test_a_bad_public_url_is_refused_by_the_parser() -> None:
    result = run_cli("sandbox", "--port", "0", "--public-url", "sandbox.example")
    assert result.returncode == 2 and "--public-url" in result.stderr
    assert "Traceback" not in result.stderr


async def test_tls_and_public_url(
    tmp_path: Path,
    alikassa_certs: SandboxCerts,
    alikassa_certificates: tuple[Certificate, Certificate],
) -> None:
    certs = tmp_path / "certs"
    shutil.copytree(alikassa_certs.root, certs)
    public = "https://pay-sandbox.example:8443"
    proc, url, banner = await start_sandbox(
        "--certs", str(certs), "--tls", "--public-url", public, with_banner=True
    )
    try:
        ca = certs / "tls" / "ca.pem"
        # printed, and written beside the certificates
        assert any(line.split()[:3] == ["TLS", "CA", str(ca)] for line in banner), banner
        assert ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert url == public
        listening = next(line.split()[2] for line in banner if "listening on" in line)
        assert listening.startswith("https://127.0.0.1:")
        payment, payout = alikassa_certificates
        async with AliKassaClient(
            ACCOUNT, payment, payout, base_url=listening, verify=ca
        ) as client:
            created = await client.create_payment(
                build_payment(
                    "payment_card_number_rub_hpp",
                    order_id="A-1",
                    amount="500",
                    customer_ip="18.191.80.10",
                    customer_user_id="u-42",
                )
            )
            assert created.url is not None and created.url.startswith(public + "/pay/")
            status = await client.payment_status(id=created.id)
            assert status.url == created.url
        # Without the CA, TLS verification refuses the sandbox (nothing was weakened).
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(listening + "/health")
    finally:
        assert await stop(proc) == 0
    assert proc.stderr is not None
    assert "Traceback" not in (await proc.stderr.read()).decode()


async def test_early_disconnects_and_h2c_offers_log_nothing(
    tmp_path: Path,
    alikassa_certs: SandboxCerts,
    alikassa_certificates: tuple[Certificate, Certificate],
) -> None:
    proc, url = await start_sandbox("--certs", str(alikassa_certs.root))
    try:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(3):  # a client that hangs up in the middle of its request body
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/payout HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"a":'
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
        # Java's HttpClient offers h2c on every plain-http request: it is declined and
        # answered over HTTP/1.1.
        body = b"[]"
        headers = {
            "Content-Type": "application/json",
            "Account": ACCOUNT,
            "Sign": alikassa_certificates[1].sign(body),
            "Connection": "Upgrade, HTTP2-Settings",
            "Upgrade": "h2c",
            "HTTP2-Settings": "AAMAAABkAAQCAAAAAAIAAAAA",
        }
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(3):
                answer = await http.post("/v1/account/balance", content=body, headers=headers)
                assert answer.status_code == 200 and answer.http_version == "HTTP/1.1"
        await asyncio.sleep(0.2)  # let the server notice the hang-ups
    finally:
        assert await stop(proc) == 0
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    for noise in ("Exception in ASGI application", "Traceback", "Unsupported upgrade", "WebSocket"):
        assert noise not in err, err


def test_the_tls_ca_is_reused_and_the_server_certificate_names_the_hosts(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path, ["127.0.0.1", "sandbox.internal"])
    ca = first.ca_path.read_bytes()
    cert = x509.load_pem_x509_certificate(first.cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "sandbox.internal"} <= set(names.get_values_for_type(x509.DNSName))
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
    second = ensure_tls(tmp_path, ["10.1.2.3"])
    assert second.ca_path.read_bytes() == ca  # a client told to trust ca.pem keeps trusting it
    again = x509.load_pem_x509_certificate(second.cert_path.read_bytes())
    ips = again.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.1.2.3" in {str(ip) for ip in ips.get_values_for_type(x509.IPAddress)}
    for secret in (tmp_path / "tls" / "ca-key.pem", second.key_path):
        assert secret.stat().st_mode & 0o077 == 0
    # The chain verifies with nothing but the CA.
    context = ssl.create_default_context(cafile=str(second.ca_path))
    assert context.cert_store_stats()["x509_ca"] == 1
