"""``python starter.py`` as a process: loopback by default, and clear one-line start errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.sandbox_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def outside_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (none on a machine without a network)."""
    found: set[str] = set()
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    found.update(str(info[4][0]) for info in infos)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not a.startswith("127."))


@contextmanager
def starter(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "starter.py")],
        cwd=ROOT,
        # DISPATCH_HOST is never inherited: the default is what is under test.
        env={**{k: v for k, v in os.environ.items() if k != "DISPATCH_HOST"}, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_the_starter_listens_on_loopback_unless_told_otherwise() -> None:
    port = free_port()
    with starter({"DISPATCH_PORT": str(port), "TEMPORAL_ADDRESS": "127.0.0.1:1"}) as process:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
        for address in outside_addresses():
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((address, port)) != 0, f"reachable on {address}:{port}"


def test_a_missing_route_secret_is_one_line_not_a_traceback() -> None:
    env = {
        "DISPATCH_PORT": str(free_port()),
        "SLACK_SIGNING_SECRET": "",  # the demo firm chats on Slack: its route needs this
    }
    with starter(env) as process:
        process.wait(timeout=60)
        assert process.returncode == 2
        assert process.stderr is not None
        error = process.stderr.read().decode()
    assert error.startswith("starter: ") and "SLACK_SIGNING_SECRET" in error
    assert "Traceback" not in error
