"""The ``dispatch`` command line: options are checked before anything starts."""

from __future__ import annotations

import pytest

from dispatch.cli import build_parser


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
