"""``alikassa payouts run``: whole-file validation first, progress bar, results, exit codes.

The runs against a live server (and the crash/resume run) are in
tests/test_batch_sandbox.py.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alikassa_async._batch import BatchProgress
from alikassa_async.cli.payouts import main, validate_file
from alikassa_async.cli.progress import ProgressBar

CARD = "4111111111111111"


def write_csv(path: Path, rows: list[str], header: str = "service,order_id,amount,number") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_every_bad_row_is_reported_with_its_line_before_anything_is_sent(tmp_path):
    csv_path = write_csv(
        tmp_path / "payouts.csv",
        [
            f"payment_card_rub,P-1,100,{CARD}",
            f"payment_card_rub,P-2,ten,{CARD}",  # line 3: amount
            "payment_card_rub,P-3,100,",  # line 4: number missing
            f"payment_card_rub,P-1,100,{CARD}",  # line 5: duplicate order_id
            f'payment_card_rub,P-4,"10\n0",{CARD}',  # a quoted newline: lines 6-7
            f"payment_card_rub,P-5,1.5.5,{CARD}",  # line 8
        ],
    )
    # --check: no certificate given; validation must not need it, nor the network.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alikassa_async.cli",
            "payouts",
            "run",
            str(csv_path),
            "--check",
            "--base-url",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("line 3: amount:")
    assert lines[1].startswith("line 4: number:")
    assert lines[2] == "line 5: order_id: 'P-1' already used on line 2"
    assert lines[3].startswith("line 7: amount:")  # a row is named by the line it ends on
    assert lines[4].startswith("line 8: amount:")
    assert lines[5] == f"5 bad row(s) in {csv_path}; nothing was sent"
    assert CARD not in proc.stderr + proc.stdout
    assert not (tmp_path / "payouts.csv.journal.db").exists()


def test_missing_columns_and_missing_credentials_are_usage_errors(
    tmp_path, monkeypatch, capsys, cert_dir
):
    for name in ("ALIKASSA_ACCOUNT", "ALIKASSA_PAYOUT_CERT_DIR", "ALIKASSA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    bad_header = write_csv(
        tmp_path / "a.csv", [f"payment_card_rub,P-1,{CARD}"], header="service,order_id,number"
    )
    assert main(["payouts", "run", str(bad_header), "--check"]) == 2
    assert "header lacks column(s) amount" in capsys.readouterr().err
    good = write_csv(tmp_path / "b.csv", [f"payment_card_rub,P-1,100,{CARD}"])
    assert main(["payouts", "run", str(good), "--check"]) == 0
    assert "1 payout(s), all valid" in capsys.readouterr().out
    # A real run checks its configuration first, before it reports on the file.
    assert main(["payouts", "run", str(bad_header)]) == 2
    err = capsys.readouterr().err
    assert "no account" in err and "header" not in err and "re-run" not in err
    assert (
        main(
            [
                "payouts",
                "run",
                str(good),
                "--account",
                "not-a-uuid",
                "--payout-cert",
                str(cert_dir / "payout"),
            ]
        )
        == 2
    )
    assert "account must be the account UUID" in capsys.readouterr().err
    assert (
        main(
            [
                "payouts",
                "run",
                str(good),
                "--account",
                "93d5df06-996c-48c3-9847-348d6b580b80",
                "--payout-cert",
                str(tmp_path / "missing"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "missing" in err and "valid" not in err and "re-run" not in err


def test_extra_columns_fill_the_extra_object_and_empty_cells_are_left_out(tmp_path):
    path = write_csv(
        tmp_path / "eur.csv",
        [
            f"payment_card_rub,P-1,100,{CARD},,,",
            f"payment_card_rub,P-2,100,{CARD},CARD HOLDER,UA,",
        ],
        header="service,order_id,amount,number,extra.card_holder,extra.card_country,customer_email",
    )
    rows, problems, _ = validate_file(path)
    assert (rows, problems) == (2, [])
    from alikassa_async.cli.payouts import read_payouts

    requests = [item for _, item in read_payouts(path)]
    assert "extra" not in requests[0].fields and "customer_email" not in requests[0].fields
    assert requests[1].fields["extra"] == {"card_holder": "CARD HOLDER", "card_country": "UA"}


def test_progress_bar_renders_counts_rate_and_eta():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    progress = BatchProgress(
        done=250,
        total=1000,
        counts={"created": 249, "rejected": 1},
        elapsed=2.5,
        rate=100.0,
        in_flight=64,
    )
    text = bar.render(progress)
    assert text.startswith("[" + "#" * 7 + "." * 23 + "]")
    assert "250/1,000" in text and "25%" in text and "100/s" in text
    assert "created=249 rejected=1" in text and "ETA 8s" in text
    bar(progress)
    bar(
        BatchProgress(
            done=1000, total=1000, counts={"created": 1000}, elapsed=10, rate=100.0, in_flight=0
        )
    )
    bar.close()
    lines = stream.getvalue().splitlines()  # not a terminal: whole lines, last one final
    assert lines[-1].startswith("[" + "#" * 30 + "] 1,000/1,000 100%")
    unknown_total = bar.render(
        BatchProgress(done=5, total=None, counts={"created": 5}, elapsed=1, rate=5.0, in_flight=0)
    )
    assert unknown_total == "5 done 5/s created=5"


async def test_a_run_against_the_sandbox_writes_results_and_flags_what_needs_attention(
    alikassa_sandbox, alikassa_account, alikassa_certs, tmp_path
):
    import asyncio
    import csv
    import os

    path = write_csv(
        tmp_path / "payouts.csv",
        [
            f"payment_card_rub,P-1,100.00,{CARD}",
            f"payment_card_rub,P-2,100.91,{CARD}",  # the sandbox cancels .91
            f"payment_card_rub,P-3,900000000.00,{CARD}",  # more than the balance: rejected
            f"payment_card_rub,P-4,100.00,{CARD}",
        ],
    )
    env = {
        **os.environ,
        "ALIKASSA_ACCOUNT": alikassa_account,
        "ALIKASSA_PAYOUT_CERT_DIR": str(alikassa_certs.payout_dir),
        "ALIKASSA_BASE_URL": alikassa_sandbox.url,
    }
    command = [
        sys.executable,
        "-m",
        "alikassa_async.cli",
        "payouts",
        "run",
        str(path),
        "--journal",
        str(tmp_path / "j.db"),
        "--wait-final",
        "--wait-timeout",
        "20",
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    summary = out.decode()
    assert "done in" in summary and "cancel 1, paid 2, rejected 1" in summary
    assert "2 payout(s) need attention" in summary
    assert "[" in err.decode() and "4/4" in err.decode()  # the progress bar, on stderr
    with (tmp_path / "payouts.results.csv").open(newline="") as handle:
        rows = {r["order_id"]: r for r in csv.DictReader(handle)}
    assert {k: r["outcome"] for k, r in rows.items()} == {
        "P-1": "paid",
        "P-2": "cancel",
        "P-3": "rejected",
        "P-4": "paid",
    }
    assert rows["P-3"]["line"] == "4" and "amount" in rows["P-3"]["error"]
    assert rows["P-1"]["payout_id"] and rows["P-1"]["status"] == "paid"
    assert CARD not in summary + err.decode() + (tmp_path / "payouts.results.csv").read_text()

    # The same command again: the final ones are known; only the rejected one is re-sent.
    requests_before = dict(alikassa_sandbox.state.payout_create_requests)
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 1
    assert "4 already known to the journal" in out.decode()
    after = alikassa_sandbox.state.payout_create_requests
    assert {k: after[k] - requests_before.get(k, 0) for k in after} == {
        "P-1": 0,
        "P-2": 0,
        "P-3": 1,
        "P-4": 0,
    }


def test_semicolon_separated_files_are_read_and_a_bad_header_names_the_delimiter(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_text(
        "service;order_id;amount;number\n"
        f"payment_card_rub;P-1;100,00;{CARD}\n"  # a decimal comma is still bad
        f"payment_card_rub;P-2;100.00;{CARD}\n",
        encoding="utf-8-sig",
    )
    rows, problems, _ = validate_file(path)
    assert rows == 2 and len(problems) == 1 and problems[0].startswith("line 2: amount")
    bad = tmp_path / "bad.csv"
    bad.write_text("service;order_id;sum\npayment_card_rub;P-1;1\n")
    assert main(["payouts", "run", str(bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert "lacks column(s) amount" in err and "semicolon-separated" in err


def test_plain_http_to_another_host_needs_the_flag_the_message_names(tmp_path, cert_dir, capsys):
    from alikassa_async.cli import build_parser
    from alikassa_async.cli.payouts import _client_settings

    good = write_csv(tmp_path / "b.csv", [f"payment_card_rub,P-1,100,{CARD}"])
    command = [
        "payouts",
        "run",
        str(good),
        "--account",
        "93d5df06-996c-48c3-9847-348d6b580b80",
        "--payout-cert",
        str(cert_dir / "payout"),
        "--base-url",
        "http://10.0.0.5:8080",
    ]
    assert main(command) == 2  # refused before anything is read or sent
    assert "--allow-plain-http" in capsys.readouterr().err
    # With the flag the configuration is accepted (checked here without sending anything).
    args = build_parser().parse_args([*command, "--allow-plain-http"])
    assert _client_settings(args)["allow_plain_http"] is True


def test_every_option_has_help_and_the_description_is_plain_text():
    from alikassa_async.cli import build_parser

    parser = build_parser()
    run = (
        parser._subparsers._group_actions[0]
        .choices["payouts"]
        ._subparsers._group_actions[0]
        .choices["run"]
    )
    for action in run._actions:
        assert action.help, action.option_strings or action.dest
    help_text = run.format_help()
    assert "``" not in help_text and "::" not in help_text
    assert "payouts.results.csv" in help_text  # the real default of --results


async def _run_on_a_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` with stderr on a pseudo-terminal; its exit code and what it drew."""
    import asyncio
    import pty

    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=slave, env=env
    )
    os.close(slave)
    drawn = bytearray()
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = await loop.run_in_executor(None, os.read, master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return await proc.wait(), drawn.decode("utf-8", "replace")


@pytest.mark.parametrize("no_color", [False, True])
async def test_a_terminal_gets_the_rich_display_and_no_color_is_honoured(
    alikassa_sandbox, alikassa_account, alikassa_certs, tmp_path, no_color
):
    path = write_csv(
        tmp_path / "tty.csv", [f"payment_card_rub,T-{i},100,{CARD}" for i in range(40)]
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(
        {"COLUMNS": "160", "TERM": "xterm-256color", **({"NO_COLOR": "1"} if no_color else {})}
    )
    code, drawn = await _run_on_a_terminal(
        [
            sys.executable,
            "-m",
            "alikassa_async.cli",
            "payouts",
            "run",
            str(path),
            "--account",
            alikassa_account,
            "--payout-cert",
            str(alikassa_certs.payout_dir),
            "--base-url",
            alikassa_sandbox.url,
            "--rate",
            "40",
        ],
        env,
    )
    assert code == 0, drawn
    assert "40/40" in drawn and "created 40" in drawn and "in flight" in drawn
    assert "━" in drawn  # rich's bar, not the plain '#' one
    colours = re.findall(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*38;", drawn)
    assert (colours == []) is no_color


def test_without_a_terminal_progress_is_plain_lines(alikassa_certs, tmp_path):
    from alikassa_async.cli.progress import ProgressBar, make_progress

    stream = io.StringIO()
    assert isinstance(make_progress("auto", stream, 10), ProgressBar)
    assert make_progress("none", stream, 10) is None
