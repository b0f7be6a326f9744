"""What the simulator saw: a bounded request log, counters, and overlapping power operations.

Tests and benchmarks assert on these ("exactly one start per VM", "no power call while another
was in flight"). Everything is bounded or keyed by a small set (operation x status), so
recording costs the same for the millionth request as for the first.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

from .wire import OpName

NO_RESPONSE = 0  # status recorded for a dropped connection


@dataclass(frozen=True)
class RequestRecord:
    time: float  # loop clock (monotonic seconds)
    method: str
    path: str
    operation: str  # e.g. "VirtualMachines.Start"
    vm: str | None  # VM name, for calls on one VM
    status: int  # HTTP status; 0 when the connection was dropped without an answer
    principal: str | None = None


@dataclass(frozen=True)
class Overlap:
    """A power-operation request that arrived while another power operation ran on the same VM."""

    time: float
    subscription_id: str
    resource_group: str
    vm: str
    requested: str  # "start", "deallocate", "hibernate", "powerOff", "restart"
    in_flight: str  # the operation already running
    in_flight_origin: str  # "api" or "out-of-band"
    in_flight_operation_id: str
    status: int  # how the simulator answered the new request


@dataclass(frozen=True)
class OperationRecord:
    """One long-running power operation as the simulator ran it."""

    id: str
    vm: str
    resource_group: str
    action: str  # "start", "deallocate", "hibernate", …
    origin: str  # "api" (a client asked) or "out-of-band"
    start: float  # loop clock, as RequestRecord.time
    end: float | None  # None while it runs
    status: str


@dataclass(frozen=True)
class Unobserved:
    """How long a client's operation went without a request that could tell its state."""

    operation: str  # the operation's id
    vm: str
    action: str
    longest: float  # seconds: the longest stretch between such requests, from the 202 on
    seen_ended_after: float | None  # seconds from its end to the first request that could tell; None: not yet


# The names the simulator records (wire.OpName): an operation's status poll and its result both
# tell its state ("Operations.Get" named neither, so no poll ever counted: only walks did).
_OPERATION_READS = frozenset({OpName.OPERATION_STATUS.value, OpName.OPERATION_RESULT.value})
_TELLING = _OPERATION_READS | frozenset({"VirtualMachines.Get", "VirtualMachines.InstanceView",
                      "VirtualMachines.List", "VirtualMachines.ListAll"})


def _operation_id(path: str) -> str:
    """The operation id in an operation-status path (``…/operations/{id}``), lower-cased."""
    _, _, tail = path.lower().rpartition("/operations/")
    return tail.split("/", 1)[0].split("?", 1)[0]


def _resource_group(path: str) -> str:
    _, _, tail = path.lower().partition("/resourcegroups/")
    return tail.split("/", 1)[0]


def unobserved(operations: list[OperationRecord], requests: list[RequestRecord], *, now: float) -> list[Unobserved]:
    """For every operation a client asked for (origin "api"), the longest time it went unobserved:
    without a successful request that could have told its state — a status poll of it, a GET of
    its VM, or a list page that covers the VM — from the moment it began until the first such
    request after it ended (or until ``now``). Operations older than the request log are left out.

    This is the starvation guard: an operator whose completion reads starve behind other reads
    leaves operations unobserved for minutes (seen at 10,000 GpuVms before the read lanes).

    Cost: the telling requests are indexed once (by operation id, VM, resource group), so each
    operation costs the requests of its own lifetime, not the whole log (the soak runs it over
    hours of requests).
    """
    horizon = min((r.time for r in requests), default=now)
    by_op: dict[str, list[float]] = {}
    by_vm: dict[str, list[float]] = {}
    by_group: dict[str, list[float]] = {}
    walks: list[float] = []
    for r in requests:
        if r.status != 200 or r.operation not in _TELLING:
            continue
        if r.operation in _OPERATION_READS:
            by_op.setdefault(_operation_id(r.path), []).append(r.time)
        elif r.operation == "VirtualMachines.ListAll":
            walks.append(r.time)
        elif r.operation == "VirtualMachines.List":
            by_group.setdefault(_resource_group(r.path), []).append(r.time)
        else:
            by_vm.setdefault((r.vm or "").lower(), []).append(r.time)
    for times in (walks, *by_op.values(), *by_vm.values(), *by_group.values()):
        times.sort()
    out: list[Unobserved] = []
    for op in operations:
        if op.origin != "api" or op.start < horizon:
            continue
        sources = (by_op.get(op.id.lower(), []), by_vm.get(op.vm.lower(), []),
                   by_group.get(op.resource_group.lower(), []), walks)
        times: list[float] = []
        for source in sources:
            for t in source[bisect.bisect_left(source, op.start):]:
                times.append(t)
                if op.end is not None and t >= op.end:
                    break  # the first telling request after the end: later ones add nothing
        times.sort()
        detected = next((s for s in times if op.end is not None and s >= op.end), None)
        points = [op.start, *(s for s in times if detected is None or s <= detected)]
        if detected is None:
            points.append(now)
        longest = max(b - a for a, b in zip(points, points[1:])) if len(points) > 1 else 0.0
        seen = None if detected is None or op.end is None else detected - op.end
        out.append(Unobserved(op.id, op.vm, op.action, longest, seen))
    return out


class Recorder:
    def __init__(self, *, log_size: int) -> None:
        self.log: deque[RequestRecord] = deque(maxlen=log_size)
        self.overlaps: deque[Overlap] = deque(maxlen=log_size)
        self.overlap_total = 0
        self.counters: Counter[tuple[str, int]] = Counter()
        self.total = 0

    def request(self, record: RequestRecord) -> None:
        self.log.append(record)
        self.counters[(record.operation, record.status)] += 1
        self.total += 1

    def since(self, seq: int) -> tuple[list[RequestRecord], int]:
        """The records after the ``seq``-th request ever recorded, and the count so far (the
        ``seq`` to ask with next). Records older than the log's bound are gone: a caller who
        asks with ``seq < total - len(log)`` learns how many it missed from the difference."""
        first = self.total - len(self.log)  # requests recorded before the oldest one kept
        skip = max(0, seq - first)
        return list(itertools.islice(self.log, skip, None)), self.total

    def overlap(self, overlap: Overlap) -> None:
        self.overlaps.append(overlap)
        self.overlap_total += 1

    def reset(self) -> None:
        self.log.clear()
        self.overlaps.clear()
        self.overlap_total = 0
        self.counters.clear()
        self.total = 0

    def counters_json(self) -> list[dict[str, Any]]:
        return [
            {"operation": op, "status": status, "count": n}
            for (op, status), n in sorted(self.counters.items())
        ]


def record_json(record: RequestRecord | Overlap) -> dict[str, Any]:
    return asdict(record)
