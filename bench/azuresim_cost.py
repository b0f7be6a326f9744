"""Per-request cost of the Azure simulator through the real aio SDK: does it grow with requests served?

For each call (get, instance_view, one list_all page of every VM, start POST) it sends 1,000
requests one after another and compares the latency of requests 1-100 with requests 901-1000.
The simulator runs in its own thread and loop (as in tests and the demo), with 1,000 VMs,
throttling off (the per-VM buckets would otherwise answer 429) and long transitions so every
start stays in flight.

    python bench/azuresim_cost.py [--vms 1000] [--requests 1000] [--page-size 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.core.exceptions import ResourceExistsError  # noqa: E402
from azure.mgmt.compute.aio import ComputeManagementClient  # noqa: E402

from testbed.azuresim import (  # noqa: E402
    AsyncStaticTokenCredential,
    AzureComputeSimulator,
    SimulatorConfig,
    SimVm,
    ThrottlingConfig,
    Timings,
)
from testbed.serving import ServerThread  # noqa: E402

SUB = "00000000-0000-0000-0000-00000000be00"
RG = "bench"


async def _measure(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    latencies = []
    for i in range(n):
        began = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - began)
    return latencies


def _row(name: str, latencies: list[float]) -> str:
    def p50_p95(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values)
        return 1000 * statistics.median(ordered), 1000 * ordered[int(0.95 * len(ordered)) - 1]

    (f50, f95), (l50, l95) = p50_p95(latencies[:100]), p50_p95(latencies[-100:])
    return f"{name:<16} {f50:>9.2f} {f95:>9.2f} {l50:>9.2f} {l95:>9.2f} {l50 / f50:>8.2f}x"


async def _run(args: argparse.Namespace, thread: ServerThread, sim: AzureComputeSimulator) -> None:
    n = args.requests
    async with ComputeManagementClient(
        AsyncStaticTokenCredential(sim.token), SUB, base_url=sim.endpoint, connection_verify=sim.ca_file,
        credential_scopes=["https://management.azure.com/.default"],
    ) as client:
        vms = client.virtual_machines

        async def list_page(_: int) -> object:
            async for page in vms.list_all(status_only="true").by_page():
                return [v async for v in page]
            return None

        async def start(i: int) -> object:
            try:
                return await vms.begin_start(RG, f"vm-{i % args.vms:04d}", polling=False)
            except ResourceExistsError:  # fewer VMs than requests: a VM already starting answers 409
                return None

        calls: list[tuple[str, Callable[[int], Awaitable[object]]]] = [
            ("get", lambda i: vms.get(RG, f"vm-{i % args.vms:04d}")),
            ("instance_view", lambda i: vms.instance_view(RG, f"vm-{i % args.vms:04d}")),
            ("list_all page", list_page),
            ("start POST", start),
        ]
        await vms.get(RG, "vm-0000")  # warm the connection pool and TLS session
        print(f"{args.vms} VMs, page size {args.page_size}, {n} sequential requests per call; latency in ms\n")
        print(f"{'call':<16} {'1-100 p50':>9} {'p95':>9} {f'{n - 99}-{n} p50':>9} {'p95':>9} {'growth':>9}")
        for name, call in calls:
            print(_row(name, await _measure(n, call)), flush=True)
    total = thread.run_sync(lambda: sum(sim.counters().values()))
    print(f"\nrequests served: {total}; log entries kept: {len(thread.run_sync(sim.request_log))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    if args.requests < 200:
        parser.error("--requests must be >= 200 (two windows of 100)")
    vms = [SimVm(subscription_id=SUB, resource_group=RG, name=f"vm-{i:04d}", tags={"bench": "yes"}) for i in range(args.vms)]
    config = SimulatorConfig(
        throttling=ThrottlingConfig(enabled=False), page_size=args.page_size,
        timings=Timings(start=3600, deallocate=3600, power_off=3600, restart=3600, hibernate=3600),
    )
    sim = AzureComputeSimulator(config, vms)
    with ServerThread(sim, name="azuresim-bench") as thread:
        asyncio.run(_run(args, thread, sim))


if __name__ == "__main__":
    main()
