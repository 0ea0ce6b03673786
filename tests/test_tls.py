"""TLS verification is on by default: a self-signed loopback server is refused unless trusted."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alikassa_async import AliKassaClient, RetryPolicy, TransportError

from .conftest import ACCOUNT
from .reliability_support import self_signed_ca

BALANCE = b'{"currency":"RUB","balance":"1.00"}'


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(BALANCE), BALANCE))
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass  # the client refused our certificate and hung up
    finally:
        writer.close()


@pytest.fixture
async def https_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert_path, key_path = self_signed_ca(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    server = await asyncio.start_server(_answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}", cert_path
    finally:
        server.close()
        await server.wait_closed()


async def test_self_signed_server_is_refused_by_default(https_server, payout_cert):
    url, _ = https_server
    async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, base_url=url,
                              retry=RetryPolicy.disabled()) as client:
        with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await client.balance()


async def test_self_signed_server_is_accepted_with_the_users_ca(https_server, payout_cert):
    url, ca = https_server
    async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, base_url=url, verify=ca,
                              retry=RetryPolicy.disabled()) as client:
        assert (await client.balance()).currency == "RUB"


def _secrets(keylog: Path) -> list[str]:
    """Key lines of an SSLKEYLOGFILE (Python writes a '#' header when one is opened)."""
    text = keylog.read_text() if keylog.exists() else ""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


BACKENDS = {"lane_pool": {}, "http2": {"http2": True}, "aiohttp": {"http_backend": "aiohttp"}}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sslkeylogfile_is_ignored_unless_asked(https_server, payout_cert, tmp_path,
                                                     monkeypatch, backend):
    url, ca = https_server
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    for verify in (ca, ssl.create_default_context(cafile=str(ca))):
        async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, base_url=url,
                                  verify=verify, retry=RetryPolicy.disabled(),
                                  **BACKENDS[backend]) as client:
            assert (await client.balance()).currency == "RUB"
    assert _secrets(keylog) == [], "TLS session keys on disk"
    async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, base_url=url, verify=ca,
                              tls_from_env=True, retry=RetryPolicy.disabled(),
                              **BACKENDS[backend]) as client:
        await client.balance()
    assert _secrets(keylog)  # asked for: written


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_trust_store_is_what_verify_says_on_every_backend(
        https_server, payout_cert, monkeypatch, backend, variable, tmp_path):
    url, ca = https_server
    if variable == "SSL_CERT_DIR":
        import shutil
        import subprocess

        if shutil.which("openssl") is None:
            pytest.skip("a hashed CA directory needs `openssl rehash`")
        folder = tmp_path / "cadir"
        folder.mkdir()
        (folder / "ca.pem").write_bytes(ca.read_bytes())
        subprocess.run(["openssl", "rehash", str(folder)],  # noqa: ASYNC221 - setup, ~5 ms
                       check=True, capture_output=True)
        monkeypatch.setenv(variable, str(folder))
    else:
        monkeypatch.setenv(variable, str(ca))
    # The environment names the self-signed CA; verify=True still means certifi's bundle.
    async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, base_url=url,
                              retry=RetryPolicy.disabled(), **BACKENDS[backend]) as client:
        with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await client.balance()
    async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, base_url=url,
                              tls_from_env=True, retry=RetryPolicy.disabled(),
                              **BACKENDS[backend]) as client:
        assert (await client.balance()).currency == "RUB"
