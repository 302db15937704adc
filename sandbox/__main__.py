"""``python -m sandbox``: serve the emulators (what ``dispatch sandbox`` runs)."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from dispatch.config import DEMO_FIRM_PATH, FirmConfigError, load_firm_config
from sandbox import DEFAULT_PORT
from sandbox.app import create_app
from sandbox.seed import seed_from_firm

DEMO_PROFILE = DEMO_FIRM_PATH.parent / "demo_sandbox.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="dispatch sandbox", description="Local emulators of the firm's external systems."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--firm", help="firm config to seed from (default: DISPATCH_FIRM_CONFIG or the demo firm)"
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="YAML of logged hours per person (default: the demo profile when "
        "seeding the demo firm)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_firm_config(args.firm)
    except FirmConfigError as err:
        print(f"sandbox: {err}", file=sys.stderr)
        sys.exit(2)
    profile = args.profile
    if profile is None and config.firm.id.startswith("harbor-finch"):
        profile = str(DEMO_PROFILE)
    seed = seed_from_firm(config, profile)
    app = create_app(seed, base_url=f"http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
