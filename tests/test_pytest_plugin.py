"""The pytest plugin as a user's project sees it: a fresh config, a real pytest process.

Each run is a new ``python -m pytest`` in an empty directory whose only config is
the ``asyncio_mode`` line a user would write (or none at all: pytest-asyncio's
default is strict). The plugin is found through the installed entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_TESTS = textwrap.dedent("""
    import pytest
    import pytest_asyncio
    from alikassa_async import build_payment
    from alikassa_async.sandbox import SandboxConfig


    @pytest.fixture
    def alikassa_sandbox_config():
        return SandboxConfig(wait_seconds=None, wait_polls=0)   # final on the first poll


    async def test_unmarked_checkout(alikassa_client, alikassa_sandbox):
        created = await alikassa_client.create_payment(build_payment(
            "payment_card_number_rub_hpp", order_id="A-1", amount="500",
            customer_ip="18.191.80.10", customer_user_id="u-42"))
        status = await alikassa_client.wait_for_payment(id=created.id, interval=0.02)
        assert status.payment_status == "paid"
        assert alikassa_sandbox.state.payment_creations["A-1"] == 1


    @pytest.mark.asyncio
    async def test_marked(alikassa_client):
        assert (await alikassa_client.balance()).balance > 0


    @pytest_asyncio.fixture
    async def starting_balance(alikassa_client):
        return (await alikassa_client.balance()).balance


    async def test_unmarked_through_a_fixture_of_its_own(starting_balance):
        assert starting_balance > 0


    @pytest.mark.parametrize("order_id", ["paid-1", "cancel-1"])
    async def test_unmarked_and_parametrized(alikassa_client, order_id):
        created = await alikassa_client.create_payment(build_payment(
            "payment_card_number_rub_hpp", order_id=order_id, amount="10",
            customer_ip="18.191.80.10", customer_user_id="u-42"))
        status = await alikassa_client.wait_for_payment(id=created.id, interval=0.02)
        assert status.payment_status == order_id.split("-")[0]


    class TestInAClass:
        async def test_unmarked_method(self, alikassa_sandbox):
            assert alikassa_sandbox.url.startswith("http://127.0.0.1:")


    def test_sync_fixtures(alikassa_certs, alikassa_account):
        assert (alikassa_certs.root / "payout" / "private.pem").exists()
        assert alikassa_account == "93d5df06-996c-48c3-9847-348d6b580b80"
""")


def run_user_project(
    tmp_path: Path, ini: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_shop.py").write_text(USER_TESTS)
    if ini is not None:
        (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


@pytest.mark.parametrize(
    "ini",
    [None, "asyncio_mode = strict\n", "asyncio_mode = auto\n"],
    ids=["default-config", "strict", "auto"],
)
def test_the_fixtures_work_from_unmarked_async_tests_in_every_mode(
    tmp_path: Path, ini: str | None
) -> None:
    result = run_user_project(tmp_path, ini)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    for name in (
        "test_unmarked_checkout",
        "test_marked",
        "test_unmarked_through_a_fixture_of_its_own",
        "test_sync_fixtures",
        "test_unmarked_and_parametrized[paid-1]",
        "test_unmarked_and_parametrized[cancel-1]",
        "TestInAClass::test_unmarked_method",
    ):
        assert f"PASSED test_shop.py::{name}" in report, report
    assert "7 passed" in report, report


def test_without_pytest_asyncio_the_failure_says_what_to_install(tmp_path: Path) -> None:
    result = run_user_project(tmp_path, None, "-p", "no:asyncio")
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert "pip install 'alikassa-async[pytest]'" in report
    assert "PASSED test_shop.py::test_sync_fixtures" in report


def test_the_pytest_extra_brings_the_runner_and_the_sandbox() -> None:
    import re
    from importlib.metadata import requires

    extra = re.compile(r"""extra\s*==\s*['"]pytest['"]""")
    wanted = {
        re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]
        for r in requires("alikassa-async") or []
        if extra.search(r)
    }
    # the runner, and the sandbox (itself, or its packages flattened in by the build backend)
    assert {"pytest", "pytest-asyncio"} <= wanted, wanted
    assert "alikassa-async" in wanted or {"starlette", "uvicorn"} <= wanted, wanted
