"""The ``gpuvm-operator`` command: one entry point, one subcommand per job.

Each subcommand lives next to the code it runs and registers itself through ``add_parser``;
this module only dispatches, so ``gpuvm-operator --help`` stays cheap and complete.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# module path -> it defines add_parser(subparsers) registering one or more subcommands
_SUBCOMMAND_MODULES = (
    "controller.operator",
    "controller.demo",
    "controller.azuresim.cli",
    "controller.kubeemu.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuvm-operator",
        description="Kubernetes operator that switches Azure GPU VMs on and off from GpuVm resources.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as e:
        print(f"gpuvm-operator {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code


class CliError(Exception):
    """A user-facing failure: printed as one readable line, never as a traceback."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
