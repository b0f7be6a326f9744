"""Demand: who needs a GpuVm's VM, and until when — claims, the schedule, the idle timeout.

``spec.desiredState`` alone is one shared switch: the first of two jobs to finish switches the
VM off under the other, and a job killed hard never switches it off at all. Under
``desiredState: Auto`` the operator derives the switch from demand instead: any live GpuVmClaim,
or an open schedule window, wants the VM; when nothing does, it keeps running ``idleTimeout``
and is then switched off.

Everything here is pure, like ``decide``: no I/O and no clock of its own. The engine gathers
the inputs (the claims of a GpuVm, the phases of their owner Pods, the schedule's evaluation,
``now``, the ``idleSince`` it wrote last time) and calls, in this order:

1. ``parse_claim`` for each GpuVmClaim body, ``liveness`` for each claim;
2. ``evaluate`` for the GpuVm -> ``Demand`` (``decide`` turns it into Running/Deallocated,
   ``status.render_status`` writes it as ``status.demand``);
3. ``claim_state`` for each claim, given the GpuVm as ``gpuvm_view`` reads it ->
   ``status.render_claim_status`` writes the claim's status; ``claim_event`` says which Event
   a phase change deserves.

Times that matter later are returned, never waited for: ``Liveness.until`` (when a live claim
stops being live if nothing changes) and ``Demand.recheck_at`` (the next instant ``evaluate``
would answer differently) are what the engine sets its timers by.
"""

from __future__ import annotations

import datetime as dt
import enum
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from controller.gpuvm import GROUP, VERSION, GpuVmSpec
from controller.power import Action, DesiredState, PowerState, Trigger
from controller.reasons import SpecError
from controller.timestamps import format_time, parse_time

CLAIM_KIND = "GpuVmClaim"
CLAIM_PLURAL = "gpuvmclaims"
# Set on the pod template of jobs that claim (the examples do), so an operator that watches owner
# Pods can watch only these instead of every pod in the cluster.
CLAIMANT_LABEL = "gpuvm.dev/claimant"

MAX_LISTED_CLAIMS = 16  # status.demand.claims (the CRD's maxItems)
MAX_TRANSITIONS = 3  # status.demand.nextTransitions (the CRD's maxItems)
_TERMINATED_POD_PHASES = frozenset({"Succeeded", "Failed"})


class DecidedBy(str, enum.Enum):
    """What makes the VM wanted or not now (``status.demand.decidedBy``)."""

    SPEC = "Spec"  # desiredState Running or Deallocated: an override
    CLAIMS = "Claims"  # Auto, and at least one live claim
    SCHEDULE = "Schedule"  # Auto, no live claim, inside a schedule window
    IDLE = "Idle"  # Auto, nothing wants it


class ClaimPhase(str, enum.Enum):
    PENDING = "Pending"  # live, but its GpuVm does not exist (yet)
    BOUND = "Bound"  # live and its GpuVm exists: counted as demand
    RELEASED = "Released"  # its owner Pod finished, or the claim is being deleted
    EXPIRED = "Expired"  # expiresAt passed, or the lease was not renewed in time


class ClaimReason(str, enum.Enum):
    """Reasons of a claim's ``Ready`` condition (True only for VmRunning)."""

    VM_RUNNING = "VmRunning"
    WAITING_FOR_VM = "WaitingForVm"
    GPUVM_NOT_FOUND = "GpuVmNotFound"
    GPUVM_NOT_AUTO = "GpuVmNotAuto"
    EXPIRED = "Expired"
    OWNER_FINISHED = "OwnerFinished"
    DELETED = "Deleted"
    INVALID_SPEC = "InvalidSpec"  # the claim itself cannot be read (an apiserver without the CRD's validation)


# ----------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class OwnerPod:
    name: str
    uid: str


@dataclass(frozen=True)
class Claim:
    """A GpuVmClaim as the operator reads it."""

    namespace: str
    name: str
    gpu_vm: str
    generation: int = 1
    created: dt.datetime | None = None
    deleting: bool = False
    expires_at: dt.datetime | None = None
    lease_duration: dt.timedelta | None = None
    renew_time: dt.datetime | None = None
    owner_pods: tuple[OwnerPod, ...] = ()


def parse_claim(body: Mapping[str, Any]) -> Claim | SpecError:
    """A claim's body -> Claim. The CRD validates, but bodies from elsewhere may not be valid."""
    meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
    spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
    gpu_vm = spec.get("gpuVm")
    if not isinstance(gpu_vm, str) or not gpu_vm:
        return SpecError("spec.gpuVm", "required: the name of a GpuVm in the claim's namespace")
    expires_at = parse_time(spec.get("expiresAt"))
    if spec.get("expiresAt") is not None and expires_at is None:
        return SpecError("spec.expiresAt", f"{spec.get('expiresAt')!r} is not an RFC 3339 time")
    lease = spec.get("leaseDurationSeconds")
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, int) or lease < 1):
        return SpecError("spec.leaseDurationSeconds", f"{lease!r} is not a whole number of seconds >= 1")
    owners = tuple(
        OwnerPod(str(ref.get("name", "")), str(ref.get("uid", "")))
        for ref in meta.get("ownerReferences") or ()
        if isinstance(ref, Mapping) and ref.get("kind") == "Pod" and ref.get("apiVersion") == "v1"
    )
    generation = meta.get("generation")
    return Claim(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        gpu_vm=gpu_vm,
        generation=generation if isinstance(generation, int) else 1,
        created=parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        expires_at=expires_at,
        lease_duration=dt.timedelta(seconds=lease) if lease is not None else None,
        renew_time=parse_time(spec.get("renewTime")),
        owner_pods=owners,
    )


@dataclass(frozen=True)
class Liveness:
    """Whether a claim counts as demand now; if it does, until when (None: until it changes)."""

    live: bool
    until: dt.datetime | None = None
    reason: ClaimReason | None = None  # why it is not live: EXPIRED, OWNER_FINISHED or DELETED
    message: str = ""


def liveness(claim: Claim, *, now: dt.datetime, pod_phases: Mapping[str, str] = {}) -> Liveness:
    """The contract's rule: live = exists, not being deleted, expiresAt not passed, lease (if any)
    renewed within leaseDurationSeconds, and no owner Pod terminated (Succeeded or Failed).

    ``pod_phases`` maps owner Pod UIDs to the phase the engine last saw; a Pod it does not know is
    not held against the claim (Kubernetes garbage collection deletes the claim with its owner).
    A lease without ``renewTime`` counts from the claim's creation. A lapsed lease that is renewed
    again makes the claim live again: liveness is a function of the current object, nothing more.
    """
    if claim.deleting:
        return Liveness(False, reason=ClaimReason.DELETED, message="the claim is being deleted")
    for pod in claim.owner_pods:
        phase = pod_phases.get(pod.uid)
        if phase in _TERMINATED_POD_PHASES:
            return Liveness(False, reason=ClaimReason.OWNER_FINISHED,
                            message=f"owner Pod {pod.name} has finished (phase {phase})")
    ends: list[dt.datetime] = []
    if claim.expires_at is not None:
        if claim.expires_at <= now:
            return Liveness(False, reason=ClaimReason.EXPIRED, message=f"expired at {format_time(claim.expires_at)}")
        ends.append(claim.expires_at)
    if claim.lease_duration is not None:
        renewed = claim.renew_time or claim.created
        if renewed is not None:
            lease_end = renewed + claim.lease_duration
            if lease_end <= now:
                seconds = int(claim.lease_duration.total_seconds())
                return Liveness(False, reason=ClaimReason.EXPIRED,
                                message=f"lease not renewed since {format_time(renewed)} (leaseDurationSeconds {seconds})")
            ends.append(lease_end)
    return Liveness(True, until=min(ends) if ends else None)


def live_until(claim: Claim, live: Liveness) -> dt.datetime | None:
    """For a claim no longer live: the last moment it is known to have been (its expiry or lapsed
    lease, else its creation), None if never. An ``idleSince`` stored before that moment was
    written before this demand existed (by a replica that was down or paused meanwhile): the idle
    grace counts from this moment instead, as it would have had a replica watched."""
    if live.live or claim.created is None:
        return None
    if live.reason is ClaimReason.EXPIRED:
        ends = [claim.expires_at] if claim.expires_at is not None else []
        if claim.lease_duration is not None:
            ends.append((claim.renew_time or claim.created) + claim.lease_duration)
        end = min(ends, default=None)
        return end if end is not None and end > claim.created else None
    return claim.created


def owner_pods_to_read(claims: Iterable[Claim]) -> set[tuple[str, str]]:
    """(namespace, pod name) of every owner Pod whose phase decides a claim's liveness."""
    return {(c.namespace, pod.name) for c in claims if not c.deleting for pod in c.owner_pods}


# ----------------------------------------------------------------------------- the GpuVm's demand


class ScheduleEdge(NamedTuple):
    """A moment the schedule opens (``opens``) or closes; what ``controller.schedule.edges`` gives."""

    at: dt.datetime
    opens: bool


@dataclass(frozen=True)
class ScheduleView:
    """The schedule's evaluation at ``now``, as plain data: open now, and the next edges in order.

    Built by the engine as ``ScheduleView(is_open(s, now), tuple(ScheduleEdge(e.at, e.opens) for e
    in edges(s, now, 8)))``. Transitions later than the last edge given are not predicted (the
    schedule may change state again after it); an empty ``edges`` means it never changes.
    """

    open: bool
    edges: tuple[ScheduleEdge, ...] = ()


@dataclass(frozen=True)
class LiveClaim:
    """A live claim as demand sees it: its name and when it stops being live if nothing changes."""

    name: str
    until: dt.datetime | None = None


@dataclass(frozen=True)
class Transition:
    """A planned change of the VM's target power state (``status.demand.nextTransitions[]``)."""

    at: dt.datetime
    to: PowerState  # RUNNING or DEALLOCATED
    by: Trigger  # SCHEDULE (a window opens) or IDLE (idleTimeout after demand ends)


@dataclass(frozen=True)
class Demand:
    """The answer of ``evaluate``: what ``decide`` follows and ``status.demand`` shows."""

    wanted: bool
    decided_by: DecidedBy
    active_claims: int = 0
    claims: tuple[str, ...] = ()  # the first MAX_LISTED_CLAIMS live claims by name
    idle_since: dt.datetime | None = None  # Auto: when demand last ended
    deallocate_at: dt.datetime | None = None  # Auto: when it is switched off if nothing changes
    next_transitions: tuple[Transition, ...] = ()
    recheck_at: dt.datetime | None = None  # the next instant evaluate would answer differently
    # Auto, nothing wants it, the VM is on: the end of its idle grace (idleSince + idleTimeout).
    # Usually deallocate_at too, but not when a window opens inside the grace: the VM is then not
    # switched off at the grace's end (deallocate_at says when it is), yet kept on until the window.
    grace_until: dt.datetime | None = None

    def target(self, now: dt.datetime) -> PowerState:
        """Running while wanted or in the idle grace, else Deallocated (Auto's rule)."""
        if self.wanted or (self.grace_until is not None and now < self.grace_until):
            return PowerState.RUNNING
        return PowerState.DEALLOCATED

    @property
    def trigger(self) -> Trigger:
        """What an operation this demand asks for is triggered by (``lastOperation.trigger``)."""
        if self.decided_by is DecidedBy.SCHEDULE:
            return Trigger.SCHEDULE
        if self.decided_by is DecidedBy.IDLE:
            return Trigger.IDLE
        return Trigger.CLAIM if self.decided_by is DecidedBy.CLAIMS else Trigger.SPEC


def is_on(power: PowerState | None, in_flight: Action | None = None) -> bool:
    """The VM is up or coming up: the idle grace keeps such a VM running, but never starts one."""
    return in_flight is Action.START or power in (PowerState.STARTING, PowerState.RUNNING)


def evaluate(
    spec: GpuVmSpec,
    *,
    claims: Sequence[LiveClaim],
    schedule: ScheduleView | None,
    now: dt.datetime,
    idle_since: dt.datetime | None,
    vm_on: bool,
) -> Demand:
    """The demand on one GpuVm now, and what changes it next if nothing else does.

    ``claims`` are its live claims (``liveness(...).live``); ``idle_since`` is the value written
    last time (status.demand.idleSince), so a restarted operator keeps the grace it had;
    ``vm_on`` is ``is_on(...)`` of what Azure shows. Precedence: an override (Running,
    Deallocated) ignores demand; otherwise claims and schedule together want the VM (a schedule
    never switches off a VM live claims need), and only then does the idle rule apply.
    """
    claims = [c for c in claims if c.until is None or c.until > now]
    names = sorted(c.name for c in claims)
    listed = tuple(names[:MAX_LISTED_CLAIMS])
    ends = [c.until for c in claims if c.until is not None]
    if spec.desired_state.is_override:
        return Demand(
            wanted=spec.desired_state is DesiredState.RUNNING,
            decided_by=DecidedBy.SPEC,
            active_claims=len(names),
            claims=listed,
            recheck_at=min(ends) if ends else None,  # claims still expire (their status changes)
        )
    edges = tuple(e for e in (schedule.edges if schedule else ()) if e.at > now)
    open_now = bool(schedule and schedule.open)
    if claims:
        decided_by = DecidedBy.CLAIMS
    elif open_now:
        decided_by = DecidedBy.SCHEDULE
    else:
        decided_by = DecidedBy.IDLE
    wanted = decided_by is not DecidedBy.IDLE
    since = None if wanted else (min(idle_since, now) if idle_since is not None else now)
    deadline = since + spec.idle_timeout if since is not None else None
    on = wanted or (vm_on and deadline is not None and deadline > now)
    transitions = _walk(claims=claims, edges=edges, open_now=open_now, on=on, idle_since=since,
                        idle_timeout=spec.idle_timeout)
    if on:
        deallocate_at = next((t.at for t in transitions if t.to is PowerState.DEALLOCATED), None)
    else:
        deallocate_at = deadline if vm_on else None  # due now: the switch-off is under way
    grace_until = deadline if not wanted and vm_on else None
    candidates = [*ends, *(e.at for e in edges[:1])]
    if grace_until is not None and grace_until > now:
        candidates.append(grace_until)
    return Demand(
        wanted=wanted,
        decided_by=decided_by,
        active_claims=len(names),
        claims=listed,
        idle_since=since,
        deallocate_at=deallocate_at,
        next_transitions=transitions,
        recheck_at=min(candidates) if candidates else None,
        grace_until=grace_until,
    )


# Kinds of events in the walk, in the order simultaneous ones are applied: demand changes first,
# then the idle deadline they may have moved (a claim ending exactly when a window opens never
# switches the VM off).
_CLAIM_ENDS, _EDGE, _DEADLINE = 0, 1, 2


def _walk(
    *,
    claims: Sequence[LiveClaim],
    edges: tuple[ScheduleEdge, ...],
    open_now: bool,
    on: bool,
    idle_since: dt.datetime | None,
    idle_timeout: dt.timedelta,
) -> tuple[Transition, ...]:
    """Play the known future forward (claims ending, schedule edges, idle deadlines) assuming
    nothing new happens, and note each change of the VM's target power state.

    ``on`` is the target now (Running?); ``idle_since`` is set when nothing wants the VM now.
    Nothing later than the last schedule edge given is predicted: the schedule may open again
    after it.
    """
    horizon = edges[-1].at if edges else None
    # (at, kind, opens): a heap orders by time, then kind; equal tuples are interchangeable.
    events: list[tuple[dt.datetime, int, bool]] = [(c.until, _CLAIM_ENDS, False) for c in claims if c.until is not None]
    events += [(e.at, _EDGE, e.opens) for e in edges]
    deadline = idle_since + idle_timeout if idle_since is not None else None
    if deadline is not None and on:
        events.append((deadline, _DEADLINE, False))
    heapq.heapify(events)
    live, is_open = len(claims), open_now
    out: list[Transition] = []
    while events and len(out) < MAX_TRANSITIONS:
        at, kind, opens = heapq.heappop(events)
        if horizon is not None and at > horizon:
            break
        if kind == _DEADLINE:
            if on and at == deadline:  # else a stale deadline, moved by demand since
                out.append(Transition(at, PowerState.DEALLOCATED, Trigger.IDLE))
                on = False
            continue
        if kind == _CLAIM_ENDS:
            live -= 1
        else:
            is_open = opens
        if live or is_open:
            if not on:
                out.append(Transition(at, PowerState.RUNNING, Trigger.SCHEDULE))  # claims only ever end
                on = True
            deadline = None
        elif deadline is None:
            deadline = at + idle_timeout
            if on:
                heapq.heappush(events, (deadline, _DEADLINE, False))
    return tuple(out)


# ----------------------------------------------------------------------------- a claim's status


@dataclass(frozen=True)
class GpuVmView:
    """What a claim's status needs of its GpuVm, read from the GpuVm object (``gpuvm_view``)."""

    name: str
    desired: DesiredState | None  # None: the spec's desiredState is not one the operator knows
    power_state: str | None = None
    ready: bool = False
    reason: str | None = None
    message: str | None = None
    current: bool = False  # status.observedGeneration == metadata.generation


def gpuvm_view(body: Mapping[str, Any]) -> GpuVmView:
    meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
    spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
    status = body.get("status") if isinstance(body.get("status"), Mapping) else {}
    try:
        desired: DesiredState | None = DesiredState(spec.get("desiredState", DesiredState.DEALLOCATED.value))
    except ValueError:
        desired = None
    conditions = status.get("conditions") if isinstance(status.get("conditions"), list) else []
    ready = next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == "Ready"), {})
    power = status.get("powerState")
    return GpuVmView(
        name=str(meta.get("name", "")),
        desired=desired,
        power_state=power if isinstance(power, str) else None,
        ready=ready.get("status") == "True",
        reason=ready.get("reason") if isinstance(ready.get("reason"), str) else None,
        message=ready.get("message") if isinstance(ready.get("message"), str) else None,
        current=status.get("observedGeneration") == meta.get("generation") and meta.get("generation") is not None,
    )


@dataclass(frozen=True)
class ClaimState:
    """A claim's phase and Ready condition, to be rendered by ``status.render_claim_status``."""

    phase: ClaimPhase
    reason: ClaimReason
    message: str

    @property
    def ready(self) -> bool:
        return self.reason is ClaimReason.VM_RUNNING


def claim_state(claim: Claim, live: Liveness, vm: GpuVmView | None) -> ClaimState:
    """Phase and Ready of a claim, given its liveness and its GpuVm (None: there is none).

    While it waits, the message carries the GpuVm's own reason and message (Starting,
    AllocationFailed with the back-off, Evicted ...), so a job that waits on the claim can tell
    its user why without reading the GpuVm.
    """
    if not live.live:
        reason = live.reason or ClaimReason.EXPIRED
        phase = ClaimPhase.EXPIRED if reason is ClaimReason.EXPIRED else ClaimPhase.RELEASED
        return ClaimState(phase, reason, f"{live.message}; the claim no longer counts as demand")
    if vm is None:
        return ClaimState(ClaimPhase.PENDING, ClaimReason.GPUVM_NOT_FOUND,
                          f"no GpuVm {claim.gpu_vm} in namespace {claim.namespace}")
    if vm.desired is DesiredState.DEALLOCATED:
        return ClaimState(ClaimPhase.BOUND, ClaimReason.GPUVM_NOT_AUTO,
                          f"GpuVm {vm.name} is pinned with desiredState Deallocated: claims cannot start it "
                          "(set desiredState Auto to let them)")
    if vm.power_state == PowerState.RUNNING.value and vm.ready and vm.current:
        return ClaimState(ClaimPhase.BOUND, ClaimReason.VM_RUNNING, f"the VM of GpuVm {vm.name} is running")
    if vm.reason:
        detail = f"{vm.reason}: {vm.message}" if vm.message else vm.reason
        if vm.ready and not vm.current:
            detail = "its status is not yet up to date with its spec"
        elif vm.ready and vm.desired is DesiredState.AUTO:  # settled before this claim counted
            detail = "a start is due for this claim"
    else:
        detail = "the operator has not written its status yet"
    power = f" (power {vm.power_state})" if vm.power_state else ""
    return ClaimState(ClaimPhase.BOUND, ClaimReason.WAITING_FOR_VM, f"GpuVm {vm.name}{power}: {detail}")


def claim_event(before: ClaimPhase | None, after: ClaimState) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event a phase change deserves: bound, released, expired."""
    if before is after.phase:
        return None
    if after.phase is ClaimPhase.BOUND:
        return ("Normal", "Bound", "counted as demand: " + after.message)
    if after.phase is ClaimPhase.RELEASED:
        return ("Normal", "Released", after.message)
    if after.phase is ClaimPhase.EXPIRED:
        return ("Warning", "Expired", after.message)
    return None


__all__ = [
    "CLAIMANT_LABEL", "CLAIM_KIND", "CLAIM_PLURAL", "GROUP", "VERSION", "Claim", "ClaimPhase", "ClaimReason",
    "ClaimState", "DecidedBy", "Demand", "GpuVmView", "LiveClaim", "Liveness", "OwnerPod", "ScheduleEdge",
    "ScheduleView", "Transition", "claim_event", "claim_state", "evaluate", "gpuvm_view", "is_on", "liveness",
    "owner_pods_to_read", "parse_claim",
]
