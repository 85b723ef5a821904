"""Shared pytest set-up. Fixture modules live beside this file and are listed here."""
import os

# Tests run gRPC (daemons, proxies) beside the embedded XMPP server in one process. gRPC's fork
# support (on by default) runs fork handlers whenever anything forks while its threads are
# busy, and a child forked then can crash; no child here uses gRPC, so the handlers are not
# needed. gRPC reads this when it loads: set it before any import that loads grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
pytest_plugins: list[str] = [
    "tests.fixtures_daemon",
    "tests.fixtures_xmpp",
    "tests.fixtures_browser",
    "tests.fixtures_container",
]
