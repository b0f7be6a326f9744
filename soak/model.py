"""What the intents, as they were applied, want of each VM at any moment — written from the
contract (docs/api.md, the demand design), not from the operator's code, so the soak can judge
the operator instead of agreeing with it.

The driver records every intent the moment the API server (or the simulator) took it; the
simulator records every power operation. From both this module answers, for a VM and a moment:

- ``allowed``: which power operations an operator may request then (``start``, ``deallocate``,
  none). A GpuVm's desired state, or under Auto its demand (live claims, an open schedule
  window, the idle grace), says which; a deleting GpuVm with deletionPolicy Deallocate allows
  the deallocate, Retain nothing; a VM no GpuVm names allows nothing; under driftPolicy Report
  an out-of-band change after the VM had settled at its target allows nothing (hands off),
  except for a Spot VM deallocated while wanted (an eviction is restarted whatever the policy).
- ``expected``: what the GpuVm and its VM must show once everything has settled.

Where the operator cannot know a fact at once, the contract gives it time, and so does the
model: an owner Pod without the claimant label is read once per resync (its claim's liveness is
uncertain that long after it finished: both operations are allowed), and an intent may be acted
on up to ``lag`` seconds after it was superseded (the operator had not seen the change yet:
watch latency, a cut watch resuming). A VM whose opt-in tag was removed may still be acted on for
3 x --tag-refresh-interval (the documented age of the consent the operator acts on).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

START, DEALLOCATE = "start", "deallocate"
TARGET = {"start": "running", "deallocate": "deallocated", "hibernate": "deallocated"}
EPSILON = 1e-6
TIME_GRANULARITY = 1.0  # seconds: Kubernetes timestamps (metav1.Time, RFC 3339) are whole seconds


@dataclass(frozen=True)
class Timing:
    """The operator's clocks the model must allow for (what the soak starts it with)."""

    lag: float = 10.0  # an intent may be acted on this long after it was superseded
    resync: float = 20.0  # --resync-interval: unlabelled owner Pods are read this often
    tag_refresh: float = 10.0  # --tag-refresh-interval: consent is at most 3x this old when acted on
    apply: float = 25.0  # under Report, a VM at its target this long counts as converged (resync + slack)

    @property
    def consent_age(self) -> float:
        return 3 * self.tag_refresh + self.lag


@dataclass(frozen=True)
class Window:
    """A schedule window as written, in UTC (the soak writes timeZone UTC)."""

    days: int  # bitmask, bit 0 = Monday
    start: int  # minutes of the day
    end: int  # minutes of the day; <= start crosses midnight; 1440 = 24:00

    def _on(self, weekday: int) -> bool:
        return bool(self.days >> weekday & 1)

    def open_at(self, when: dt.datetime) -> bool:
        minute = when.hour * 60 + when.minute
        if self.start < self.end:
            return self._on(when.weekday()) and self.start <= minute < self.end
        yesterday = (when.weekday() - 1) % 7
        return (self._on(when.weekday()) and minute >= self.start) or (self._on(yesterday) and minute < self.end)

    def edges(self, first: dt.datetime, last: dt.datetime) -> list[dt.datetime]:
        """Moments in [first, last] at which this window opens or closes (candidates)."""
        out = []
        day = first.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
        while day <= last + dt.timedelta(days=1):
            for minute in (self.start, self.end):
                at = day + dt.timedelta(minutes=minute)
                if first <= at <= last:
                    out.append(at)
            day += dt.timedelta(days=1)
        return out


@dataclass
class SpecChange:
    at: float
    spec: dict[str, Any] | None  # None: the object is gone
    deleting: str | None = None  # the deletionPolicy of an object being deleted
    generation_change: bool = True


@dataclass
class ClaimRecord:
    namespace: str
    name: str
    gpuvm: str
    variant: str
    created: float
    deleted: float | None = None
    lease: float | None = None
    # (sent, renewTime): when the write was sent and the renewTime it wrote, as loop time. The
    # value is whole seconds, so it is up to a second older than the write; a renewal counts only
    # from its write (the operator cannot see it before), but the lease runs from its value.
    renewals: list[tuple[float, float]] = field(default_factory=list)
    expires: float | None = None
    pod: str | None = None
    labelled: bool = True
    finished: float | None = None  # the owner Pod's phase turned Succeeded/Failed
    finished_phase: str | None = None


@dataclass
class VmRecord:
    name: str
    resource_group: str
    initial: str  # running | deallocated
    spot: bool = False
    hibernation: bool = False
    oob: list[tuple[float, str, bool]] = field(default_factory=list)  # (at, action, accepted)
    evictions: list[tuple[float, bool]] = field(default_factory=list)
    deleted: list[list[float | None]] = field(default_factory=list)  # [deleted at, restored at]
    restored_as: list[tuple[float, str]] = field(default_factory=list)  # (at, power)
    untagged: list[list[float | None]] = field(default_factory=list)  # [removed at, restored at]


@dataclass(frozen=True)
class Operation:
    """A power operation as the simulator ran it (times on the shared monotonic clock)."""

    id: str
    vm: str
    action: str  # start | deallocate | hibernate
    origin: str  # api | out-of-band | eviction
    start: float
    end: float | None
    status: str

    @property
    def target(self) -> str:
        return TARGET.get(self.action, "")


def _in(intervals: Iterable[list[float | None]], t: float) -> float | None:
    """The start of the interval containing ``t``, if any."""
    for a, b in intervals:
        if a is not None and a <= t and (b is None or t < b):
            return a
    return None


class World:
    """Everything applied, as it was applied. Times are loop time (``time.monotonic()``); wall
    times (renewTime, expiresAt, schedules) convert with ``wall_offset`` (wall - monotonic)."""

    def __init__(self, *, wall_offset: float, timing: Timing = Timing()) -> None:
        self.wall_offset = wall_offset
        self.timing = timing
        self.gpuvms: dict[tuple[str, str], list[SpecChange]] = {}
        self.claims: dict[tuple[str, str], ClaimRecord] = {}  # the current claim of each name
        self.claims_of: dict[tuple[str, str], list[ClaimRecord]] = {}  # GpuVm -> every claim that named it
        self.vms: dict[str, VmRecord] = {}
        self.operations: dict[str, list[Operation]] = {}  # VM name (lower) -> its operations by start
        self._changes: dict[tuple[str, str], list[float]] = {}
        self._naming: dict[str, list[tuple[float, float, tuple[str, str]]]] | None = None

    # ---- recording -------------------------------------------------------------------------

    def wall(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t + self.wall_offset, dt.timezone.utc)

    def mono(self, when: dt.datetime) -> float:
        return when.timestamp() - self.wall_offset

    def spec_changed(self, key: tuple[str, str], at: float, spec: Mapping[str, Any] | None, *,
                     deleting: str | None = None, generation_change: bool = True) -> None:
        history = self.gpuvms.setdefault(key, [])
        assert not history or history[-1].at <= at, "changes are recorded in order"
        history.append(SpecChange(at, None if spec is None else dict(spec), deleting, generation_change))
        self._changes.pop(key, None)
        self._naming = None

    def claim(self, record: ClaimRecord) -> None:
        self.claims[(record.namespace, record.name)] = record
        self.claims_of.setdefault((record.namespace, record.gpuvm), []).append(record)
        self._changes.pop((record.namespace, record.gpuvm), None)

    def claim_changed(self, record: ClaimRecord) -> None:
        self._changes.pop((record.namespace, record.gpuvm), None)

    def set_operations(self, operations: Iterable[Operation]) -> None:
        self.operations = {}
        for op in sorted(operations, key=lambda o: o.start):
            self.operations.setdefault(op.vm.lower(), []).append(op)

    # ---- specs and owners ------------------------------------------------------------------

    def change_at(self, key: tuple[str, str], t: float) -> SpecChange | None:
        history = self.gpuvms.get(key) or []
        i = bisect.bisect_right(history, t, key=lambda c: c.at)
        return history[i - 1] if i else None

    def spec_at(self, key: tuple[str, str], t: float) -> dict[str, Any] | None:
        change = self.change_at(key, t)
        return None if change is None else change.spec

    def generation_since(self, key: tuple[str, str], t: float) -> float:
        """When the spec in force at ``t`` was written (its generation's start)."""
        since = float("-inf")
        for change in self.gpuvms.get(key) or []:
            if change.at > t:
                break
            if change.generation_change:
                since = change.at
        return since

    def owners(self, vm: str, t: float) -> list[tuple[str, str]]:
        """GpuVms naming ``vm`` at ``t`` (existing, being deleted included)."""
        if self._naming is None:
            naming: dict[str, list[tuple[float, float, tuple[str, str]]]] = {}
            for key, history in self.gpuvms.items():
                for change, following in zip(history, [*history[1:], None]):
                    if change.spec is not None:
                        end = following.at if following is not None else float("inf")
                        naming.setdefault(change.spec["vm"].lower(), []).append((change.at, end, key))
            self._naming = naming
        return [key for a, b, key in self._naming.get(vm.lower(), ()) if a <= t < b]

    # ---- demand ----------------------------------------------------------------------------

    def claim_live(self, c: ClaimRecord, t: float) -> bool | None:
        """Live by the contract; None while the operator may not know yet (an unlabelled owner
        Pod that finished is read once per resync)."""
        if t < c.created or (c.deleted is not None and t >= c.deleted):
            return False
        if c.expires is not None and t >= c.expires:
            return False
        if c.lease is not None:
            renewed = max((value for sent, value in c.renewals if sent <= t + EPSILON), default=None)
            if renewed is None or t >= renewed + c.lease:
                return False
        if c.finished is not None and t >= c.finished:
            if c.labelled or t >= c.finished + self.timing.resync + self.timing.lag:
                return False
            return None
        return True

    def live_claims(self, key: tuple[str, str], t: float) -> tuple[int, int]:
        """(certainly live, possibly live) claims of a GpuVm."""
        sure = maybe = 0
        for c in self.claims_of.get(key, ()):
            live = self.claim_live(c, t)
            sure += live is True
            maybe += live is None
        return sure, maybe

    def windows(self, spec: Mapping[str, Any]) -> list[Window]:
        schedule = spec.get("schedule") or {}
        return [w if isinstance(w, Window) else Window(*w) for w in schedule.get("resolved", [])]

    def schedule_open(self, spec: Mapping[str, Any], t: float) -> bool:
        when = self.wall(t)
        return any(w.open_at(when) for w in self.windows(spec))

    def wanted(self, key: tuple[str, str], t: float) -> bool | None:
        spec = self.spec_at(key, t)
        if spec is None:
            return False
        sure, maybe = self.live_claims(key, t)
        if sure or self.schedule_open(spec, t):
            return True
        return None if maybe else False

    def change_points(self, key: tuple[str, str]) -> list[float]:
        """Every moment the GpuVm's demand may change: spec changes, claim boundaries, schedule
        edges (sorted; cached until something is recorded)."""
        cached = self._changes.get(key)
        if cached is not None:
            return cached
        points: set[float] = set()
        history = self.gpuvms.get(key) or []
        for change in history:
            points.add(change.at)
        for c in self.claims_of.get(key, ()):
            points.update(x for x in (c.created, c.deleted, c.expires) if x is not None)
            if c.finished is not None:
                points.update((c.finished, c.finished + self.timing.resync + self.timing.lag))
            if c.lease is not None:
                for sent, value in c.renewals:
                    points.update((sent, value + c.lease))
        if history:
            first, last = self.wall(history[0].at), self.wall(max(history[-1].at, max(points)) + 900)
            for change in history:
                for w in self.windows(change.spec or {}):
                    points.update(self.mono(e) for e in w.edges(first, last))
        out = sorted(points)
        self._changes[key] = out
        return out

    def demand_end(self, key: tuple[str, str], t: float) -> float | None:
        """Under Auto and not wanted at ``t``: since when nothing has wanted the VM (or since
        desiredState became Auto, whichever is later); None when it is wanted."""
        if self.wanted(key, t) is not False:
            return None
        points = self.change_points(key)
        i = bisect.bisect_right(points, t)
        since = float("-inf")
        while i > 0:
            i -= 1
            p = points[i]
            spec = self.spec_at(key, p)
            if spec is None or spec["desiredState"] != "Auto":
                since = p if spec is not None else since
                break
            if self.wanted(key, p - EPSILON) is not False or (self.spec_at(key, p - EPSILON) or {}).get("desiredState") != "Auto":
                since = p
                break
        return since

    # ---- the VM as Azure had it ------------------------------------------------------------

    def power_at(self, vm: str, t: float) -> tuple[str, bool]:
        """(settled power, busy) of the VM just before ``t``, from the simulator's operations."""
        record = self.vms[vm]
        power, busy = record.initial, False
        events: list[tuple[float, int, Any]] = [(at, 1, p) for at, p in record.restored_as]
        for op in self.operations.get(vm.lower(), []):
            events.append((op.start, 0, op))
            if op.end is not None:
                events.append((op.end, 2, op))
        events.sort(key=lambda e: (e[0], e[1]))
        before: dict[str, str] = {}
        for at, kind, payload in events:
            if at >= t:
                break
            if kind == 0:
                before[payload.id] = power
                busy = payload.end is None or payload.end > payload.start
                if payload.end == payload.start and payload.status == "Succeeded":
                    power, busy = payload.target, False
            elif kind == 1:
                power, busy = payload, False
            else:
                busy = False
                if payload.status == "Succeeded":
                    power = payload.target
                elif payload.status == "Failed":
                    power = before.get(payload.id, power)
        return power, busy

    def arrived_by_others(self, vm: str, target: str, t: float) -> float | None:
        """When another client (out of band, an eviction, a restore) took the VM to ``target``
        within ``lag`` before ``t``, if it did: the operator may not have seen it yet."""
        record = self.vms[vm]
        times = [at for at, power in record.restored_as if power == target and t - self.timing.lag <= at <= t]
        times += [op.end for op in self.operations.get(vm.lower(), []) if op.origin != "api" and op.end is not None
                  and op.status == "Succeeded" and op.target == target and t - self.timing.lag <= op.end <= t]
        return max(times, default=None)

    def reached(self, vm: str, target: str, since: float, until: float) -> float | None:
        """When the VM (last) settled at ``target`` between ``since`` and ``until``: ``since``
        if it already was there then, else the end of the operation that took it there."""
        power, busy = self.power_at(vm, since)
        at = since if power == target and not busy else None
        for op in self.operations.get(vm.lower(), []):
            if op.end is None or op.end <= since or op.end >= until:
                continue
            if op.status == "Succeeded":
                at = op.end if op.target == target else None
        return at

    # ---- what may be requested -------------------------------------------------------------

    def targets(self, key: tuple[str, str], t: float) -> set[str]:
        """The operations the GpuVm's intent allows at ``t`` (before drift and consent rules)."""
        change = self.change_at(key, t)
        if change is None or change.spec is None:
            return set()
        spec = change.spec
        if change.deleting is not None:
            return {DEALLOCATE} if change.deleting == "Deallocate" else set()
        desired = spec["desiredState"]
        if desired == "Running":
            return {START}
        if desired == "Deallocated":
            return {DEALLOCATE}
        wanted = self.wanted(key, t)
        if wanted is True:
            return {START}
        if wanted is None:
            return {START, DEALLOCATE}
        end = self.demand_end(key, t)
        idle = parse_duration(spec.get("idleTimeout", "10m"))
        # The grace counts from status.demand.idleSince, a Kubernetes time: whole seconds, so it
        # may end up to a second before the moment demand really ended + idleTimeout.
        if end is not None and t < end + idle - TIME_GRANULARITY:
            return set()  # the idle grace: a VM that is on stays on, one that is off stays off
        return {DEALLOCATE}

    def hands_off(self, key: tuple[str, str], vm: str, t: float, targets: set[str]) -> Operation | None:
        """Under driftPolicy Report: the out-of-band operation after which the operator must
        leave the VM alone (it had settled at its target before it), if any."""
        spec = self.spec_at(key, t)
        if spec is None or spec.get("driftPolicy") != "Report" or len(targets) != 1:
            return None
        target = TARGET[next(iter(targets))]
        since = self.generation_since(key, t)
        record = self.vms[vm]
        for op in reversed(self.operations.get(vm.lower(), [])):
            if op.origin != "out-of-band" or op.start <= since or op.start > t:
                continue
            if record.spot and op.target == "deallocated" and target == "running":
                return None  # looks like an eviction: restarted whatever the policy
            if spec["desiredState"] == "Auto":
                ours = [o for o in self.operations.get(vm.lower(), []) if o.origin == "api" and o.end is not None and o.end < op.start]
                last = ours[-1] if ours else None
                settled = last is not None and last.status == "Succeeded" and last.target == target and last.end > since
                at = last.end if settled and last is not None else None
            else:
                at = self.reached(vm, target, since, op.start)
            if at is not None and op.start - max(at, since) > self.timing.apply:
                return op
            return None
        return None

    def allowed(self, vm: str, t: float) -> tuple[set[str], str]:
        """The operations an operator may request on ``vm`` at ``t``, and why (for reports)."""
        owners = self.owners(vm, t)
        if not owners:
            return set(), "no GpuVm names the VM"
        out: set[str] = set()
        why = []
        for key in owners:
            targets = self.targets(key, t)
            off = self.hands_off(key, vm, t, targets)
            if off is not None:
                why.append(f"{key[0]}/{key[1]}: driftPolicy Report, out-of-band {off.action} at {off.start:.1f}")
                continue
            out |= targets
            why.append(f"{key[0]}/{key[1]}: {sorted(targets) or 'nothing'}")
        record = self.vms[vm]
        removed = _in(record.untagged, t)
        if removed is not None and t - removed > self.timing.consent_age:
            return set(), f"opt-in tag removed {t - removed:.0f}s before"
        return out, "; ".join(why)

    def justified(self, op: Operation) -> tuple[str, float, str]:
        """How an operation of the operator's (origin api) is explained: ("needed", staleness, why)
        when some moment in [start - lag, start] allowed it (staleness: how long before its start
        that moment was, 0 when it was still allowed), else ("excess", 0, why)."""
        t = op.start
        action = "deallocate" if op.action == "hibernate" else op.action
        allowed, why = self.allowed(op.vm, t)
        if action in allowed:
            return "needed", 0.0, why
        points = {t - self.timing.lag}
        for key in set(self.owners(op.vm, t - self.timing.lag)) | set(self.owners(op.vm, t)):
            lo = bisect.bisect_left(self.change_points(key), t - self.timing.lag)
            hi = bisect.bisect_right(self.change_points(key), t)
            for p in self.change_points(key)[lo:hi]:
                points.update((p - EPSILON, p + EPSILON))
        record = self.vms[op.vm]
        for a, b in record.untagged:
            points.update(x for x in (a, b) if x is not None)
        for p in sorted(points, reverse=True):
            if t - self.timing.lag <= p <= t and action in self.allowed(op.vm, p)[0]:
                return "needed", t - p, why
        return "excess", 0.0, why


def parse_duration(text: str) -> float:
    """``1h2m3s`` (the CRD's idleTimeout) in seconds."""
    total, number = 0.0, ""
    for ch in str(text):
        if ch.isdigit():
            number += ch
        else:
            total += int(number or 0) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
    return total
