"""Where the operator's memory per GpuVm goes: a tracemalloc census of the real operator.

    python -m bench.census [--gpuvms 300] [--json reports/census.json]

The emulator, the simulator and the operator run in this one process (testbed.sandbox), so
tracemalloc sees every allocation; allocations made by the test bed (any traceback through
testbed/) are left out. What the operator holds after N GpuVms settled, minus what it held with
none, is grouped by the module that made it: the deepest frame of the operator's own package,
else of kopf, the Kubernetes client, aiohttp, azure-core, … — so "kopf" means memory kopf keeps
for the operator (per-object watch and handler state), "controller/engine.py" the engine's own
records. Reported per GpuVm, with the biggest allocation sites.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.world import Fleet, manifest_metadata
from testbed.azuresim import SimulatorConfig, SimVm, Timings
from testbed.sandbox import Sandbox, settled, wait_for

ROOT = Path(__file__).resolve().parents[1]
SUB = "00000000-0000-0000-0000-00000000cafe"
RG = "rg-census"
NS = "census"
OWNERS = ("/controller/", "/kopf/", "/kubernetes/", "/aiohttp/", "/azure/", "/urllib3/", "/yarl/", "/multidict/")


def _owner(trace: tracemalloc.Traceback) -> str | None:
    """The module that made an allocation, or None for the test bed's own."""
    owner = None
    for frame in reversed(trace):  # tracemalloc lists the oldest frame first
        name = frame.filename
        if "/testbed/" in name or "/celpy/" in name or "trustme" in name:
            return None
        if owner is None:
            for marker in OWNERS:
                if marker in name:
                    owner = "controller/" + Path(name).name if marker == "/controller/" else marker.strip("/")
                    break
    return owner or "other"


def census(count: int) -> dict[str, Any]:
    vms = [SimVm(subscription_id=SUB, resource_group=RG, name=f"vm-{i:05d}", tags={"gpuvm-managed": "true"})
           for i in range(count)]
    crds = [ROOT / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml"]
    config = SimulatorConfig(timings=Timings(start=0.2, deallocate=0.2), retry_after=0.05)
    with tempfile.TemporaryDirectory() as tmp, Sandbox(crds=crds, simulator=config, vms=vms, workdir=Path(tmp), namespace=NS) as sb:
        assert sb.cluster is not None
        tracemalloc.start(8)
        sb.start_operator(sb.operator_flags(subscription=SUB, timing=("--resync-interval", "5")))
        gc.collect()
        empty = tracemalloc.take_snapshot()
        fleet = Fleet(SUB, RG, NS, "gpuvm", count)
        for i in range(count):  # as kubectl apply creates them (last-applied annotation, managedFields)
            labels, annotations = manifest_metadata(fleet, f"gpuvm-{i:05d}")
            sb.cluster.apply(f"gpuvm-{i:05d}", {"vm": {"resourceGroup": RG, "name": f"vm-{i:05d}"}, "desiredState": "Deallocated"},
                             labels=labels, annotations=annotations)
        started = time.monotonic()
        # Generous: everything runs in one process under tracemalloc, on a machine others use too.
        wait_for(lambda: sum(1 for o in sb.cluster.all_objects() if settled(o)) == count, 120 + count,
                 interval=0.5, what="every GpuVm settled")
        settle = time.monotonic() - started
        time.sleep(15)  # three resync intervals, and kopf's idle per-object workers (5 s) gone: steady state
        gc.collect()
        full = tracemalloc.take_snapshot()
        tracemalloc.stop()
    by_owner: dict[str, int] = defaultdict(int)
    sites: dict[str, int] = defaultdict(int)
    for stat in full.compare_to(empty, "traceback"):
        owner = _owner(stat.traceback)
        if owner is None or stat.size_diff <= 0:
            continue
        by_owner[owner] += stat.size_diff
        frame = next((f for f in reversed(stat.traceback) if any(m in f.filename for m in OWNERS)), stat.traceback[-1])
        sites[f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"] += stat.size_diff
    total = sum(by_owner.values())
    return {
        "gpuvms": count,
        "settle_seconds": round(settle, 1),
        "bytes_total": total,
        "bytes_per_gpuvm": round(total / count),
        "by_owner_per_gpuvm": {k: round(v / count) for k, v in sorted(by_owner.items(), key=lambda kv: -kv[1])},
        "top_sites_per_gpuvm": {k: round(v / count) for k, v in sorted(sites.items(), key=lambda kv: -kv[1])[:15]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.census", description=__doc__.splitlines()[0])
    parser.add_argument("--gpuvms", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = census(args.gpuvms)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
