"""Fault injection: what goes wrong, on which calls, how often.

A :class:`Fault` is a frozen value; the simulator keeps its own countdown and random stream
per fault, so the same faults with the same seeds misbehave the same way on every run.

Spec strings (CLI ``--fault``, admin endpoint ``POST /_sim/faults``) are whitespace-separated
``key=value`` pairs, shell-quoted where a value has spaces::

    op=start vm=gpu-1 error=AllocationFailed times=2        # start is accepted, then fails (LRO)
    kind=throttle op=get,instanceView retry-after=2 p=0.5 seed=7
    kind=http op=listAll status=503 times=1
    kind=drop op=get times=1
    kind=slow op=* delay=1.5
    kind=no-power-state vm=gpu-* times=3
    op=start error=OperationNotAllowed                      # the quota failure
    op=start vm=spot-1 error=SpotPriceGreaterThanProvidedMaxPrice   # Spot: price above max
    op=start vm=spot-1 error=SkuNotAvailable times=3         # Spot: no Spot capacity
    op=start vm=hib-1 error=OverconstrainedResumeFromHibernatedStateAllocationRequest  # resume

Keys: ``kind`` (http | throttle | drop | slow | fail | no-power-state), ``op`` (comma list of
short names: get, instanceView, list, listAll, start, deallocate, powerOff, restart, simulateEviction,
operationStatus, operationResult, tagsGet, tagsPut, tagsPatch, tagsDelete, or groups ``power``,
``read``, ``tags``, ``*``; full names such as ``VirtualMachines.Start`` work too), ``vm``, ``rg``,
``sub`` (glob patterns, case-insensitive), ``status``, ``error`` (ARM error code), ``message``,
``retry-after`` (seconds), ``delay`` (seconds), ``after`` (seconds before a ``fail`` fails),
``times`` (how many matching calls fire; default unlimited), ``p`` (probability 0..1), ``seed``.

When ``kind`` is left out it is inferred: status 429 -> throttle; another status -> http;
an ``error`` on power operations only -> fail; ``delay`` alone -> slow.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from testbed.faultspec import Armed, FaultSpecError, Firing, number, parse_pairs

from .wire import POWER_OPS, READ_OPS, TAG_OPS, OpName


class FaultKind(str, enum.Enum):
    HTTP = "http"  # answer an ARM error (status + code) instead of serving the call
    THROTTLE = "throttle"  # answer 429 with Retry-After
    DROP = "drop"  # close the connection without answering
    SLOW = "slow"  # wait `delay` seconds, then serve normally (or apply another fault)
    FAIL = "fail"  # accept the power operation (202), then fail the operation with `error`
    NO_POWER_STATE = "no-power-state"  # instance views leave out the PowerState/… status


_GROUPS: dict[str, frozenset[OpName]] = {
    "power": POWER_OPS,
    "read": READ_OPS,
    "tags": TAG_OPS,
    "*": frozenset(OpName) - {OpName.UNKNOWN},
}
_BY_NAME: dict[str, frozenset[OpName]] = {
    **{op.short.lower(): frozenset({op}) for op in OpName if op is not OpName.UNKNOWN},
    **{op.value.lower(): frozenset({op}) for op in OpName if op is not OpName.UNKNOWN},
    **_GROUPS,
}

_STATUS_CODES = {
    400: "BadRequest", 403: "AuthorizationFailed", 404: "NotFound", 408: "RequestTimeout", 409: "Conflict",
    429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
_CODE_STATUS = {
    "InternalServerError": 500, "InternalExecutionError": 500, "BadGateway": 502, "ServiceUnavailable": 503,
    "GatewayTimeout": 504, "Conflict": 409, "OperationNotAllowed": 409, "AuthorizationFailed": 403,
    "ResourceNotFound": 404, "NotFound": 404, "BadRequest": 400, "TooManyRequests": 429,
    # Capacity and price refusals of a start, when injected as an immediate answer (kind=http)
    # rather than a failed operation: 409 as other refusals (Azure's status here is unverified).
    "SkuNotAvailable": 409, "SpotPriceGreaterThanProvidedMaxPrice": 409,
    "OverconstrainedResumeFromHibernatedStateAllocationRequest": 409,
}


def parse_ops(text: str) -> frozenset[OpName]:
    ops: set[OpName] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        found = _BY_NAME.get(part.lower())
        if found is None:
            known = ", ".join(sorted({op.short for op in OpName if op is not OpName.UNKNOWN} | set(_GROUPS)))
            raise FaultSpecError(f"unknown operation {part!r} (known: {known})")
        ops |= found
    return frozenset(ops)


@dataclass(frozen=True)
class Fault(Firing):
    """One injected misbehaviour. Empty ``operations`` means every operation the kind applies to."""

    kind: FaultKind
    operations: frozenset[OpName] = frozenset()
    vm: str | None = None
    resource_group: str | None = None
    subscription_id: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    after: float | None = None

    def __post_init__(self) -> None:
        kind = FaultKind(self.kind)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "operations", frozenset(OpName(o) for o in self.operations))
        self.check_firing()
        if self.delay < 0 or (self.retry_after is not None and self.retry_after < 0) or (self.after is not None and self.after < 0):
            raise FaultSpecError("delay, retry-after and after must be >= 0 seconds")
        if kind is FaultKind.FAIL:
            if not self.code:
                raise FaultSpecError("a fail fault needs error=<code> (e.g. AllocationFailed)")
            if self.operations - POWER_OPS:
                raise FaultSpecError("a fail fault applies to power operations only (start, deallocate, powerOff, restart)")
        if kind is FaultKind.HTTP:
            if self.status is None and self.code is None:
                raise FaultSpecError("an http fault needs status=<code> or error=<ArmErrorCode>")
            if self.status is not None and not 400 <= self.status <= 599:
                raise FaultSpecError(f"status must be an HTTP error status (400-599), not {self.status}")
        if kind is FaultKind.SLOW and self.delay <= 0:
            raise FaultSpecError("a slow fault needs delay=<seconds> > 0")
        if kind is FaultKind.NO_POWER_STATE and self.operations - READ_OPS:
            raise FaultSpecError("a no-power-state fault applies to get, instanceView, list and listAll only")

    @property
    def http_status(self) -> int:
        if self.kind is FaultKind.THROTTLE:
            return 429
        return self.status or _CODE_STATUS.get(self.code or "", 500)

    @property
    def http_code(self) -> str:
        if self.code:
            return self.code
        if self.kind is FaultKind.THROTTLE:
            return "OperationNotAllowed"
        return _STATUS_CODES.get(self.http_status, "InternalServerError")

    def applies_to(self, op: OpName) -> bool:
        if self.operations:
            return op in self.operations
        if self.kind is FaultKind.FAIL:
            return op in POWER_OPS
        if self.kind is FaultKind.NO_POWER_STATE:
            return op in READ_OPS
        return op is not OpName.UNKNOWN

    def matches_vm(self, subscription: str | None, resource_group: str | None, name: str | None) -> bool:
        for pattern, value in ((self.subscription_id, subscription), (self.resource_group, resource_group), (self.vm, name)):
            if pattern is not None and (value is None or not fnmatch.fnmatchcase(value.lower(), pattern.lower())):
                return False
        return True

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        """Parse a spec string (see the module docstring); raises :class:`FaultSpecError`."""
        values = parse_pairs(spec, {"kind", "op", "vm", "rg", "sub", "status", "error", "code", "message", "retry-after",
                                    "delay", "after", "times", "p", "seed"})

        ops = parse_ops(values["op"]) if "op" in values else frozenset()
        status = number(values, "status", int)
        code = values.get("error") or values.get("code")
        delay = number(values, "delay") or 0.0
        if "kind" in values:
            try:
                kind = FaultKind(values["kind"].lower())
            except ValueError:
                raise FaultSpecError(
                    f"unknown kind {values['kind']!r} (known: {', '.join(k.value for k in FaultKind)})"
                ) from None
        elif status == 429:
            kind = FaultKind.THROTTLE
        elif status is not None:
            kind = FaultKind.HTTP
        elif code and ops and ops <= POWER_OPS:
            kind = FaultKind.FAIL
        elif code:
            kind = FaultKind.HTTP
        elif delay:
            kind = FaultKind.SLOW
        else:
            raise FaultSpecError("cannot tell what the fault does: give kind=… (http, throttle, drop, slow, fail, no-power-state)")
        return cls(
            kind=kind,
            operations=ops,
            vm=values.get("vm"),
            resource_group=values.get("rg"),
            subscription_id=values.get("sub"),
            status=status,  # type: ignore[arg-type]
            code=code,
            message=values.get("message"),
            retry_after=number(values, "retry-after"),  # type: ignore[arg-type]
            delay=delay,  # type: ignore[arg-type]
            after=number(values, "after"),  # type: ignore[arg-type]
            times=number(values, "times", int),  # type: ignore[arg-type]
            probability=1.0 if "p" not in values else number(values, "p"),  # type: ignore[arg-type]
            seed=number(values, "seed", int),  # type: ignore[arg-type]
            spec=spec,
        )


class ArmedFault(Armed):
    """A fault installed in the simulator, as its listing shows it."""

    fault: Fault

    def as_dict(self) -> dict[str, object]:
        f = self.fault
        return {
            "id": self.id,
            "kind": f.kind.value,
            "operations": sorted(op.short for op in f.operations),
            "vm": f.vm,
            "resourceGroup": f.resource_group,
            "subscriptionId": f.subscription_id,
            "status": f.status,
            "code": f.code,
            "times": f.times,
            "remaining": self.trigger.remaining,
            "fired": self.trigger.fired,
            "probability": f.probability,
            "spec": f.spec,
        }


class FaultSet:
    """The installed faults, in the order they were added (the first matching terminal fault wins)."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults: dict[int, ArmedFault] = {}
        self._next_id = 1
        for fault in faults:
            self.add(fault)

    def add(self, fault: Fault) -> int:
        fault_id = self._next_id
        self._next_id += 1
        self._faults[fault_id] = ArmedFault(fault_id, fault)
        return fault_id

    def remove(self, fault_id: int) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        self._faults.clear()

    def __bool__(self) -> bool:
        return bool(self._faults)

    def listing(self) -> list[dict[str, object]]:
        return [armed.as_dict() for armed in self._faults.values()]

    def request_faults(
        self, op: OpName, subscription: str | None, resource_group: str | None, name: str | None
    ) -> tuple[float, Fault | None]:
        """For one request: the total injected delay, and the terminal fault to apply (if any).

        ``no-power-state`` faults are not request faults; see :meth:`hide_power_state`.
        """
        delay = 0.0
        terminal: Fault | None = None
        for armed in self._faults.values():
            f = armed.fault
            if f.kind is FaultKind.NO_POWER_STATE or not f.applies_to(op):
                continue
            if not f.matches_vm(subscription, resource_group, name):
                continue
            if f.kind is FaultKind.SLOW:
                if armed.fire():
                    delay += f.delay
            elif terminal is None and armed.fire():
                terminal = f
        return delay, terminal

    def hide_power_state(self, op: OpName, subscription: str, resource_group: str, name: str) -> bool:
        for armed in self._faults.values():
            f = armed.fault
            if f.kind is FaultKind.NO_POWER_STATE and f.applies_to(op) and f.matches_vm(subscription, resource_group, name):
                if armed.fire():
                    return True
        return False

    def has_power_state_faults(self) -> bool:
        return any(a.fault.kind is FaultKind.NO_POWER_STATE for a in self._faults.values())
