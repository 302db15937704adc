"""The tests' free ports: below the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import socket

from tests.sandbox_server import _ephemeral_ports_start, free_port


def test_free_ports_stay_below_the_ephemeral_range_and_are_never_repeated() -> None:
    # An outgoing connection takes its local port from the ephemeral range, so a port picked
    # there can be gone before the server it was picked for binds it.
    start = _ephemeral_ports_start()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < start for port in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out
