"""``gpuvm-operator azure-sim``: serve the Azure Compute simulator until SIGINT/SIGTERM.

Prints the endpoint, the CA file to trust and the bearer token it accepts, and how to point
``gpuvm-operator run`` at it. Bad input (VM file, fault spec, port) ends with one readable line
and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
from dataclasses import replace
from typing import Any

from testbed.faultspec import cli_faults

from .config import SimulatorConfig
from .faults import Fault
from .model import SimVm, Timings
from .server import AzureComputeSimulator
from .throttling import DEFAULT_LIMITS, BucketLimit, ThrottlingConfig
from .vmfile import VmFileError, load_vms_yaml

TOKEN_ENV = "GPUVM_SIMULATOR_TOKEN"
_TIMING_FLAGS = ("start", "deallocate", "power_off", "restart", "hibernate")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "azure-sim",
        help="serve a simulated Azure Compute API (ARM over HTTPS) for the operator and the demo",
        description=(
            "Serve simulated Azure VMs to the unmodified Azure SDK. Faults use the spec syntax "
            "'op=start vm=gpu-1 error=AllocationFailed times=2' (see testbed/azuresim/faults.py)."
        ),
    )
    parser.add_argument("--vms", required=True, metavar="FILE", help="YAML file with the VMs (see deploy/examples/azure-sim-vms.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC", help="inject a fault (repeatable)")
    parser.add_argument("--page-size", type=int, default=1000, metavar="N", help="VMs per list page (default 1000)")
    parser.add_argument("--no-throttling", action="store_true", help="turn off ARM and Compute throttling")
    parser.add_argument("--throttle-scale", type=float, default=1.0, metavar="F", help="multiply every throttling bucket and rate by F")
    parser.add_argument("--throttle-limit", action="append", default=[], metavar="POLICY=CAP/RATE",
                        help="override one throttling policy, e.g. UpdateVMResource=1000/1000 (repeatable); "
                             f"policies: {', '.join(DEFAULT_LIMITS)}")
    parser.add_argument("--log-size", type=int, default=10_000, metavar="N", help="requests kept in the request log (default 10000)")
    defaults = Timings()
    for name in _TIMING_FLAGS:
        flag = "--" + name.replace("_", "-") + "-seconds"
        parser.add_argument(flag, type=float, default=getattr(defaults, name), metavar="S",
                            help=f"seconds a {name.replace('_', ' ')} takes (default {getattr(defaults, name):g})")
    parser.add_argument("--retry-after", type=float, default=10.0, metavar="S", help="Retry-After on running operations (default 10)")
    parser.add_argument("--token", default=None, help=f"bearer token to accept (default: ${TOKEN_ENV} if set, else random)")
    parser.add_argument("--ca-file", default=None, metavar="PATH", help="where to write the CA certificate (default: a temp file)")
    parser.set_defaults(func=run)


def build(args: argparse.Namespace) -> tuple[SimulatorConfig, list[SimVm]]:
    """Turn parsed arguments into a config and VMs, or raise CliError with one readable line."""
    from controller.cli import CliError

    try:
        vms = load_vms_yaml(args.vms)
    except VmFileError as e:
        raise CliError(str(e)) from None
    faults = cli_faults(args.fault, Fault.parse)
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port {args.port}: must be between 0 and 65535")
    if args.page_size < 1:
        raise CliError(f"--page-size {args.page_size}: must be >= 1")
    if args.throttle_scale <= 0:
        raise CliError(f"--throttle-scale {args.throttle_scale:g}: must be > 0")
    if args.retry_after < 0:
        raise CliError(f"--retry-after {args.retry_after:g}: must be >= 0")
    if args.log_size < 1:
        raise CliError(f"--log-size {args.log_size}: must be >= 1")
    limits = dict(parse_limit(text) for text in args.throttle_limit)
    try:
        timings = replace(Timings(), **{name: getattr(args, f"{name}_seconds") for name in _TIMING_FLAGS})
    except ValueError as e:
        raise CliError(str(e)) from None
    token = args.token or os.environ.get(TOKEN_ENV) or None
    config = SimulatorConfig(
        host=args.host,
        port=args.port,
        token=token,
        timings=timings,
        retry_after=args.retry_after,
        page_size=args.page_size,
        throttling=ThrottlingConfig(enabled=not args.no_throttling, scale=args.throttle_scale, limits=limits),
        log_size=args.log_size,
        faults=tuple(faults),
        ca_file=args.ca_file,
    )
    return config, vms


def parse_limit(text: str) -> tuple[str, BucketLimit]:
    """'UpdateVMResource=1000/1000' -> ('UpdateVMResource', BucketLimit(1000, 1000)), or CliError."""
    from controller.cli import CliError

    policy, sep, value = text.partition("=")
    capacity, slash, rate = value.partition("/")
    if not sep or not slash or policy not in DEFAULT_LIMITS:
        raise CliError(f"--throttle-limit {text!r}: expected POLICY=CAPACITY/PER_SECOND, POLICY one of {', '.join(DEFAULT_LIMITS)}")
    try:
        return policy, BucketLimit(float(capacity), float(rate))
    except ValueError as e:
        raise CliError(f"--throttle-limit {text!r}: {e}") from None


def run(args: argparse.Namespace) -> int:
    config, vms = build(args)
    return asyncio.run(_serve(config, vms))


async def _serve(config: SimulatorConfig, vms: list[SimVm]) -> int:
    from controller.cli import CliError

    sim = AzureComputeSimulator(config, vms)
    try:
        await sim.start()
    except OSError as e:
        raise CliError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        _announce(sim, vms)
        await stop.wait()
    finally:
        await sim.stop()
    print("azure-sim: stopped", flush=True)
    return 0


def _announce(sim: AzureComputeSimulator, vms: list[SimVm]) -> None:
    groups = {(v.subscription_id.lower(), v.resource_group.lower()) for v in vms}
    subs = {v.subscription_id.lower() for v in vms}
    token = shlex.quote(sim.token)
    ca = shlex.quote(sim.ca_file)
    lines = [
        f"Azure Compute simulator: {len(vms)} VMs in {len(groups)} resource group(s), {len(subs)} subscription(s)",
        f"  endpoint: {sim.endpoint}",
        f"  CA file:  {sim.ca_file}",
        f"  token:    {sim.token}",
        "Point the operator at it:",
        f"  export {TOKEN_ENV}={token}",
        f"  gpuvm-operator run --arm-endpoint {sim.endpoint} --ca-bundle {ca} --credential simulator-token",
        "Inspect or drive it (faults, out-of-band power changes, counters, log, reset) under /_sim/, e.g.:",
        f"  curl --cacert {ca} -H \"Authorization: Bearer ${TOKEN_ENV}\" {sim.endpoint}/_sim/vms",
        "Serving until SIGINT/SIGTERM.",
    ]
    print("\n".join(lines), flush=True)
    sys.stdout.flush()
