"""Shared state of one sandbox server: the seed, the request log, the faults, the stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.faults import FaultInjector
from sandbox.recorder import Recorder
from sandbox.seed import SandboxSeed


@dataclass
class SandboxContext:
    seed: SandboxSeed
    recorder: Recorder = field(default_factory=Recorder)
    faults: FaultInjector = field(default_factory=FaultInjector)
    stores: dict[str, Any] = field(default_factory=dict)
    """One store per vendor, keyed by its path prefix name ("karbon", "slack", ...)."""
    base_url: str = "http://127.0.0.1:8100"
    """Where the sandbox is reachable; emulators use it to build links (Location, htmlLink)."""
