"""``gpuvm-operator kube-emulator``: serve the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import yaml

from testbed.faultspec import cli_faults

from .authz import Identity, load_identities
from .faults import Fault
from .server import CrdLoadError, KubeEmulator


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("kube-emulator", help="serve an in-process Kubernetes API emulator over HTTP")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    p.add_argument("--crds", nargs="*", default=[], metavar="PATH", help="CRD YAML files or directories")
    p.add_argument("--watch-history", type=int, default=1000, help="watch events kept per resource for resuming")
    p.add_argument("--bookmark-interval", type=float, default=30.0, help="seconds between watch BOOKMARK events")
    p.add_argument("--rbac", metavar="FILE", default=None,
                   help="turn on bearer-token authentication and RBAC with the identities in this YAML file "
                        "(see testbed/kubeemu/authz.py); without it every request is allowed")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="inject a fault, e.g. 'kind=watch-cut resource=gpuvms p=0.1 seed=7' (repeatable; "
                        "see testbed/kubeemu/faults.py); more can be added at run time with POST /_emu/faults")
    p.set_defaults(func=run)


def _identities(path: str | None) -> list[Identity] | None:
    from controller.cli import CliError

    if path is None:
        return None
    file = Path(path)
    try:
        document = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f"--rbac {path}: cannot read it: {str(e).splitlines()[0]}") from None
    try:
        return load_identities(document, base=file.parent)
    except ValueError as e:
        raise CliError(f"--rbac {path}: {e}") from None


def run(args: argparse.Namespace) -> int:
    from controller.cli import CliError

    identities = _identities(args.rbac)
    faults = cli_faults(args.fault, Fault.parse)
    try:
        emu = KubeEmulator([Path(c) for c in args.crds], host=args.host, port=args.port,
                           watch_history=args.watch_history, bookmark_interval=args.bookmark_interval,
                           identities=identities, faults=faults)
    except CrdLoadError as e:
        raise CliError(str(e)) from None
    try:
        return asyncio.run(_serve(emu))
    except CrdLoadError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None


async def _serve(emu: KubeEmulator) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await emu.start()
    try:
        print(emu.url, flush=True)
        print(f"kube-emulator ready: {emu.url} (kubectl --server={emu.url})", flush=True)
        await stop.wait()
    finally:
        await emu.stop()
    return 0
