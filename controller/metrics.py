"""Prometheus metrics: what platform teams watch, and what the money follows.

One registry per operator instance (tests and the demo run several in one process). Counters
and histograms are updated where things happen; the per-GpuVm series (power state, billed
seconds) are computed at scrape time from the engine's state, so no stale series outlive a
deleted GpuVm.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.power import PowerState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_OPERATION_BUCKETS = (1, 5, 10, 30, 60, 90, 120, 180, 300, 600, 1200)
_INTENT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 180, 300, 600, 1800)


@dataclass(frozen=True)
class GpuVmSample:
    namespace: str
    name: str
    vm: str
    size: str
    power_state: PowerState
    billed_seconds: float
    active_claims: int = 0
    unclaimed_billed_seconds: float | None = None  # desiredState Auto: billed while no live claim needs it


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile = Histogram(
            "gpuvm_reconcile_duration_seconds", "Time of one reconcile step (observe, decide, act, write status)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.azure_requests = Counter(
            "gpuvm_azure_requests_total", "HTTP requests to Azure Resource Manager by operation and status code",
            ["operation", "code"], registry=r,
        )
        self.azure_reads = Counter(
            "gpuvm_azure_reads_total",
            "ARM reads sent, by purpose: walk / busy-walk pages, tags pages, poll, get:<why a VM was read alone>",
            ["purpose"], registry=r,
        )
        self.idle_deallocations = Counter(
            "gpuvm_idle_deallocations_total", "VMs switched off by desiredState Auto because nothing wanted them",
            registry=r,
        )
        self.status_writes = Counter(
            "gpuvm_status_writes_total", "Status writes to the Kubernetes API, by cause (change or repair)",
            ["cause"], registry=r,
        )
        self.throttle_wait = Counter(
            "gpuvm_azure_throttle_wait_seconds_total",
            "Seconds requests waited for the subscription's budget (own pacing and 429 Retry-After)",
            ["kind"], registry=r,
        )
        self.in_flight = Gauge("gpuvm_operations_in_flight", "Power operations in flight", ["action"], registry=r)
        self.operation_duration = Histogram(
            "gpuvm_operation_duration_seconds", "Duration of power operations from request to end",
            ["action", "result"], buckets=_OPERATION_BUCKETS, registry=r,
        )
        self.intent_to_desired = Histogram(
            "gpuvm_intent_to_desired_seconds",
            "From seeing a new desiredState to the VM being in it (Ready for that generation)",
            buckets=_INTENT_BUCKETS, registry=r,
        )
        self.capacity_failures = Counter(
            "gpuvm_capacity_failures_total", "Start failures for lack of capacity or quota, by Azure error code",
            ["code"], registry=r,
        )
        self._server: Any = None

    def watch(self, samples: Callable[[], Iterator[GpuVmSample]]) -> None:
        """Publish per-GpuVm series computed from ``samples`` at each scrape."""
        self.registry.register(_GpuVmCollector(samples))

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's metrics port
        self._server, _ = start_http_server(port, addr=address, registry=self.registry)

    @property
    def serving(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _GpuVmCollector(Collector):
    def __init__(self, samples: Callable[[], Iterator[GpuVmSample]]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Any]:
        power = GaugeMetricFamily(
            "gpuvm_power_state", "1 for the power state each GpuVm's VM is observed in",
            labels=["namespace", "name", "vm", "state"],
        )
        billed = CounterMetricFamily(
            "gpuvm_billed_seconds", "Seconds the VM spent in billed power states (starting to stopped) while observed",
            labels=["namespace", "name", "vm", "size"],
        )
        claims = GaugeMetricFamily(
            "gpuvm_active_claims", "Live GpuVmClaims on each GpuVm", labels=["namespace", "name"],
        )
        unclaimed = CounterMetricFamily(
            "gpuvm_unclaimed_billed_seconds",
            "Seconds a GpuVm in desiredState Auto was billed while no live claim needed it (idle grace, schedule, drift)",
            labels=["namespace", "name", "vm", "size"],
        )
        for s in self._samples():
            power.add_metric([s.namespace, s.name, s.vm, s.power_state.value], 1)
            claims.add_metric([s.namespace, s.name], s.active_claims)
            if s.unclaimed_billed_seconds is not None:
                unclaimed.add_metric([s.namespace, s.name, s.vm, s.size], s.unclaimed_billed_seconds)
            billed.add_metric([s.namespace, s.name, s.vm, s.size], s.billed_seconds)
        yield power
        yield billed
        yield claims
        yield unclaimed


class BillingClock:
    """Accumulates the time a VM spends in billed states, from successive observations."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.total = 0.0
        self._since: float | None = None

    def observe(self, state: PowerState) -> None:
        now = self._clock()
        if self._since is not None:
            self.total += now - self._since
        self._since = now if state.billed else None

    def seconds(self) -> float:
        return self.total + (self._clock() - self._since if self._since is not None else 0.0)


_OPERATION_PATTERNS = [
    (re.compile(r"/operations/[^/?]+$", re.I), "Operations.Get"),
    (re.compile(r"/providers/Microsoft\.Resources/tags/default$", re.I), "Tags.{method}"),
    (re.compile(r"/virtualMachines/[^/]+/(start|deallocate|powerOff|restart)$", re.I), "VirtualMachines.{action}"),
    (re.compile(r"/virtualMachines/[^/]+/instanceView$", re.I), "VirtualMachines.InstanceView"),
    (re.compile(r"/resourceGroups/[^/]+/providers/Microsoft\.Compute/virtualMachines$", re.I), "VirtualMachines.List"),
    (re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Compute/virtualMachines$", re.I), "VirtualMachines.ListAll"),
    (re.compile(r"/virtualMachines/[^/]+$", re.I), "VirtualMachines.Get"),
]


def operation_name(method: str, path: str) -> str:
    """A low-cardinality name for an ARM request: no ids, names or query strings."""
    for pattern, name in _OPERATION_PATTERNS:
        match = pattern.search(path)
        if match:
            action = match.group(1) if match.groups() else ""
            return name.format(method=method.capitalize(), action=action[:1].upper() + action[1:])
    return f"Other.{method.capitalize()}"
