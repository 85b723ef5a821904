"""`python -m agents.experiment FILE --out DIR`: the same as `python -m agents experiment`."""

import argparse
import sys

from agents.experiment.command import configure_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.experiment", description="Run a coordination experiment.")
    configure_parser(parser)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
