"""Run a test module's sessions in both relay modes: `from relay_modes import sockd`.

The imported fixture overrides conftest's `sockd` for that module: every test of
the module runs once with the worker's own relay (`--relay worker`, the default)
and once with relay processes (`--relay shared`, two of them).  A test that
looks at what only the worker mode has (a busy worker's title, say) is marked
`relay_worker_only` and runs in the worker mode only; tests/integration/
test_relay_shared.py has its counterparts for the relay processes.
"""

import pytest

from conftest import LOOPBACK_RULES

SHARED = ["--relay", "shared", "--relay-processes", "2"]


@pytest.fixture(params=["worker", "shared"], ids=["relay-worker", "relay-shared"])
def sockd(request, sockd):
    if request.param == "worker":
        return sockd
    if request.node.get_closest_marker("relay_worker_only"):
        pytest.skip("looks at what only --relay worker has")

    def start(rules: str | None = LOOPBACK_RULES, args=(), ready: bool = True):
        return sockd(rules=rules, args=[*args, *SHARED], ready=ready)
    return start
