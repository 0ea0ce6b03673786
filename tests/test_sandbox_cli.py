"""The ``alikassa`` command (keygen, sandbox, demo), the threaded server, the pytest plugin.

Commands run as real subprocesses (``python -m alikassa_async`` and the console
script), the way a user runs them.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from alikassa_async import Certificate
from alikassa_async._encoding import php_json_encode
from alikassa_async.cli import build_parser, main
from alikassa_async.sandbox import Sandbox, SandboxCerts, generate_certs
from alikassa_async.sandbox.server import ThreadedSandboxServer

from .sandbox_helpers import ACCOUNT, payout_body

PYTHON = [sys.executable, "-m", "alikassa_async"]


# ---------------------------------------------------------------------------
# keygen


def test_keygen_writes_archives_like_the_vendors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", str(tmp_path / "certs")]) == 0
    assert "payment/" in capsys.readouterr().out
    root = tmp_path / "certs"
    for role in ("payment", "payout"):
        pem = (root / role / "private.pem").read_bytes()
        lines = pem.splitlines()
        # Legacy OpenSSL-encrypted PKCS#1: what the vendor's Go/Java samples can read.
        assert lines[0] == b"-----BEGIN RSA PRIVATE KEY-----"
        assert lines[1] == b"Proc-Type: 4,ENCRYPTED" and lines[2].startswith(b"DEK-Info: ")
        password = (root / role / "password.txt").read_bytes()
        assert password and password == password.strip()  # PHP passes it untrimmed
        for secret in ("private.pem", "password.txt"):
            assert stat.S_IMODE((root / role / secret).stat().st_mode) == 0o600
        cert = Certificate.from_dir(root / role)
        assert cert.public_key_pem() == (root / role / "public.pem").read_bytes()
        assert cert.key_size == 2048
    assert sorted(p.name for p in (root / "notification").iterdir()) == [
        "private.pem",
        "public.pem",
    ]


def test_keygen_refuses_to_replace_keys_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate_certs(tmp_path)
    before = (tmp_path / "payout" / "private.pem").read_bytes()
    assert main(["keygen", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "payout" / "private.pem").read_bytes() == before
    (tmp_path / "payout" / "private.pem").chmod(0o644)  # loosened by hand, or by a copy
    assert main(["keygen", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "payout" / "private.pem").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "payout" / "private.pem").stat().st_mode) == 0o600


def test_keygen_into_a_place_it_cannot_write_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    assert main(["keygen", str(blocker / "certs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write keys to") and "Traceback" not in err


def test_the_parser_has_every_command_and_checks_its_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    help_text = build_parser().format_help()
    for command in ("demo", "keygen", "sandbox", "payouts", "status", "balance"):
        assert command in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(["sandbox", "--fault-rate", "1.5"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["sandbox", "--account", "not-a-uuid"])
    assert "must be a UUID" in capsys.readouterr().err


def test_the_console_script_is_the_same_command() -> None:
    script = shutil.which("alikassa", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the alikassa console script is not installed next to this python")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "sandbox" in result.stdout
    via_module = subprocess.run([*PYTHON, "--help"], capture_output=True, text=True, timeout=60)
    assert via_module.stdout.replace("__main__.py", "alikassa") == result.stdout


# ---------------------------------------------------------------------------
# alikassa sandbox, as a process


async def start_sandbox(*args: str, with_banner: bool = False) -> Any:
    """Start ``alikassa sandbox --port 0 ARGS``; ``(proc, base_url[, banner lines])``."""
    proc = await asyncio.create_subprocess_exec(
        *PYTHON,
        "sandbox",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    url = ""
    banner: list[str] = []
    async with asyncio.timeout(60):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "the sandbox exited before it was ready"
            banner.append(line.rstrip("\n"))
            if line.strip().startswith("base_url"):
                url = line.split()[-1]
            if line.startswith("Press Ctrl+C"):
                return (proc, url, banner) if with_banner else (proc, url)


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        return await proc.wait()


async def test_the_sandbox_command_serves_until_interrupted(
    tmp_path: Path,
    alikassa_certificates: tuple[Certificate, Certificate],
    alikassa_certs: SandboxCerts,
) -> None:
    shutil.copytree(alikassa_certs.root, tmp_path / "certs")
    proc, url = await start_sandbox(
        "--certs",
        str(tmp_path / "certs"),
        "--account",
        ACCOUNT,
        "--wait-seconds",
        "0",
        "--wait-polls",
        "0",
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        body = php_json_encode(payout_body())
        headers = {
            "Content-Type": "application/json",
            "Account": ACCOUNT,
            "Sign": alikassa_certificates[1].sign(body),
        }
        async with httpx.AsyncClient(base_url=url) as http:
            created = await http.post("/v1/payout", content=body, headers=headers)
            assert created.status_code == 200
            lookup = php_json_encode({"order_id": "P-1"})
            status = await http.post(
                "/v1/payout/status",
                content=lookup,
                headers={**headers, "Sign": alikassa_certificates[1].sign(lookup)},
            )
            assert status.json()["payment_status"] == "paid"
    finally:
        code = await stop(proc)
    assert code == 0


async def test_the_sandbox_command_creates_missing_certs_and_injects_faults(tmp_path: Path) -> None:
    certs = tmp_path / "fresh"
    proc, url = await start_sandbox("--certs", str(certs), "--fault-rate", "0.5", "--seed", "3")
    try:
        assert (certs / "payout" / "password.txt").exists()
        payout = Certificate.from_dir(certs / "payout")
        statuses = []
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(24):
                try:
                    response = await http.post(
                        "/v1/account/balance",
                        content=b"[]",
                        headers={
                            "Content-Type": "application/json",
                            "Account": "93d5df06-996c-48c3-9847-348d6b580b80",
                            "Sign": payout.sign(b"[]"),
                        },
                    )
                    statuses.append(response.status_code)
                except httpx.HTTPError:
                    statuses.append(0)  # a dropped connection
        assert 200 in statuses and any(s != 200 for s in statuses)
    finally:
        await stop(proc)


# ---------------------------------------------------------------------------
# alikassa demo


async def test_the_demo_runs_end_to_end_and_exits_0() -> None:
    proc = await asyncio.create_subprocess_exec(
        *PYTHON, "demo", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "demo OK" in text
    assert "signature OK (sha1, documented layout)" in text
    assert "payment_card_bdt_hpp" in text and "payment_card_eur" in text
    assert "created twice: 0" in text
    assert "Traceback" not in err.decode()


async def test_demo_v_shows_the_sdks_lines_and_not_every_librarys() -> None:
    proc = await asyncio.create_subprocess_exec(
        *PYTHON, "demo", "-v", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode() + err.decode()[-2000:]
    lines = err.decode().splitlines()
    assert any(" alikassa_async: POST v1/payout -> 200" in line for line in lines)
    assert not [line for line in lines if " httpcore." in line or " hpack." in line]
    assert all(" alikassa_async" in line for line in lines if " DEBUG " in line)


# ---------------------------------------------------------------------------
# a sandbox in its own thread, for blocking clients


def test_threaded_server_serves_blocking_clients(
    alikassa_certs: SandboxCerts, alikassa_certificates: tuple[Certificate, Certificate]
) -> None:
    sandbox = Sandbox.from_certs(alikassa_certs, ACCOUNT)
    body = php_json_encode(payout_body())
    with ThreadedSandboxServer(sandbox) as server, httpx.Client(base_url=server.url) as http:
        response = http.post(
            "/v1/payout",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Account": ACCOUNT,
                "Sign": alikassa_certificates[1].sign(body),
            },
        )
        assert response.status_code == 200
        record = server.call(sandbox.finalise, "payout", order_id="P-1", status="cancel")
        assert record.status == "cancel"
    assert sandbox.state.payout_creations["P-1"] == 1


@pytest.mark.parametrize("command", ["demo", "keygen", "sandbox", "status", "balance"])
def test_every_option_has_help_text(command: str) -> None:
    import argparse

    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    parser = subparsers.choices[command]
    bare = [a.dest for a in parser._actions if not a.help and a.dest != "help"]
    assert not bare, f"alikassa {command}: options without help: {bare}"
