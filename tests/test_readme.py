"""The README tells the truth: its Python examples type-check, its numbers match the code.

Every ```python block is extracted and checked with ``mypy --strict`` as its own
module. A block may use the names the prose around it introduces (``client``,
``verifier``, ...): :data:`CONTEXT` declares them, typed. A block with top-level
``await`` is checked as the body of an ``async def``, as it would run in an app.
Blocks that need nothing from outside (no network, no context) are also run, and
what they print is compared with the ``# ...`` comment that shows it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: what the README's prose gives a block to work with
CONTEXT = """\
import sqlite3
from collections.abc import Sequence

from alikassa_async import (
    AliKassaClient, Certificate, Notification, NotificationVerifier, PayoutCreated,
    PayoutRequest,
)
from alikassa_async.sandbox import Sandbox

client: AliKassaClient
created: PayoutCreated
po: PayoutRequest
items: Sequence[PayoutRequest]
requests: Sequence[PayoutRequest]
dsn: str
cert: Certificate
db: sqlite3.Connection
verifier: NotificationVerifier
raw_query_or_body: bytes
ACCOUNT: str
sandbox: Sandbox


async def record_once(note: Notification) -> None: ...
"""
_CONTEXT_NAMES = {
    "client",
    "created",
    "po",
    "items",
    "db",
    "verifier",
    "raw_query_or_body",
    "ACCOUNT",
    "sandbox",
    "record_once",
}


def python_blocks() -> list[tuple[int, str]]:
    """``(line of the first code line, code)`` for every ```python block."""
    return [
        (README[: m.start(1)].count("\n") + 1, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", README, re.S | re.M)
    ]


def needs_async_wrapper(code: str) -> bool:
    try:
        compile(code, "<readme>", "exec")
    except SyntaxError as exc:
        return "outside" in str(exc) and ("await" in str(exc) or "async" in str(exc))
    return False


def as_module(code: str) -> tuple[str, int]:
    """The block as a checkable module, and how many lines precede the block's first."""
    if needs_async_wrapper(code):
        body = textwrap.indent(code, "    ")
        return CONTEXT + "\n\nasync def _readme_example() -> None:\n" + body, CONTEXT.count(
            "\n"
        ) + 3
    return CONTEXT + "\n" + code, CONTEXT.count("\n") + 1


def test_the_readme_has_python_examples() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 10
    assert any("asyncio.run(main())" in code for _, code in blocks)  # the quickstart


def test_every_readme_python_block_passes_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    files: dict[str, tuple[int, int]] = {}  # file name -> (README line, context lines)
    for line, code in python_blocks():
        module, offset = as_module(code)
        name = f"readme_line_{line}.py"
        (tmp_path / name).write_text(module, encoding="utf-8")
        files[name] = (line, offset)
    # Run from the project root: its [tool.mypy] settings and its cache (CI has just
    # type-checked the package, so only the examples are new).
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-color-output",
            "--show-error-codes",
            *sorted(str(tmp_path / name) for name in files),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    problems = []
    for text in result.stdout.splitlines():
        found = re.match(r"(?:.*/)?(readme_line_\d+\.py):(\d+): (?:error|note): (.*)", text)
        if found:
            start, offset = files[found[1]]
            problems.append(f"README.md:{start + int(found[2]) - offset - 1}: {found[3]}")
    assert result.returncode == 0 and not problems, (
        "\n".join(problems) or result.stdout + result.stderr
    )


def _free_names(code: str) -> set[str]:
    tree = ast.parse(code)
    loaded = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    return loaded & _CONTEXT_NAMES


def runnable_blocks() -> list[tuple[int, str]]:
    """Blocks that run without context or network: executed, their output compared."""
    return [
        (line, code)
        for line, code in python_blocks()
        if not needs_async_wrapper(code)
        and not _free_names(code)
        and "asyncio.run(" not in code
        and "AliKassaClient(" not in code
    ]


@pytest.mark.parametrize(
    ("line", "code"), runnable_blocks(), ids=[f"line-{line}" for line, _ in runnable_blocks()]
)
def test_runnable_blocks_print_what_their_comments_show(line: int, code: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_example"})
    shown = re.search(r"print\((.*?)\)\n((?:\s*# .*\n)+)", code)
    if shown:  # "# {...}" comments under a print() show its output
        expected = "".join(c.strip()[2:] for c in shown[2].strip().splitlines())
        assert ast.literal_eval(out.getvalue().strip()) == ast.literal_eval(expected)


# -- numbers and commands the README states ----------------------------------------------


def test_the_demos_batch_size_is_the_one_the_readme_states() -> None:
    from alikassa_async.cli import demo

    stated = re.search(r"runs a batch of ([\d,]+) payouts", README)
    assert stated, "the README no longer says how big the demo's batch is"
    assert int(stated[1].replace(",", "")) == demo._BATCH_SIZE


def test_the_client_options_table_lists_every_constructor_option() -> None:
    import inspect

    from alikassa_async import AliKassaClient

    table = README[README.index("### Client options") : README.index("### Performance")]
    documented = set(re.findall(r"`(\w+)`", table))
    options = [
        name
        for name in inspect.signature(AliKassaClient.__init__).parameters
        if name not in ("self", "account", "payment_cert", "payout_cert")
    ]
    missing = [name for name in options if name not in documented]
    assert not missing, f"options missing from the README table: {missing}"


def test_install_commands_work_from_a_clone_today() -> None:
    install = README[README.index("## Install") : README.index("## Quickstart")]
    # Until the package is on PyPI, the command that works installs from the source tree.
    assert "pip install 'alikassa-async" not in install.split("Once published")[0]
    assert "pip install -e" in install or "pip install '.[" in install or "pip install ." in install
    # ... and every extra it names exists.
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    for extra in re.findall(r"\[(\w+)\]", install):
        assert extra in extras, extra


def test_the_lowest_pins_command_and_its_test_count_are_stated() -> None:
    match = re.search(r"`(bash scripts/test-lowest-pins\.sh)`[^\n]*", README)
    assert match, "the README gives no command that reproduces the lowest-versions run"
    assert (ROOT / "scripts" / "test-lowest-pins.sh").exists()
    assert re.search(r"lowest.*?[\d,]+ passed", README, re.S)
