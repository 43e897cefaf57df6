"""The ``querylift`` command line. Each subcommand group lives in its own ``cmd_*.py`` module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that each define ``register(subparsers)``; a module adds its own subcommands and sets
# ``func`` (sync, returning an exit code) on its parsers.
COMMAND_MODULES = (
    "services.cli.cmd_up",
    "services.cli.cmd_run",
    "services.cli.cmd_project",
    "services.cli.cmd_ask",
    "services.cli.cmd_feedback",
    "services.cli.cmd_console",
    "services.cli.cmd_demo",
    "services.cli.cmd_examples",
    "services.cli.cmd_models",
    "services.cli.cmd_bench",
    "services.cli.cmd_status",
    "services.cli.cmd_schemas",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="querylift", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command group not present in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
