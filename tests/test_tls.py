"""TLS verification is on by default: a self-signed loopback server is refused unless trusted."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from alikassa_async import AliKassaClient, ConfigurationError, RetryPolicy, TransportError

from .conftest import ACCOUNT
from .reliability_support import BACKENDS, self_signed_ca

BALANCE = b'{"currency":"RUB","balance":"1.00"}'


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BALANCE), BALANCE)
        )
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


@pytest.mark.parametrize("backend", BACKENDS)
async def test_self_signed_server_is_refused_by_default(backend, https_server, payout_cert):
    url, _ = https_server
    async with AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        base_url=url,
        retry=RetryPolicy.disabled(),
        http_backend=backend,
    ) as client:
        with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await client.balance()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_self_signed_server_is_accepted_with_the_users_ca(backend, https_server, payout_cert):
    url, ca = https_server
    async with AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        base_url=url,
        verify=ca,
        retry=RetryPolicy.disabled(),
        http_backend=backend,
    ) as client:
        assert (await client.balance()).currency == "RUB"
        assert (await client.balance()).currency == "RUB"  # the server closed: reconnects


@pytest.mark.parametrize("backend", BACKENDS)
async def test_tls_connections_are_kept_alive_and_reused(backend, tmp_path, payout_cert):
    """Over TLS 1.3 the server's session tickets arrive after the handshake: the check
    for a stale connection must not take them for a hang-up."""
    cert_path, key_path = self_signed_ca(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    connections = 0

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(BALANCE), BALANCE)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(keep_alive, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AliKassaClient(
            ACCOUNT,
            payout_cert=payout_cert,
            verify=cert_path,
            base_url=f"https://127.0.0.1:{port}",
            http_backend=backend,
            retry=RetryPolicy.disabled(),
        ) as client:
            for _ in range(5):
                assert (await client.balance()).currency == "RUB"
                await asyncio.sleep(0.01)
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 1


# Built-in sender only: on this stall both httpx (lane pool) and aiohttp leave the socket
# of the abandoned handshake to the garbage collector, a ResourceWarning that surfaces in
# whichever test runs next (docs/reliability.md).
@pytest.mark.parametrize("backend", ["builtin"])
async def test_a_stalled_tls_handshake_is_a_connect_failure_nothing_sent(backend, payout_cert):
    """A server that accepts TCP and never speaks TLS: the handshake is part of connecting,
    so the call fails as "not sent" within the connect timeout, and a cancelled call
    leaves no socket behind."""
    import httpx

    from alikassa_async import payouts

    from .reliability_support import open_fds, settled_fds

    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    baseline = open_fds()
    try:
        async with AliKassaClient(
            ACCOUNT,
            payout_cert=payout_cert,
            base_url=f"https://127.0.0.1:{port}",
            http_backend=backend,
            timeout=httpx.Timeout(5.0, connect=0.3),
            retry=RetryPolicy(max_attempts=1, create_connect_retries=1, total_timeout=5.0),
        ) as client:
            with pytest.raises(TransportError):  # not OutcomeUnknownError: nothing was sent
                await client.create_payout(
                    payouts.card(order_id="TLS-1", amount="10.00", number="4111111111111111")
                )
            call = asyncio.create_task(client.balance())
            await asyncio.sleep(0.1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        assert len(accepted) == 3  # two connect attempts for the create, one for balance
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert await settled_fds(baseline) <= baseline


def _secrets(keylog: Path) -> list[str]:
    """Key lines of an SSLKEYLOGFILE (Python writes a '#' header when one is opened)."""
    text = keylog.read_text() if keylog.exists() else ""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


#: every TLS set-up: the built-in sender (the default), the lane pool, HTTP/2, aiohttp
SETUPS = {
    "builtin": {},
    "lane_pool": {"http_backend": "httpx"},
    "http2": {"http2": True},
    "aiohttp": {"http_backend": "aiohttp"},
}


@pytest.mark.parametrize("backend", SETUPS)
async def test_sslkeylogfile_is_ignored_unless_asked(
    https_server, payout_cert, tmp_path, monkeypatch, backend
):
    url, ca = https_server
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    for verify in (ca, ssl.create_default_context(cafile=str(ca))):
        async with AliKassaClient(
            ACCOUNT,
            payout_cert=payout_cert,
            base_url=url,
            verify=verify,
            retry=RetryPolicy.disabled(),
            **SETUPS[backend],
        ) as client:
            assert (await client.balance()).currency == "RUB"
    assert _secrets(keylog) == [], "TLS session keys on disk"
    async with AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        base_url=url,
        verify=ca,
        tls_from_env=True,
        retry=RetryPolicy.disabled(),
        **SETUPS[backend],
    ) as client:
        await client.balance()
    assert _secrets(keylog)  # asked for: written


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
@pytest.mark.parametrize("backend", SETUPS)
async def test_the_trust_store_is_what_verify_says_on_every_backend(
    https_server, payout_cert, monkeypatch, backend, variable, tmp_path
):
    url, ca = https_server
    if variable == "SSL_CERT_DIR":
        import shutil
        import subprocess

        if shutil.which("openssl") is None:
            pytest.skip("a hashed CA directory needs `openssl rehash`")
        folder = tmp_path / "cadir"
        folder.mkdir()
        (folder / "ca.pem").write_bytes(ca.read_bytes())
        subprocess.run(  # noqa: ASYNC221 - a one-off setup step before the test's I/O
            ["openssl", "rehash", str(folder)],
            check=True,
            capture_output=True,
        )
        monkeypatch.setenv(variable, str(folder))
    else:
        monkeypatch.setenv(variable, str(ca))
    # The environment names the self-signed CA; verify=True still means certifi's bundle.
    async with AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        base_url=url,
        retry=RetryPolicy.disabled(),
        **SETUPS[backend],
    ) as client:
        with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await client.balance()
    async with AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        base_url=url,
        tls_from_env=True,
        retry=RetryPolicy.disabled(),
        **SETUPS[backend],
    ) as client:
        assert (await client.balance()).currency == "RUB"


WEAKENED_SETUPS = {
    **{name: lambda ctx, setup=setup: {"verify": ctx, **setup} for name, setup in SETUPS.items()},
    "caller_transport": lambda ctx: {"transport": httpx.AsyncHTTPTransport(verify=ctx)},
    "caller_mount": lambda ctx: {
        "http_client": httpx.AsyncClient(mounts={"https://": httpx.AsyncHTTPTransport(verify=ctx)})
    },
}


@pytest.mark.parametrize("setup", WEAKENED_SETUPS)
async def test_a_shared_context_weakened_later_stops_the_next_request(tmp_path, payout_cert, setup):
    # The context is shared with other code, which switches verification off after the
    # client was built: the next request must stop before it connects, not go out.
    cert_path, key_path = self_signed_ca(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    connections: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await _answer(reader, writer)

    server = await asyncio.start_server(counted, "127.0.0.1", 0, ssl=server_context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    shared = ssl.create_default_context(cafile=str(cert_path))
    try:
        async with AliKassaClient(
            ACCOUNT,
            payout_cert=payout_cert,
            base_url=url,
            retry=RetryPolicy.disabled(),
            **WEAKENED_SETUPS[setup](shared),
        ) as client:
            assert (await client.balance()).currency == "RUB"
            before = len(connections)
            shared.check_hostname = False
            shared.verify_mode = ssl.CERT_NONE
            with pytest.raises(ConfigurationError, match=r"CERT_NONE|check_hostname"):
                await client.balance()
            assert len(connections) == before
    finally:
        server.close()
        await server.wait_closed()
