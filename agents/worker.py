"""`python -m agents.worker`: one learning agent from a JSON object on stdin.

    echo '{"run_id":"test_run","env_id":"FrozenLake-v1","agent_id":"test_agent","episodes":10,
           "extra":{"use_grpc_telemetry":true}}' | python -m agents.worker

It runs the agent through the same `run_agents` as the container. Telemetry goes to the
daemon at 127.0.0.1:50055 (or `extra.telemetry_target`); with `"use_grpc_telemetry": false`
every step and episode is a JSON line on stdout instead. The XMPP server is the one at
`extra.xmpp_host`:`extra.xmpp_port` (default localhost:5222) if it answers; otherwise the
worker starts an embedded one there (or on a free port if that one is taken) and says so.
Everything meant for people goes to stderr, so stdout stays machine-readable.

Exit codes: 0 the agent finished, 1 it failed (or could not start), 2 the JSON was malformed,
missing a field, or named an unknown environment, 130 interrupted.
"""

from __future__ import annotations

import os

# The embedded XMPP server hashes passwords in forked worker processes while gRPC threads
# run; those children never use gRPC, so gRPC's fork handlers (and their warnings) are not
# needed. Read when gRPC loads, hence before any import that loads it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import functools
import sys

from agents.config import ConfigError, ContainerConfig, parse_worker_json
from agents.container import EXIT_BAD_INPUT, run_process, run_with_report

PROG = "python -m agents.worker"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Run one learning agent from a JSON config read on stdin.")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run_id although that run has finished (episode numbering continues)")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        print(f"{PROG}: reading the JSON config from stdin (pipe it in; Ctrl-D ends it)", file=sys.stderr)
    try:
        config = parse_worker_json(sys.stdin.read())
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    container = ContainerConfig(run_id=config.run_id, agents=[config], xmpp=config.xmpp, telemetry=config.telemetry,
                                resume=args.resume)
    return run_process(
        functools.partial(run_with_report, container, stream=sys.stderr, start_xmpp_if_missing=True),
        log_level=args.log_level,
    )


if __name__ == "__main__":
    sys.exit(main())
