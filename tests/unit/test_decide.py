"""Every rule of the state machine, as a table a reviewer can check against the API doc."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from controller.decide import (
    Decision,
    LastOperation,
    RequestFailure,
    Result,
    Situation,
    StartFailures,
    Timing,
    capacity_backoff,
    complete_operation,
    decide,
    retry_delay,
)
from controller.gpuvm import GpuVmSpec, VmRef
from controller.power import (
    Action,
    DeletionPolicy,
    DesiredState,
    DriftPolicy,
    Observation,
    PowerState,
    ProvisioningState,
    Trigger,
)
from controller.reasons import Failure, Reason, SpecError

NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)
VM = VmRef("00000000-0000-0000-0000-000000000001", "rg-gpu", "vm-a100")
T = Timing()
R, D = DesiredState.RUNNING, DesiredState.DEALLOCATED
OVERRIDES = [R, D]  # Auto resolves to one of these through its demand: tests/unit/test_decide_auto.py


def spec(
    desired: DesiredState = R,
    drift: DriftPolicy = DriftPolicy.ENFORCE,
    deletion: DeletionPolicy = DeletionPolicy.RETAIN,
) -> GpuVmSpec:
    return GpuVmSpec(vm=VM, desired_state=desired, drift_policy=drift, deletion_policy=deletion)


def obs(
    power: PowerState,
    prov: ProvisioningState = ProvisioningState.SUCCEEDED,
    failure: Failure | None = None,
) -> Observation:
    return Observation(power_state=power, provisioning_state=prov, observed_at=NOW, provisioning_failure=failure)


def situation(desired: DesiredState = R, power: PowerState = PowerState.DEALLOCATED, **kw) -> Situation:
    base = dict(spec=spec(desired), generation=2, now=NOW, observation=obs(power))
    base.update(kw)
    return Situation(**base)


P = PowerState
START, DEALLOC = Action.START, Action.DEALLOCATE
WAIT = Reason.WAITING_FOR_TRANSITION

# desired x observed power (provisioning Succeeded, nothing in flight, new generation):
# (expected action, expected reason) straight from the API doc's "Semantics".
TABLE = {
    (R, P.STARTING): (None, Reason.STARTING),
    (R, P.RUNNING): (None, Reason.RECONCILED),
    (R, P.STOPPING): (None, WAIT),
    (R, P.STOPPED): (START, Reason.STARTING),
    (R, P.DEALLOCATING): (None, WAIT),
    (R, P.DEALLOCATED): (START, Reason.STARTING),
    (R, P.UNKNOWN): (None, WAIT),
    (R, P.HIBERNATED): (START, Reason.STARTING),  # a start resumes it
    (D, P.STARTING): (None, WAIT),
    (D, P.RUNNING): (DEALLOC, Reason.DEALLOCATING),
    (D, P.STOPPING): (None, WAIT),
    (D, P.STOPPED): (DEALLOC, Reason.DEALLOCATING),  # stopped is billed: a cost leak
    (D, P.DEALLOCATING): (None, Reason.DEALLOCATING),
    (D, P.DEALLOCATED): (None, Reason.RECONCILED),
    (D, P.UNKNOWN): (None, WAIT),
    (D, P.HIBERNATED): (None, Reason.RECONCILED),  # hibernated is deallocated, memory kept
}


@pytest.mark.parametrize(("desired", "power"), sorted(TABLE, key=str))
def test_desired_by_observed(desired: DesiredState, power: PowerState) -> None:
    action, reason = TABLE[(desired, power)]
    d = decide(situation(desired, power))
    assert (d.action, d.reason) == (action, reason)
    assert d.ready == (reason is Reason.RECONCILED)
    if action is not None:
        assert d.trigger is Trigger.SPEC
        assert d.last_operation == LastOperation(action=action, trigger=Trigger.SPEC, started_at=NOW)
        assert d.message == f"{action.verb} requested; waiting for PowerState/{desired.value.lower()}"
    else:
        assert d.trigger is None
    assert d.requeue_after is not None and d.requeue_after > 0


@pytest.mark.parametrize("power", list(PowerState))
@pytest.mark.parametrize("desired", OVERRIDES)
@pytest.mark.parametrize("prov", [ProvisioningState.UPDATING, ProvisioningState.CREATING, ProvisioningState.MIGRATING])
def test_never_acts_while_azure_is_busy(desired: DesiredState, power: PowerState, prov: ProvisioningState) -> None:
    d = decide(situation(desired, observation=obs(power, prov)))
    assert d.action is None
    assert not d.ready
    assert d.requeue_after == T.transition_poll


@pytest.mark.parametrize("power", list(PowerState))
@pytest.mark.parametrize("desired", OVERRIDES)
def test_provisioning_failed_does_not_block_a_settled_vm(desired: DesiredState, power: PowerState) -> None:
    failure = Failure(Reason.ALLOCATION_FAILED, "AllocationFailed", "no capacity")
    d = decide(situation(desired, observation=obs(power, ProvisioningState.FAILED, failure)))
    assert (d.action, d.reason) == TABLE[(desired, power)]


def test_busy_at_target_waits_with_an_honest_message() -> None:
    d = decide(situation(R, observation=obs(P.RUNNING, ProvisioningState.UPDATING)))
    assert d.reason is WAIT
    assert "running as desired" in d.message and "updating" in d.message


def test_missing_power_state_is_reported_not_guessed() -> None:
    d = decide(situation(D, P.UNKNOWN))
    assert d.action is None
    assert "no power state" in d.message


@pytest.mark.parametrize(("in_flight", "desired"), list(itertools.product(Action, OVERRIDES)))
@pytest.mark.parametrize("power", list(PowerState))
def test_never_a_second_operation_while_one_is_in_flight(in_flight: Action, desired: DesiredState, power: PowerState) -> None:
    last = LastOperation(action=in_flight, trigger=Trigger.SPEC, started_at=NOW - dt.timedelta(seconds=12))
    d = decide(situation(desired, power, in_flight=in_flight, last_operation=last))
    assert d.action is None
    if in_flight.target is desired.power_state:
        assert d.reason is (Reason.STARTING if in_flight is START else Reason.DEALLOCATING)
        assert d.message == f"{in_flight.verb} requested 12s ago; waiting for PowerState/{desired.value.lower()}"
    else:
        assert d.reason is WAIT
        assert f"a {in_flight.verb} is in flight" in d.message
    assert d.last_operation == last  # the record stays InProgress until the poller finishes it


def test_converged_records_generation_and_clears_start_failures() -> None:
    failures = StartFailures(2, "AllocationFailed", NOW - dt.timedelta(seconds=1))
    d = decide(situation(R, P.RUNNING, start_failures=failures, converged_generation=1))
    assert d.ready and d.converged_generation == 2 and d.start_failures is None
    assert d.requeue_after == T.resync
    assert d.message == "VM is running as desired"


@pytest.mark.parametrize(("desired", "power"), [(R, P.DEALLOCATED), (R, P.STOPPED), (D, P.RUNNING), (D, P.STOPPED)])
def test_drift_is_corrected_under_enforce(desired: DesiredState, power: PowerState) -> None:
    d = decide(situation(desired, power, converged_generation=2))
    assert d.action is not None and d.trigger is Trigger.DRIFT


@pytest.mark.parametrize(("desired", "power"), [(R, P.DEALLOCATED), (R, P.STOPPED), (D, P.RUNNING), (D, P.STOPPED)])
def test_drift_is_only_reported_under_report(desired: DesiredState, power: PowerState) -> None:
    s = situation(desired, power, spec=spec(desired, DriftPolicy.REPORT), converged_generation=2)
    d = decide(s)
    assert (d.action, d.reason) == (None, Reason.DRIFTED)
    assert "driftPolicy Report" in d.message and desired.value in d.message
    assert d.converged_generation == 2


def test_report_still_acts_on_a_new_desired_state() -> None:
    s = situation(R, P.DEALLOCATED, spec=spec(R, DriftPolicy.REPORT), generation=3, converged_generation=2)
    d = decide(s)
    assert (d.action, d.trigger) == (START, Trigger.SPEC)


@pytest.mark.parametrize(("desired", "power"), [(R, P.STOPPING), (R, P.DEALLOCATING), (D, P.STARTING), (D, P.STOPPING)])
def test_out_of_band_transition_under_report_is_drift(desired: DesiredState, power: PowerState) -> None:
    s = situation(desired, power, spec=spec(desired, DriftPolicy.REPORT), converged_generation=2)
    assert decide(s).reason is Reason.DRIFTED


def test_out_of_band_transition_under_enforce_waits_then_corrects() -> None:
    s = situation(D, P.STARTING, converged_generation=2)
    d = decide(s)
    assert (d.action, d.reason) == (None, WAIT)
    assert "will deallocate when it settles" in d.message
    d = decide(situation(D, P.RUNNING, converged_generation=2))
    assert (d.action, d.trigger) == (DEALLOC, Trigger.DRIFT)


def test_invalid_spec_names_the_field_and_keeps_records() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW, result=Result.SUCCEEDED)
    d = decide(situation(spec=SpecError("spec.desiredState", 'unsupported value "On"'), last_operation=last))
    assert (d.action, d.reason) == (None, Reason.INVALID_SPEC)
    assert d.message == 'spec.desiredState: unsupported value "On"'
    assert d.last_operation == last and d.requeue_after is None


@pytest.mark.parametrize("reason", [Reason.NOT_MANAGED, Reason.NAMESPACE_NOT_ALLOWED, Reason.DUPLICATE_VM])
def test_refusal_never_acts(reason: Reason) -> None:
    refusal = Failure(reason, reason.value, "add the tag gpuvm-managed=true")
    d = decide(situation(R, P.DEALLOCATED, refusal=refusal))
    assert (d.action, d.reason, d.message) == (None, reason, "add the tag gpuvm-managed=true")
    assert d.requeue_after == T.denied_retry


@pytest.mark.parametrize(
    ("failure", "wait"),
    [
        (Failure(Reason.VM_NOT_FOUND, "ResourceNotFound", "no such VM"), T.denied_retry),
        (Failure(Reason.AUTHENTICATION_FAILED, "CredentialUnavailable", "set AZURE_CLIENT_ID"), T.denied_retry),
        (Failure(Reason.AUTHORIZATION_FAILED, "AuthorizationFailed", "needs read"), T.denied_retry),
        (Failure(Reason.THROTTLED, "TooManyRequests", "slow down", retry_after=17.0), 17.0),
        (Failure(Reason.AZURE_ERROR, "InternalServerError", "oops"), T.error_retry),
    ],
)
def test_observation_failure(failure: Failure, wait: float) -> None:
    d = decide(situation(observation=None, observation_failure=failure))
    assert (d.action, d.reason, d.message, d.requeue_after) == (None, failure.reason, failure.message, wait)


def test_deletion_with_deallocate_policy_deallocates() -> None:
    s = situation(R, P.RUNNING, spec=spec(R, deletion=DeletionPolicy.DEALLOCATE), deleting=True, converged_generation=2)
    d = decide(s)
    assert (d.action, d.trigger) == (DEALLOC, Trigger.DELETION)
    d = decide(situation(R, P.DEALLOCATED, spec=spec(R, deletion=DeletionPolicy.DEALLOCATE), deleting=True))
    assert d.ready and d.action is None


def test_deletion_with_retain_policy_leaves_the_vm() -> None:
    d = decide(situation(R, P.RUNNING, spec=spec(D, deletion=DeletionPolicy.RETAIN), deleting=True))
    assert d.action is None and d.ready
    assert "Retain" in d.message


def test_deletion_ignores_report_drift_policy() -> None:
    s = situation(
        R, P.RUNNING, spec=spec(R, DriftPolicy.REPORT, DeletionPolicy.DEALLOCATE), deleting=True, converged_generation=2
    )
    assert decide(s).action is DEALLOC


def test_capacity_backoff_holds_starts_until_due() -> None:
    failures = StartFailures(3, "ZonalAllocationFailed", NOW + dt.timedelta(seconds=90))
    d = decide(situation(R, P.DEALLOCATED, start_failures=failures))
    assert (d.action, d.reason) == (None, Reason.ALLOCATION_FAILED)
    assert d.requeue_after == 90
    assert "start failed 3 times (last: ZonalAllocationFailed); next retry at 2026-11-25T12:01:30Z" in d.message
    d = decide(situation(R, P.DEALLOCATED, start_failures=StartFailures(3, "OperationNotAllowed", NOW + dt.timedelta(seconds=5))))
    assert d.reason is Reason.QUOTA_EXCEEDED
    due = StartFailures(3, "ZonalAllocationFailed", NOW)
    d = decide(situation(R, P.DEALLOCATED, start_failures=due))
    assert d.action is START and d.start_failures == due


def test_capacity_backoff_does_not_hold_deallocation() -> None:
    failures = StartFailures(3, "AllocationFailed", NOW + dt.timedelta(seconds=90))
    d = decide(situation(D, P.RUNNING, start_failures=failures))
    assert d.action is DEALLOC


@pytest.mark.parametrize(
    "failure",
    [
        Failure(Reason.THROTTLED, "TooManyRequests", "throttled", retry_after=20.0),
        Failure(Reason.AUTHORIZATION_FAILED, "AuthorizationFailed", "missing start/action"),
        Failure(Reason.AZURE_ERROR, "InternalServerError", "boom"),
        Failure(WAIT, "OperationNotAllowed", "another operation is in progress"),
    ],
)
def test_request_failure_waits_its_delay_then_retries(failure: Failure) -> None:
    delay = retry_delay(failure, timing=T)
    s = situation(R, P.DEALLOCATED, request_failure=RequestFailure(failure, NOW - dt.timedelta(seconds=1)))
    d = decide(s)
    assert (d.action, d.reason) == (None, failure.reason)
    assert d.requeue_after == pytest.approx(delay - 1)
    assert failure.message in d.message and "next attempt at" in d.message
    later = situation(R, P.DEALLOCATED, request_failure=RequestFailure(failure, NOW - dt.timedelta(seconds=delay)))
    assert decide(later).action is START


def test_restart_mid_start_waits_without_a_duplicate() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW - dt.timedelta(minutes=1))
    d = decide(situation(R, P.STARTING, last_operation=last))  # no in_flight: a new process
    assert (d.action, d.reason) == (None, Reason.STARTING)
    assert d.last_operation == last


def test_restart_mid_start_finishes_the_record_from_observation() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW - dt.timedelta(minutes=3))
    d = decide(situation(R, P.RUNNING, last_operation=last))
    assert d.ready and d.action is None
    assert d.last_operation == LastOperation(START, Trigger.SPEC, last.started_at, Result.SUCCEEDED, NOW)


def test_restart_after_a_failed_start_counts_the_capacity_failure() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW - dt.timedelta(minutes=3))
    failure = Failure(Reason.ALLOCATION_FAILED, "AllocationFailed", "no A100 capacity in eastus")
    s = situation(R, observation=obs(P.DEALLOCATED, ProvisioningState.FAILED, failure), last_operation=last)
    d = decide(s, jitter=0.5)
    assert (d.action, d.reason) == (None, Reason.ALLOCATION_FAILED)
    assert d.last_operation.result is Result.FAILED and d.last_operation.error_code == "AllocationFailed"
    assert d.start_failures == StartFailures(1, "AllocationFailed", NOW + dt.timedelta(seconds=T.capacity_backoff_base))


def test_restart_after_an_unexplained_end_asks_again() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW - dt.timedelta(minutes=3))
    d = decide(situation(R, P.DEALLOCATED, last_operation=last))
    assert d.action is START
    assert d.last_operation.result is Result.IN_PROGRESS and d.last_operation.started_at == NOW


def test_complete_operation_success_clears_start_failures() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW)
    done, failures = complete_operation(
        last, failure=None, start_failures=StartFailures(2, "AllocationFailed", NOW), now=NOW, timing=T, jitter=0.0
    )
    assert done.result is Result.SUCCEEDED and done.finished_at == NOW and failures is None


def test_complete_operation_counts_capacity_failures_with_backoff() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW)
    failure = Failure(Reason.ALLOCATION_FAILED, "ZonalAllocationFailed", "zone 1 has no capacity")
    done, f1 = complete_operation(last, failure=failure, start_failures=None, now=NOW, timing=T, jitter=0.5)
    assert done.result is Result.FAILED and done.error_code == "ZonalAllocationFailed"
    assert f1 == StartFailures(1, "ZonalAllocationFailed", NOW + dt.timedelta(seconds=60))
    _, f2 = complete_operation(last, failure=failure, start_failures=f1, now=NOW, timing=T, jitter=0.5)
    assert f2.count == 2 and f2.next_retry_at == NOW + dt.timedelta(seconds=120)


def test_complete_operation_other_failures_are_not_capacity() -> None:
    last = LastOperation(action=START, trigger=Trigger.SPEC, started_at=NOW)
    failure = Failure(Reason.AZURE_ERROR, "InternalServerError", "boom")
    done, failures = complete_operation(last, failure=failure, start_failures=None, now=NOW, timing=T, jitter=0.5)
    assert done.result is Result.FAILED and failures is None
    dealloc = LastOperation(action=DEALLOC, trigger=Trigger.SPEC, started_at=NOW)
    capacity = Failure(Reason.ALLOCATION_FAILED, "AllocationFailed", "x")
    assert complete_operation(dealloc, failure=capacity, start_failures=None, now=NOW, timing=T, jitter=0.5)[1] is None


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999])
def test_capacity_backoff_grows_caps_and_jitters(jitter: float) -> None:
    delays = [capacity_backoff(n, timing=T, jitter=jitter) for n in range(1, 12)]
    factor = 0.75 + 0.5 * jitter
    assert delays[0] == pytest.approx(60 * factor)
    assert delays[1] == pytest.approx(120 * factor)
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert max(delays) == pytest.approx(T.capacity_backoff_max * factor)
    assert 0.75 * 60 <= delays[0] < 1.25 * 60
    assert capacity_backoff(10_000, timing=T, jitter=jitter) == pytest.approx(T.capacity_backoff_max * factor)


def test_decision_is_pure() -> None:
    s = situation(R, P.DEALLOCATED)
    assert decide(s) == decide(s)
    assert isinstance(decide(s), Decision)
