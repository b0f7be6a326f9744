"""The approach gpuvm-operator replaces, as a baseline: one queue message per VM, handled in turn.

Our own rendering of the queue-triggered Azure Function (see the README's "Why"): for each
message, read the VM with its instance view, take ``statuses[1]`` as the power state, toggle it
(running -> deallocate, deallocated/stopped -> start) and block on the operation's result
before taking the next message. It uses the synchronous ``azure-mgmt-compute`` client, as the
Function does, against the simulator. What it does not copy is ``except Exception: log``: a
failure here is counted and reported, because a benchmark must not hide one.

    python -m bench.script_baseline --endpoint URL --ca-file PEM --token-file F \\
        --subscription SUB --resource-group RG VM [VM ...]

Prints one JSON object: how long the whole queue took and each message's outcome.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from azure.mgmt.compute import ComputeManagementClient

from controller.static_token import StaticTokenCredential


@dataclass
class Outcome:
    vm: str
    seen: str  # statuses[1].display_status as read
    action: str  # "start", "deallocate" or "none"
    seconds: float
    error: str | None = None


def handle(client: ComputeManagementClient, resource_group: str, vm: str, *, timeout: float) -> Outcome:
    """One queue message: read, toggle, wait for the end. Never longer than ``timeout`` seconds."""
    began = time.monotonic()
    machine = client.virtual_machines.get(resource_group, vm, expand="instanceView")
    seen = machine.instance_view.statuses[1].display_status  # the Function's assumption: [1] is the power state
    if seen == "VM running":
        action, poller = "deallocate", client.virtual_machines.begin_deallocate(resource_group, vm)
    elif seen in ("VM deallocated", "VM stopped"):
        action, poller = "start", client.virtual_machines.begin_start(resource_group, vm)
    else:
        return Outcome(vm, seen, "none", time.monotonic() - began)
    poller.result(timeout=max(0.0, timeout - (time.monotonic() - began)))
    if not poller.done():
        return Outcome(vm, seen, action, time.monotonic() - began, error=f"not finished after {timeout:g} s")
    return Outcome(vm, seen, action, time.monotonic() - began)


def run(*, endpoint: str, ca_file: str, token: str, subscription: str, resource_group: str,
        vms: Sequence[str], timeout: float) -> dict[str, object]:
    client = ComputeManagementClient(
        StaticTokenCredential(token), subscription, base_url=endpoint, connection_verify=ca_file,
        credential_scopes=[f"{endpoint}/.default"],
    )
    outcomes: list[Outcome] = []
    with client:
        began = time.monotonic()
        for vm in vms:  # the queue: every message is there at `began`, one worker takes them in turn
            try:
                outcomes.append(handle(client, resource_group, vm, timeout=timeout))
            except Exception as e:  # noqa: BLE001 - recorded and reported, unlike the original
                outcomes.append(Outcome(vm, "", "error", 0.0, error=f"{type(e).__name__}: {e}"[:300]))
        ended = time.monotonic()
    return {
        "messages": len(vms),
        "began": began,
        "ended": ended,
        "seconds": ended - began,
        "errors": sum(1 for o in outcomes if o.error),
        "cpu_seconds": time.process_time(),
        "outcomes": [asdict(o) for o in outcomes],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.script_baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--resource-group", required=True)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one message may take at most")
    parser.add_argument("vms", nargs="+")
    args = parser.parse_args(argv)
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    result = run(endpoint=args.endpoint, ca_file=args.ca_file, token=token, subscription=args.subscription,
                 resource_group=args.resource_group, vms=args.vms, timeout=args.timeout)
    json.dump(result, sys.stdout)
    print()
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
