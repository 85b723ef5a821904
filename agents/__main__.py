"""`python -m agents COMMAND`: the agent container's command line.

    python -m agents run CONFIG [--embedded-xmpp]   run the agents of a TOML/JSON config
    python -m agents demo                           three agents, embedded XMPP and daemon

Each command lives in its own module, which provides `add_<name>_command(commands)`: it adds
an argparse sub-parser and sets `handler`, a function from the parsed arguments to the exit
code. Adding a command is one line in COMMANDS ("module:function").
"""

from __future__ import annotations

import os

# The embedded XMPP server hashes passwords in forked worker processes while gRPC threads
# run; those children never use gRPC, so gRPC's fork handlers (and their warnings) are not
# needed. Read when gRPC loads, hence before any import that loads it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import importlib
import sys

COMMANDS = (
    "agents.container:add_run_command",
    "agents.demo:add_demo_command",
    "agents.experiment.command:add_experiment_command",
)


class _Arguments(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command of COMMANDS registered."""
    parser = _Arguments(prog="python -m agents", description="SPADE BDI agents learning with Q-learning, streaming telemetry.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Arguments)
    for spec in COMMANDS:
        module, _, function = spec.partition(":")
        getattr(importlib.import_module(module), function)(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
