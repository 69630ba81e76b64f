"""The ``suanli`` command line: one entry point, one sub-command per job.

Each feature area owns its sub-commands in a ``commands`` module exposing ``register(subparsers)``;
this module only assembles them, so adding a command never touches another area's code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from suanli import __version__, failures
from suanli.errors import UserFacingError

# Explicit list (no discovery): the order is the order of `suanli --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "suanli.devenv.commands",
    "suanli.api.commands",
    "suanli.telemetry.commands",
    "suanli.handlers.commands",
    "suanli.members.commands",
    "suanli.capacity_commands",
    "suanli.status.commands",
    "suanli.statements_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suanli",
        description="Federate GPU computing centers on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"suanli {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # every failure ends in a sentence, never a traceback
        if args.verbose and not isinstance(error, UserFacingError):
            logging.getLogger("suanli").exception("the command failed")
        print(f"{parser.prog}: error: {failures.explain(error)}", file=sys.stderr)
        return failures.EXIT_FAILURE
    return result
