"""A benchmark world: simulated VMs, the GpuVms naming them, and the processes serving both.

A ``Fleet`` is a group of VMs of one subscription and resource group together with one GpuVm
per VM (same name) in one namespace. The world writes the simulator's VM file from its fleets,
starts the emulator, the simulator(s) and the operator(s) as separate processes, creates the
GpuVms and waits, through one watch, for them to settle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.clients import Key, KubeApi, SimAdmin, Tracker, Watcher, converged, gather_limited, settled
from bench.procs import (
    Emulator,
    Operator,
    Processes,
    RealKube,
    Simulator,
    start_emulator,
    start_operator,
    start_real_kube,
    start_simulator,
)
from testbed.azuresim.model import vm_resource_id

ROOT = Path(__file__).resolve().parents[1]
CRDS = sorted((ROOT / "deploy" / "crds").glob("*.gpuvm.dev.yaml"))  # the operator waits for every CRD it ships
MANAGED = {"gpuvm-managed": "true"}


def subscription_id(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


@dataclass(frozen=True)
class Fleet:
    subscription: str
    resource_group: str
    namespace: str
    prefix: str
    count: int
    timings: Mapping[str, float] | None = None  # per-VM simulated transition seconds
    power_state: str = "deallocated"

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}-{i:04d}" for i in range(1, self.count + 1)]

    @property
    def keys(self) -> list[Key]:
        return [(self.namespace, name) for name in self.names]

    def resource_id(self, name: str) -> str:
        return vm_resource_id(self.subscription, self.resource_group, name)


def manifest_metadata(fleet: Fleet, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations of the kind a platform team puts on a GpuVm (what objects weigh on a cluster)."""
    labels = {
        "app.kubernetes.io/name": "gpuvm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "ml-platform",
        "app.kubernetes.io/managed-by": "kubectl",
        "team": fleet.namespace,
        "cost-center": "cc-4711",
        "gpu.sku": "a100-80gb",
    }
    annotations = {
        "gpuvm.dev/owner": f"{fleet.namespace}-leads@example.com",
        "gpuvm.dev/description": f"Training VM {name} of team {fleet.namespace}: switched on for jobs, off otherwise.",
        "gpuvm.dev/runbook": "https://wiki.example.com/ml-platform/gpuvm",
    }
    return labels, annotations


def write_vm_file(path: Path, fleets: Sequence[Fleet]) -> Path:
    vms: list[dict[str, Any]] = []
    for f in fleets:
        item: dict[str, Any] = {"name": f"{f.prefix}-{{i:04d}}", "count": f.count, "subscription_id": f.subscription,
                                "resource_group": f.resource_group, "power_state": f.power_state}
        if f.timings:
            item["timings"] = dict(f.timings)
        vms.append(item)
    document = {"defaults": {"location": "eastus", "size": "Standard_NC24ads_A100_v4", "tags": MANAGED}, "vms": vms}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Side:
    """One simulator and the operator driving it."""

    simulator: Simulator
    admin: SimAdmin
    operator: Operator | None = None


@dataclass
class World:
    procs: Processes
    emulator: Emulator | RealKube  # the Kubernetes side: the emulator, or the real control plane
    api: KubeApi
    watcher: Watcher
    sides: dict[str, Side] = field(default_factory=dict)
    closed: bool = False

    @classmethod
    async def start(cls, procs: Processes, *, name: str = "kube-emulator", opened: list["World"] | None = None,
                    real: bool = False) -> "World":
        """Start the emulator (``real``: the real control plane, from ``$GPUVM_KUBE_ASSETS``) and
        watch it; ``opened`` collects worlds for whoever must close them."""
        emulator = (await asyncio.to_thread(start_real_kube, procs, crds=CRDS, name=name) if real
                    else start_emulator(procs, crds=CRDS, name=name))
        api = KubeApi(emulator.url, ssl_context=emulator.ssl_context)
        world = cls(procs, emulator, api, Watcher(api))
        if opened is not None:
            opened.append(world)
        await world.watcher.start()
        return world

    def add_simulator(self, side: str, fleets: Sequence[Fleet], *, flags: Sequence[str] = (),
                      limits: Sequence[str] = (), log_size: int | None = None) -> Side:
        vms_file = write_vm_file(self.procs.workdir / f"{side}-vms.yaml", fleets)
        sim = start_simulator(self.procs, vms_file=vms_file, name=f"azure-sim-{side}", flags=flags, limits=limits, log_size=log_size)
        self.sides[side] = Side(sim, SimAdmin(sim.endpoint, sim.ca_file, sim.token))
        return self.sides[side]

    def add_operator(self, side: str, *, subscription: str, flags: Sequence[str] = (),
                     simulator_of: str | None = None) -> Operator:
        """``gpuvm-operator run`` for ``side``'s simulator (or, as a side of its own, another side's)."""
        if simulator_of is not None:
            shared = self.sides[simulator_of]
            self.sides[side] = Side(shared.simulator, shared.admin)
        s = self.sides[side]
        s.operator = start_operator(self.procs, emulator=self.emulator, simulator=s.simulator, subscription=subscription,
                                    flags=flags, name=f"operator-{side}")
        return s.operator

    def stop_operator(self, side: str) -> None:
        s = self.sides[side]
        if s.operator is not None:
            self.procs.stop(s.operator.proc)
            s.operator = None

    async def create(self, fleets: Iterable[Fleet], *, desired: str = "Deallocated", parallel: int = 16,
                     skip: Iterable[Key] = ()) -> None:
        """One GpuVm per VM of each fleet (except ``skip``), a few clients at a time, each created as
        ``kubectl apply`` creates it, so the operator reads objects of a real cluster's size."""
        fleets, skip = list(fleets), set(skip)
        for namespace in sorted({f.namespace for f in fleets}):
            await self.api.create_namespace(namespace)

        async def one(f: Fleet, n: str) -> None:
            labels, annotations = manifest_metadata(f, n)
            await self.api.apply(f.namespace, n, {"vm": {"resourceId": f.resource_id(n)}, "desiredState": desired},
                                 labels=labels, annotations=annotations)

        await gather_limited([(lambda f=f, n=n: one(f, n)) for f in fleets for n in f.names if (f.namespace, n) not in skip],
                             parallel)

    async def flip(self, fleet_keys: Sequence[Key], desired: str, *, parallel: int = 32) -> tuple[float, float]:
        """Patch ``desiredState`` of every GpuVm (a fleet of clients at once); (first, last) patch time."""
        began = time.monotonic()
        await gather_limited([(lambda k=k: self.api.patch_spec(k[0], k[1], {"desiredState": desired})) for k in fleet_keys], parallel)
        return began, time.monotonic()

    def tracker(self, keys: Iterable[Key], power: str | None = None) -> Tracker:
        keys = set(keys)
        return self.watcher.track((lambda o: converged(o, power)) if power else settled, keys)

    async def settle(self, keys: Sequence[Key], *, power: str | None = None, timeout: float) -> float:
        """Wait until every GpuVm of ``keys`` is Ready for its generation (and in ``power``)."""
        tracker = self.tracker(keys, power)
        try:
            return await self.watcher.wait(lambda: len(tracker.now) == len(keys), timeout,
                                           f"{len(keys)} GpuVms settled{f' {power}' if power else ''} "
                                           f"(now {len(tracker.now)})")
        finally:
            self.watcher.untrack(tracker)

    @property
    def real(self) -> bool:
        return isinstance(self.emulator, RealKube)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.watcher.stop()
        await self.api.close()
        for admin in {id(side.admin): side.admin for side in self.sides.values()}.values():
            await admin.close()
        if isinstance(self.emulator, RealKube):
            await asyncio.to_thread(self.emulator.stop, self.procs)
