"""Reaction time: a desiredState patch -> the Azure simulator receives the start request.

Runs the real operator against the emulator and the simulator in this process. Each flip patches
one GpuVm from Deallocated to Running and takes the time from just before the PATCH is sent to
the moment the simulator logged the start request (both on the same monotonic clock), then lets
the VM settle and flips it back. Also measures completion: the simulated operation ends ->
``status.powerState`` says Running.

    python -m bench.reaction [--flips 20] [--gpuvms 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from controller.azuresim import SimulatorConfig, SimVm, ThrottlingConfig, Timings
from controller.sandbox import Sandbox, crd_files, settled, wait_for

ROOT = Path(__file__).resolve().parents[1]
CRDS = crd_files(ROOT / "deploy" / "crds")
SUB = "0b5f8a3c-1d2e-4f60-8a9b-0c1d2e3f4a5b"
RG = "rg-bench"
NS = "bench"
TIMING = ("--resync-interval", "30", "--transition-poll", "2", "--operation-poll", "0.1")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(*, flips: int, gpuvms: int, start_seconds: float = 0.3) -> dict[str, float]:
    vms = [SimVm(subscription_id=SUB, resource_group=RG, name=f"vm-{i:04d}", tags={"gpuvm-managed": "true"}) for i in range(gpuvms)]
    # Throttling off: Azure allows 4 starts per minute per VM (bucket 12), so flipping one VM 20
    # times would measure Azure's limit, not the operator. Retry-After 0.1 s on the operation is
    # what lets completion be learned from the operation itself.
    sim = SimulatorConfig(
        timings=Timings(start=start_seconds, deallocate=start_seconds),
        retry_after=0.1,
        throttling=ThrottlingConfig(enabled=False),
    )
    with tempfile.TemporaryDirectory() as tmp, Sandbox(crds=CRDS, simulator=sim, vms=vms, workdir=Path(tmp), namespace=NS) as world:
        cluster, azure = world.cluster, world.azure
        assert cluster is not None and azure is not None
        world.start_operator(world.operator_flags(subscription=SUB, timing=TIMING))
        for vm in vms:
            cluster.create(vm.name, {"vm": {"resourceGroup": RG, "name": vm.name}, "desiredState": "Deallocated"})
        wait_for(lambda: all(settled(o) for o in cluster.all_objects()), 60 + gpuvms / 10, interval=0.05, what="all GpuVms settled")
        target = vms[0].name
        reactions: list[float] = []
        completions: list[float] = []
        for _ in range(flips):
            starts_before = len(azure.power_requests(target, "start"))
            t0 = time.monotonic()
            cluster.patch_spec(target, {"desiredState": "Running"})
            request = wait_for(lambda: azure.power_requests(target, "start")[starts_before:], 10, interval=0.001)[0]
            reactions.append(request.time - t0)
            # Completion: the simulator says running -> the status says Running.
            wait_for(lambda: azure.power(target) == "running", 10, interval=0.001)
            running_at = time.monotonic()
            wait_for(lambda: cluster.status(target).get("powerState") == "Running", 10, interval=0.002)
            completions.append(time.monotonic() - running_at)
            wait_for(lambda: settled(cluster.get(target) or {"metadata": {}}), 10, interval=0.005)
            cluster.patch_spec(target, {"desiredState": "Deallocated"})
            wait_for(lambda: settled(cluster.get(target) or {"metadata": {}}) and azure.power(target) == "deallocated", 10, interval=0.005)
        overlaps = len(azure.overlaps())
    return {
        "flips": flips,
        "gpuvms": gpuvms,
        "reaction_p50_ms": 1000 * statistics.median(reactions),
        "reaction_p99_ms": 1000 * percentile(reactions, 0.99),
        "reaction_max_ms": 1000 * max(reactions),
        "completion_p50_ms": 1000 * statistics.median(completions),
        "completion_max_ms": 1000 * max(completions),
        "overlaps": overlaps,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--gpuvms", type=int, default=1)
    args = parser.parse_args()
    result = measure(flips=args.flips, gpuvms=args.gpuvms)
    for key, value in result.items():
        print(f"{key:>20}: {value:.1f}" if isinstance(value, float) else f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
