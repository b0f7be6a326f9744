"""The ``gpuvm-operator`` command: one entry point, one subcommand per job.

Each subcommand lives next to the code it runs and registers itself through ``add_parser``;
this module only dispatches, so ``gpuvm-operator --help`` stays cheap and complete.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

# subcommand -> the module defining add_parser(subparsers) for it. Only the module of the
# subcommand being run is imported: `run` must not carry what other subcommands need.
_SUBCOMMANDS = {
    "run": "controller.operator",
    "check": "controller.check",
    "claim": "controller.claimer",
}
# Subcommands that live outside the operator package (the test bed: `demo`, `azure-sim`,
# `kube-emulator`) register here as entry points, so the operator never imports them and an
# installation without them (the container image) simply does not offer them.
PLUGIN_GROUP = "gpuvm_operator.commands"


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=PLUGIN_GROUP) if ep.name not in _SUBCOMMANDS}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit status 2): `run`'s full usage is forty lines
    and would bury the one that says what is wrong."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(
    command: str | None = None, *, prog: str = "gpuvm-operator", commands: dict[str, str] | None = None
) -> argparse.ArgumentParser:
    """The parser for ``command`` alone, or for every subcommand (help, typos)."""
    parser = _Parser(
        prog=prog,
        description="Kubernetes operator that switches Azure GPU VMs on and off from GpuVm resources.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    known = commands if commands is not None else {**_SUBCOMMANDS, **_plugins()}
    for name, module_name in known.items():
        if command in known and name != command:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if name in _SUBCOMMANDS or not module_name.startswith(str(e.name or "")):
                raise
            continue  # a plugin whose package is not installed here (the image has no test bed)
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "gpuvm-operator", commands: dict[str, str] | None = None) -> int:
    """``commands`` narrows the subcommands offered (the kubectl plugin offers only ``claim``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is passed through untouched (``claim GPUVM -- COMMAND ...``):
    # argparse would otherwise read the COMMAND's own options as ours.
    trailing: list[str] | None = None
    if "--" in argv:
        split = argv.index("--")
        argv, trailing = argv[:split], argv[split + 1 :]
    parser = build_parser(argv[0] if argv else None, prog=prog, commands=commands)
    args = parser.parse_args(argv)
    if trailing is not None and not getattr(args, "takes_trailing", False):
        parser.error(f"{args.command} takes no arguments after --")
    args.trailing = trailing
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as e:
        print(f"{prog} {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code


class CliError(Exception):
    """A user-facing failure: printed as one readable line, never as a traceback."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
