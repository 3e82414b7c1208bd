"""Suite-wide test setup: the loopback guard, and fixtures every test directory may use.

What it decides: that no test sends a packet off loopback -- ``socket.socket.connect``,
``connect_ex``, ``sendto`` and ``sendmsg`` are wrapped for the whole session in this process, and
any attempt (even one swallowed inside a server thread) fails the test that made it.
What it reads: ``CI`` (through ``require_tool``: a missing tool fails instead of skipping).
It sets ``XDG_STATE_HOME`` to a private directory, so no test writes to the developer's home.
What it must never do: touch subprocesses -- the patch lives in the pytest process only, so the
server under test runs unmodified.

Helpers live in ``tests.support``; import them as ``from tests.support.authserver import
AuthServer``. This file puts the repository root on ``sys.path`` so that works however pytest was
started.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support import free_port as _free_port  # noqa: E402
from tests.support import guard, require_tool  # noqa: E402
from tests.support.authserver import AuthServer  # noqa: E402

__all__ = ["require_tool"]


_STATE = tempfile.TemporaryDirectory(prefix="guardian-test-state-")


def pytest_configure(config: pytest.Config) -> None:
    guard.install()
    # Servers and CLI runs started by tests save their domain tables here, never in ~/.local.
    os.environ["XDG_STATE_HOME"] = _STATE.name
    os.environ.pop("STATE_DIRECTORY", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    guard.uninstall()


@pytest.fixture(autouse=True)
def _no_traffic_off_loopback() -> Iterator[None]:
    """Fail the test if anything (test code, fixture or thread) tried to leave loopback."""
    guard.take_violations()
    yield
    violations = guard.take_violations()
    if violations:
        pytest.fail("\n".join(violations), pytrace=False)


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    """The scriptable authoritative test upstream on 127.0.0.1, one per test."""
    with AuthServer() as server:
        yield server


@pytest.fixture
def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    return _free_port()


@pytest.fixture
def state_owned_by_nobody() -> Iterator[Path]:
    """A state directory owned by uid/gid 65534, for checking that root's CLI edits are made as
    the directory's owner (so the service user can still read them). Root only."""
    if os.geteuid() != 0:
        pytest.skip("needs root: checks that root's edits belong to the state directory's owner")
    # Outside pytest's own 0700 tree, so that the other user can reach the directory.
    top = Path(tempfile.mkdtemp(prefix="guardian-owner-"))
    try:
        top.chmod(0o755)
        state = top / "state"
        state.mkdir(mode=0o750)
        os.chown(state, 65534, 65534)
        yield state
    finally:
        shutil.rmtree(top)
