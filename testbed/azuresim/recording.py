"""What the simulator saw: a bounded request log, counters, and overlapping power operations.

Tests and benchmarks assert on these ("exactly one start per VM", "no power call while another
was in flight"). Everything is bounded or keyed by a small set (operation x status), so
recording costs the same for the millionth request as for the first.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

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
