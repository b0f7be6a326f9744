"""The ``gpuvm-operator`` command: one entry point, one subcommand per job.

Each subcommand lives next to the code it runs and registers itself through ``add_parser``;
this module only dispatches, so ``gpuvm-operator --help`` stays cheap and complete.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> the module defining add_parser(subparsers) for it. Only the module of the
# subcommand being run is imported: `run` must not carry the simulator, the emulator and their
# dependencies (about 10 MiB of resident memory in a long-lived pod).
_SUBCOMMANDS = {
    "run": "controller.operator",
    "demo": "controller.demo",
    "azure-sim": "controller.azuresim.cli",
    "kube-emulator": "controller.kubeemu.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone, or for every subcommand (help, typos)."""
    parser = argparse.ArgumentParser(
        prog="gpuvm-operator",
        description="Kubernetes operator that switches Azure GPU VMs on and off from GpuVm resources.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    modules = [_SUBCOMMANDS[command]] if command in _SUBCOMMANDS else list(_SUBCOMMANDS.values())
    for module_name in modules:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
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
