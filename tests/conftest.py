"""Suite-wide settings.

Temporal's Rust core can abort the interpreter at exit after all tests passed
(``PyGILState_Release ... finalizing``, exit 134). The exit status of ``make test`` must be
the tests' verdict, so once pytest has finished reporting we leave with that status directly.
"""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status is None or os.environ.get("DISPATCH_TEST_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
