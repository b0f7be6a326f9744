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
    kind=html op=get status=502                             # a gateway's HTML error page
    kind=truncated op=listAll times=1                       # the JSON body cut short
    kind=empty op=instanceView                              # 200 with an empty body
    kind=redirect op=get status=307 times=2                 # 302/307 to `location` (default: itself)
    kind=no-properties op=get,list,listAll                  # VMs without "properties"
    kind=power-code power=frozen                            # PowerState/frozen: a code no client knows
    kind=lost-answer op=start times=1                       # served, then no answer (accepted or not?)
    kind=timeout op=get delay=3                             # no answer for 3 s, then the connection closes
    kind=chaos p=0.1 seed=42                                # 10 % of all requests: a mix of the usual failures

Keys: ``kind`` (http | throttle | drop | slow | fail | no-power-state | html | truncated | empty |
redirect | no-properties | power-code | lost-answer | timeout | chaos), ``op`` (comma list of
short names: get, instanceView, list, listAll, start, deallocate, powerOff, restart, simulateEviction,
operationStatus, operationResult, tagsGet, tagsPut, tagsPatch, tagsDelete, or groups ``power``,
``read``, ``tags``, ``*``; full names such as ``VirtualMachines.Start`` work too), ``vm``, ``rg``,
``sub`` (glob patterns, case-insensitive), ``status``, ``error`` (ARM error code), ``message``,
``retry-after`` (seconds), ``delay`` (seconds), ``after`` (seconds before a ``fail`` fails),
``times`` (how many matching calls fire; default unlimited), ``p`` (probability 0..1), ``seed``,
``power`` (the power code of ``power-code``), ``location`` (where ``redirect`` sends the client),
``mix`` (what ``chaos`` draws from, comma list of: throttle, 500, 503, timeout, drop, 409,
capacity, no-power-state, lost-answer; default all but lost-answer).

``chaos`` picks, for each request it fires on, one misbehaviour of its mix that fits the
operation (409 and capacity only for power operations, no-power-state only for reads), from its
own seeded random stream: the same requests in the same order misbehave the same way.

When ``kind`` is left out it is inferred: status 429 -> throttle; another status -> http;
an ``error`` on power operations only -> fail; ``delay`` alone -> slow.
"""

from __future__ import annotations

import enum
import fnmatch
import random
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
    HTML = "html"  # a gateway's HTML error page (default 502) instead of ARM's JSON
    TRUNCATED = "truncated"  # the call is served, its JSON body cut in half
    EMPTY = "empty"  # 200 with an empty body; the call is not served
    REDIRECT = "redirect"  # 302 (or `status`) with Location: `location`, default the request's own URL
    NO_PROPERTIES = "no-properties"  # VMs in GET and list answers come without "properties"
    POWER_CODE = "power-code"  # instance views say PowerState/<power> (default "frozen")
    LOST = "lost-answer"  # the call is served, then the connection closes without the answer
    TIMEOUT = "timeout"  # no answer for `delay` seconds (default 5), then the connection closes
    CHAOS = "chaos"  # with probability p, one failure drawn from `mix`


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
# Responses built from the VM's state, which these kinds rewrite (and so apply to by default).
_VM_BODY_OPS = frozenset({OpName.GET, OpName.LIST, OpName.LIST_ALL})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHAOS_MIX = ("throttle", "500", "503", "timeout", "drop", "409", "capacity", "no-power-state")
_CHAOS_CHOICES = (*CHAOS_MIX, "lost-answer")

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
    power: str = "frozen"
    location: str | None = None
    mix: tuple[str, ...] = CHAOS_MIX

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
        if kind in (FaultKind.NO_POWER_STATE, FaultKind.POWER_CODE) and self.operations - READ_OPS:
            raise FaultSpecError(f"a {kind.value} fault applies to get, instanceView, list and listAll only")
        if kind is FaultKind.NO_PROPERTIES and self.operations - _VM_BODY_OPS:
            raise FaultSpecError("a no-properties fault applies to get, list and listAll only")
        if kind is FaultKind.HTML and self.status is not None and not 400 <= self.status <= 599:
            raise FaultSpecError(f"status must be an HTTP error status (400-599), not {self.status}")
        if kind is FaultKind.REDIRECT and self.status is not None and self.status not in _REDIRECT_STATUSES:
            raise FaultSpecError(f"a redirect's status is one of {sorted(_REDIRECT_STATUSES)}, not {self.status}")
        if kind is FaultKind.POWER_CODE and not self.power.strip("/"):
            raise FaultSpecError("power= needs a value (the part after PowerState/)")
        unknown = set(self.mix) - set(_CHAOS_CHOICES)
        if unknown or not self.mix:
            raise FaultSpecError(f"mix: unknown {', '.join(sorted(unknown)) or 'empty list'} (known: {', '.join(_CHAOS_CHOICES)})")
        if kind is FaultKind.CHAOS and self.seed is None:
            raise FaultSpecError("a chaos fault needs seed=<n>: its draws must be replayable")

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
        if self.kind in (FaultKind.NO_POWER_STATE, FaultKind.POWER_CODE):
            return op in READ_OPS
        if self.kind is FaultKind.NO_PROPERTIES:
            return op in _VM_BODY_OPS
        return op is not OpName.UNKNOWN

    def chaos_choice(self, op: OpName, rng: random.Random) -> "Fault":
        """The concrete fault a ``chaos`` fault becomes for one request it fires on."""
        fits = [m for m in self.mix if (m not in ("409", "capacity") or op in POWER_OPS)
                and (m != "capacity" or op is OpName.START) and (m != "no-power-state" or op in READ_OPS)]
        choice = rng.choice(fits or ["500"])
        if choice == "throttle":
            return Fault(FaultKind.THROTTLE, retry_after=self.retry_after if self.retry_after is not None else 1.0, spec=choice)
        if choice in ("500", "503"):
            return Fault(FaultKind.HTTP, status=int(choice), spec=choice)
        if choice == "409":
            return Fault(FaultKind.HTTP, status=409, code="OperationNotAllowed",
                         message="Operation is not allowed since another operation is in progress.", spec=choice)
        if choice == "capacity":
            return Fault(FaultKind.FAIL, code="AllocationFailed", spec=choice)
        kinds = {"timeout": FaultKind.TIMEOUT, "drop": FaultKind.DROP, "no-power-state": FaultKind.NO_POWER_STATE,
                 "lost-answer": FaultKind.LOST}
        return Fault(kinds[choice], delay=self.delay, spec=choice)

    def matches_vm(self, subscription: str | None, resource_group: str | None, name: str | None) -> bool:
        for pattern, value in ((self.subscription_id, subscription), (self.resource_group, resource_group), (self.vm, name)):
            if pattern is not None and (value is None or not fnmatch.fnmatchcase(value.lower(), pattern.lower())):
                return False
        return True

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        """Parse a spec string (see the module docstring); raises :class:`FaultSpecError`."""
        values = parse_pairs(spec, {"kind", "op", "vm", "rg", "sub", "status", "error", "code", "message", "retry-after",
                                    "delay", "after", "times", "p", "seed", "power", "location", "mix"})

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
            raise FaultSpecError(f"cannot tell what the fault does: give kind=… ({', '.join(k.value for k in FaultKind)})")
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
            power=values.get("power", "frozen"),
            location=values.get("location"),
            mix=tuple(m.strip() for m in values["mix"].split(",") if m.strip()) if "mix" in values else CHAOS_MIX,
            spec=spec,
        )


class ArmedFault(Armed):
    """A fault installed in the simulator, as its listing shows it."""

    __slots__ = ("rng", "drawn")
    fault: Fault

    def __init__(self, fault_id: int, fault: Fault) -> None:
        super().__init__(fault_id, fault)
        # chaos: which misbehaviour strikes is drawn from a stream of the spec's own seed
        self.rng = random.Random(fault.seed) if fault.kind is FaultKind.CHAOS else None
        self.drawn: dict[str, int] = {}  # chaos: how often each misbehaviour was drawn

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
            **({"drawn": dict(sorted(self.drawn.items()))} if f.kind is FaultKind.CHAOS else {}),
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
                if f.kind is FaultKind.CHAOS:
                    assert armed.rng is not None
                    terminal = f.chaos_choice(op, armed.rng)
                    armed.drawn[terminal.spec] = armed.drawn.get(terminal.spec, 0) + 1
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
