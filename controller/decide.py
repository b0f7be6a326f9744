"""The state machine: given what is wanted and what Azure shows, what to do next.

Everything here is pure — no I/O, no clock, no randomness of its own — so every rule is a unit
test and the handlers stay thin. One call answers, in a fixed order of precedence:

1. the spec is unusable                      -> InvalidSpec, nothing else matters;
2. the operator may not touch the VM         -> DuplicateVm / NotManaged / NamespaceNotAllowed;
3. Azure could not be read                   -> the failure's reason, look again later;
4. an operation of ours is in flight          -> wait for it (never a second one);
5. Azure is busy or the state is unknown      -> wait for it to settle;
6. the settled state is the desired one       -> Reconciled;
7. it differs through drift under Report      -> Drifted, hands off;
8. a back-off from an earlier failure is due  -> wait until it expires;
9. otherwise                                  -> request Start or Deallocate.

Under ``desiredState: Auto`` the desired state is not in the spec but in the demand
(``controller.demand.evaluate``, passed in as ``Situation.demand``): Running while wanted or before
``deallocateAt``, else Deallocated; operations it asks for carry the trigger Claim, Schedule or
Idle, and the next requeue comes no later than the demand's own next change.

Operations are tracked in ``LastOperation`` (persisted in status, so a restarted operator knows
one was requested) and in ``in_flight`` (this process holds the poller). A restarted operator has
the first without the second and finishes the record from observation instead of asking again.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace

from controller.demand import DecidedBy, Demand
from controller.gpuvm import GpuVmSpec
from controller.power import Action, DeletionPolicy, DesiredState, DriftPolicy, Observation, PowerState, Trigger
from controller.reasons import CAPACITY_REASONS, Failure, Reason, SpecError, capacity_reason
from controller.timestamps import format_time


class Result(str, enum.Enum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class LastOperation:
    action: Action
    trigger: Trigger
    started_at: dt.datetime
    result: Result = Result.IN_PROGRESS
    finished_at: dt.datetime | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class StartFailures:
    """Consecutive capacity/quota failures of starts, and when the next attempt may go out."""

    count: int
    last_code: str
    next_retry_at: dt.datetime


@dataclass(frozen=True)
class RequestFailure:
    """A failed request that is not a capacity failure (429, 5xx, 403, 409 …) and when it was."""

    failure: Failure
    at: dt.datetime


@dataclass(frozen=True)
class Timing:
    """Cadences, in seconds. Defaults fit Azure's throttling budget (see azure-facts.md)."""

    resync: float = 60.0  # settled VMs are looked at again this often (bulk, not per VM)
    transition_poll: float = 10.0  # while Azure transitions; per-VM reads are limited to 12/min
    capacity_backoff_base: float = 60.0
    capacity_backoff_max: float = 1800.0
    error_retry: float = 30.0  # 5xx, timeouts, unexpected answers
    denied_retry: float = 300.0  # 401, 403, 404, refusals: a human has to act; look now and then


@dataclass(frozen=True)
class Situation:
    """Everything ``decide`` may look at. Gathered by the engine, never fetched by the core."""

    spec: GpuVmSpec | SpecError
    generation: int
    now: dt.datetime
    deleting: bool = False
    converged_generation: int | None = None
    observation: Observation | None = None
    observation_failure: Failure | None = None
    refusal: Failure | None = None
    in_flight: Action | None = None
    last_operation: LastOperation | None = None
    start_failures: StartFailures | None = None
    request_failure: RequestFailure | None = None
    demand: Demand | None = None  # desiredState Auto: what evaluate() says; ignored for overrides
    spot: bool = False  # a Spot VM (priority Spot): Azure may evict it


@dataclass(frozen=True)
class Decision:
    reason: Reason
    message: str
    action: Action | None = None
    trigger: Trigger | None = None
    requeue_after: float | None = None
    last_operation: LastOperation | None = None
    start_failures: StartFailures | None = None
    converged_generation: int | None = None
    evicted: bool = False  # Azure evicted the (Spot) VM while it was wanted: counted once, then restarted

    @property
    def ready(self) -> bool:
        return self.reason is Reason.RECONCILED


def capacity_backoff(count: int, *, timing: Timing, jitter: float) -> float:
    """Exponential back-off for capacity failures, capped, with ±25 % jitter.

    Capacity for a GPU size comes back in minutes to hours; hammering the region does not help
    and many operators retrying in lock-step make it worse, hence the jitter (0 <= jitter < 1).
    """
    exponent = min(max(count - 1, 0), 30)
    delay = min(timing.capacity_backoff_max, timing.capacity_backoff_base * (2**exponent))
    return delay * (0.75 + 0.5 * jitter)


def retry_delay(failure: Failure, *, timing: Timing) -> float:
    """How long to wait before asking Azure again after a failure that is not about capacity."""
    if failure.reason is Reason.THROTTLED:
        return failure.retry_after if failure.retry_after is not None else timing.error_retry
    if failure.reason is Reason.WAITING_FOR_TRANSITION:
        return timing.transition_poll
    if failure.reason in (
        Reason.AUTHENTICATION_FAILED,
        Reason.AUTHORIZATION_FAILED,
        Reason.VM_NOT_FOUND,
    ):
        return timing.denied_retry
    return max(timing.error_retry, failure.retry_after or 0.0)


def complete_operation(
    last: LastOperation,
    *,
    failure: Failure | None,
    start_failures: StartFailures | None,
    now: dt.datetime,
    timing: Timing,
    jitter: float,
) -> tuple[LastOperation, StartFailures | None]:
    """Close an operation record, counting capacity failures of starts for the back-off."""
    if failure is None:
        done = replace(last, result=Result.SUCCEEDED, finished_at=now, error_code=None, error_message=None)
        return done, (None if last.action is Action.START else start_failures)
    done = replace(
        last, result=Result.FAILED, finished_at=now, error_code=failure.code, error_message=failure.message
    )
    if last.action is Action.START and failure.reason in CAPACITY_REASONS:
        count = (start_failures.count if start_failures else 0) + 1
        delay = capacity_backoff(count, timing=timing, jitter=jitter)
        return done, StartFailures(count, failure.code, now + dt.timedelta(seconds=delay))
    return done, start_failures


def _ago(now: dt.datetime, then: dt.datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _progress_reason(action: Action) -> Reason:
    return Reason.STARTING if action is Action.START else Reason.DEALLOCATING


def _resume(situation: Situation, timing: Timing, jitter: float) -> tuple[LastOperation | None, StartFailures | None]:
    """Finish a persisted InProgress record that no poller of this process follows any more.

    That is the state after an operator restart mid-operation: the VM itself tells how it ended.
    A settled VM at the operation's target means success; settled elsewhere means it failed —
    with the code from ``ProvisioningState/failed/<code>`` when Azure left one.
    """
    last, failures, obs = situation.last_operation, situation.start_failures, situation.observation
    if last is None or last.result is not Result.IN_PROGRESS or situation.in_flight is not None:
        return last, failures
    if obs is None or obs.busy or not obs.power_state.settled:
        return last, failures
    if obs.power_state.reaches(last.action.target):
        return complete_operation(last, failure=None, start_failures=failures, now=situation.now, timing=timing, jitter=jitter)
    failure = obs.provisioning_failure or Failure(
        Reason.AZURE_ERROR,
        "OperationInterrupted",
        f"the {last.action.verb} requested at {format_time(last.started_at)} ended with the VM "
        f"{obs.power_state.value.lower()}",
    )
    return complete_operation(last, failure=failure, start_failures=failures, now=situation.now, timing=timing, jitter=jitter)


def _auto(s: Situation) -> bool:
    return isinstance(s.spec, GpuVmSpec) and s.spec.desired_state is DesiredState.AUTO and not s.deleting


def decide(situation: Situation, *, timing: Timing = Timing(), jitter: float = 0.5) -> Decision:
    """The next step for one GpuVm. See the module docstring for the order of the rules."""
    decision = _decide(situation, timing, jitter)
    demand = situation.demand
    if _auto(situation) and demand is not None and demand.recheck_at is not None and decision.requeue_after is not None:
        due = max(0.0, (demand.recheck_at - situation.now).total_seconds())
        if due < decision.requeue_after:  # a claim ends, a window edge, the idle deadline: look then
            decision = replace(decision, requeue_after=due)
    return decision


def _demand_note(demand: Demand, now: dt.datetime) -> str:
    if demand.decided_by is DecidedBy.CLAIMS:
        return f"wanted by {demand.active_claims} live claim{'s' if demand.active_claims != 1 else ''}"
    if demand.decided_by is DecidedBy.SCHEDULE:
        return "wanted by the schedule"
    if demand.deallocate_at is not None and demand.deallocate_at > now and demand.idle_since is not None:
        return f"idle since {format_time(demand.idle_since)}, switched off at {format_time(demand.deallocate_at)}"
    return "nothing wants it"


def _decide(s: Situation, timing: Timing, jitter: float) -> Decision:
    spec = s.spec
    if isinstance(spec, SpecError):
        return Decision(
            Reason.INVALID_SPEC,
            f"{spec.field}: {spec.message}",
            last_operation=s.last_operation,
            start_failures=s.start_failures,
            converged_generation=s.converged_generation,
        )

    keep = dict(
        last_operation=s.last_operation,
        start_failures=s.start_failures,
        converged_generation=s.converged_generation,
    )
    if s.deleting and spec.deletion_policy is DeletionPolicy.RETAIN:
        return Decision(Reason.RECONCILED, "being deleted; deletionPolicy Retain leaves the VM as it is", **keep)
    if s.refusal is not None:
        return Decision(s.refusal.reason, s.refusal.message, requeue_after=timing.denied_retry, **keep)
    if s.observation is None:
        failure = s.observation_failure or Failure(Reason.AZURE_ERROR, "NotObserved", "the VM has not been observed yet")
        return Decision(failure.reason, failure.message, requeue_after=retry_delay(failure, timing=timing), **keep)

    obs = s.observation
    auto = _auto(s)
    if auto and s.demand is None:
        return Decision(
            Reason.WAITING_FOR_TRANSITION,
            "desiredState Auto: the demand on this GpuVm is not known yet; the VM is left as it is until it is",
            requeue_after=timing.transition_poll,
            **keep,
        )
    if s.deleting:
        desired = DesiredState.DEALLOCATED
    elif auto:
        assert s.demand is not None
        desired = DesiredState(s.demand.target(s.now).value)
    else:
        desired = spec.desired_state
    target = desired.power_state
    last, failures = _resume(s, timing, jitter)
    keep = dict(last_operation=last, start_failures=failures, converged_generation=s.converged_generation)
    applied = s.converged_generation == s.generation and not s.deleting
    if auto:
        # The target moves with demand at one generation: a difference is drift only if the VM had
        # reached this very target through our last operation, else it is demand that changed.
        applied = applied and last is not None and last.result is Result.SUCCEEDED and last.action.target is target
    report_drift = applied and spec.drift_policy is DriftPolicy.REPORT
    power = obs.power_state
    if auto:
        assert s.demand is not None
        note = _demand_note(s.demand, s.now)
        wants = f"desiredState Auto wants it {target.value.lower()} ({note})"
    else:
        wants = f"desiredState is {desired.value}"

    if s.in_flight is not None:
        since = f" {_ago(s.now, last.started_at)}" if last and last.result is Result.IN_PROGRESS else ""
        if s.in_flight.target is target:
            message = f"{s.in_flight.verb} requested{since}; waiting for PowerState/{target.value.lower()}"
            reason = _progress_reason(s.in_flight)
        else:
            message = f"a {s.in_flight.verb} is in flight; the VM will be {target.value.lower()} after it completes"
            reason = Reason.WAITING_FOR_TRANSITION
        return Decision(reason, message, requeue_after=timing.transition_poll, **keep)

    if obs.busy or power is PowerState.UNKNOWN:
        state = f"{power.value.lower()}, provisioning {obs.provisioning_state.value.lower()}"
        toward = (power is PowerState.STARTING and target is PowerState.RUNNING) or (
            power is PowerState.DEALLOCATING and target is PowerState.DEALLOCATED
        )
        if toward:
            reason = Reason.STARTING if target is PowerState.RUNNING else Reason.DEALLOCATING
            message = f"VM is {power.value.lower()}; waiting for PowerState/{target.value.lower()}"
        elif power.reaches(target):
            reason = Reason.WAITING_FOR_TRANSITION
            message = (
                f"VM is {target.value.lower()} as desired, but Azure reports provisioning "
                f"{obs.provisioning_state.value.lower()}; waiting for it to finish"
            )
        elif report_drift and power is not PowerState.UNKNOWN:
            reason = Reason.DRIFTED
            message = (
                f"VM is {state} outside this operator while {wants}; "
                "driftPolicy Report leaves it"
            )
        elif power is PowerState.UNKNOWN and obs.power_code:
            reason = Reason.WAITING_FOR_TRANSITION
            message = f"Azure reported {obs.power_code}, a power state this operator does not know; waiting for a known one"
        elif power is PowerState.UNKNOWN:
            reason = Reason.WAITING_FOR_TRANSITION
            message = "Azure reported no power state for the VM; waiting for a definite one"
        else:
            reason = Reason.WAITING_FOR_TRANSITION
            message = f"VM is {state}; will {_action_for(target).verb} when it settles"
        return Decision(reason, message, requeue_after=timing.transition_poll, **keep)

    if power.reaches(target):
        return Decision(
            Reason.RECONCILED,
            f"VM is {target.value.lower()} as desired" + (f" by Auto: {note}" if auto else ""),
            requeue_after=timing.resync,
            last_operation=last,
            start_failures=None,
            converged_generation=s.converged_generation if s.deleting else s.generation,
        )

    action = _action_for(target)
    # A wanted Spot VM that Azure deallocated was evicted: not drift (driftPolicy does not apply),
    # restarted under the capacity back-off. Counted once: until a restart of ours is on record.
    eviction = (
        s.spot and applied and target is PowerState.RUNNING and power is PowerState.DEALLOCATED
        and not (last is not None and last.trigger is Trigger.EVICTION and last.result is not Result.SUCCEEDED)
    )
    restarting = s.spot and applied and target is PowerState.RUNNING and power is PowerState.DEALLOCATED
    if s.deleting:
        trigger = Trigger.DELETION
    elif restarting:
        trigger = Trigger.EVICTION
        report_drift = False
    elif applied:
        trigger = Trigger.DRIFT
    elif auto:
        assert s.demand is not None
        trigger = s.demand.trigger
    else:
        trigger = Trigger.SPEC
    if report_drift:
        return Decision(
            Reason.DRIFTED,
            f"VM is {power.value.lower()} but {wants}; driftPolicy Report leaves it "
            f"(set driftPolicy Enforce to correct drift, or change desiredState)",
            requeue_after=timing.resync,
            **keep,
        )
    if action is Action.START and failures is not None and failures.next_retry_at > s.now:
        wait = (failures.next_retry_at - s.now).total_seconds()
        reason = capacity_reason(failures.last_code)
        message = (
            f"start failed {failures.count} time{'s' if failures.count != 1 else ''} "
            f"(last: {failures.last_code}); next retry at {format_time(failures.next_retry_at)}"
        )
        if last and last.error_message and last.result is Result.FAILED:
            message += f": {last.error_message}"
        if restarting:
            message = f"Azure evicted the Spot VM; {message}"
        return Decision(reason, message, requeue_after=wait, evicted=eviction, **keep)
    if s.request_failure is not None:
        retry_at = s.request_failure.at + dt.timedelta(seconds=retry_delay(s.request_failure.failure, timing=timing))
        if retry_at > s.now:
            failure = s.request_failure.failure
            return Decision(
                failure.reason,
                f"{failure.message} (next attempt at {format_time(retry_at)})",
                requeue_after=(retry_at - s.now).total_seconds(),
                **keep,
            )

    started = LastOperation(action=action, trigger=trigger, started_at=s.now)
    message = f"{action.verb} requested; waiting for PowerState/{target.value.lower()}"
    if restarting:
        message = f"Azure evicted the Spot VM (deallocated it while wanted); {message}"
    return Decision(
        _progress_reason(action),
        message,
        action=action,
        trigger=trigger,
        requeue_after=timing.transition_poll,
        last_operation=started,
        start_failures=failures,
        converged_generation=s.converged_generation,
        evicted=eviction,
    )


def _action_for(target: PowerState) -> Action:
    return Action.START if target is PowerState.RUNNING else Action.DEALLOCATE
