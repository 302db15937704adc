"""The ``dispatch`` command line: options are checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser
from app.stack import Stack, default_workers
from dispatch.config import load_firm_config


def test_the_demo_takes_a_batch_window_in_seconds() -> None:
    parser = build_parser()
    assert parser.parse_args(["demo", "--once", "--batch-window", "2.5"]).batch_window == 2.5
    assert parser.parse_args(["demo"]).batch_window is None


@pytest.mark.parametrize("given", ["-1", "301", "soon"])
def test_a_bad_batch_window_is_refused_with_the_reason(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", "--batch-window", given])
    assert exit_.value.code == 2
    assert "--batch-window" in capsys.readouterr().err


def test_simulate_is_a_dispatch_command() -> None:
    args = build_parser().parse_args(["simulate", "--profile", "S5", "--seeds", "2"])
    assert (args.command, args.profile, args.seeds) == ("simulate", "S5", 2)


def test_up_runs_one_worker_per_cpu_unless_told() -> None:
    parser = build_parser()
    assert parser.parse_args(["up"]).workers == default_workers()
    assert parser.parse_args(["up", "--workers", "3"]).workers == 3
    assert parser.parse_args(["demo", "--workers", "1"]).workers == 1


@pytest.mark.parametrize("given", ["0", "65", "two"])
def test_a_bad_worker_count_is_refused_with_the_reason(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["up", "--workers", given])
    assert exit_.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_the_dev_server_keeps_its_sqlite_file_in_wal_mode(tmp_path: Path) -> None:
    stack = Stack(load_firm_config(), tmp_path / "firm.yaml", data=tmp_path)
    argv = stack.dev_server_argv()
    pragmas = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--sqlite-pragma"]
    assert pragmas == ["journal_mode=wal", "synchronous=normal"]
    assert argv[argv.index("--db-filename") + 1] == str(tmp_path / "temporal.db")
    # The search-attribute table is cached, not read from the database on every use, and the
    # transfer queue is read often enough that a signal's next step does not wait 50 ms.
    config = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dynamic-config-value"]
    assert "system.forceSearchAttributesCacheRefreshOnRead=false" in config
    assert "history.transferProcessorMaxPollRPS=50" in config


def test_the_demo_prints_a_sign_in_link_on_one_line_that_signs_the_partner_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime
    from urllib.parse import parse_qs, unquote, urlsplit

    from rich.console import Console

    from app.board_web.auth import verify
    from app.cli import _print_demo_signin
    from app.secrets_demo import BOARD_SECRET_ENV, DEMO_SECRETS

    config = load_firm_config()
    stack = Stack(config, tmp_path / "firm.yaml", data=tmp_path)
    console = Console(width=60, record=True)

    monkeypatch.delenv(BOARD_SECRET_ENV, raising=False)
    _print_demo_signin(stack, config, console)  # a real firm's secret: no link printed
    assert "signin?t=" not in console.export_text()

    monkeypatch.setenv(BOARD_SECRET_ENV, DEMO_SECRETS[BOARD_SECRET_ENV])
    _print_demo_signin(stack, config, console)
    line = next(x for x in console.export_text().splitlines() if "signin?t=" in x)
    url = line.split()[2]  # "sign in:", then the link, whole on one line at 60 columns
    token = unquote(parse_qs(urlsplit(url).query)["t"][0])
    claims = verify(DEMO_SECRETS[BOARD_SECRET_ENV], "signin", token, datetime.now(UTC))
    assert claims.staff_id == config.escalation.managing_partner
