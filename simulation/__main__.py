"""``python -m simulation ...``: the same as ``dispatch simulate ...``."""

from __future__ import annotations

import argparse
import sys

from simulation.cli import add_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] != "simulate":
        args_list.insert(0, "simulate")
    return run(parser.parse_args(args_list))


if __name__ == "__main__":
    sys.exit(main())
