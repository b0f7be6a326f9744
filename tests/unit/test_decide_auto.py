"""desiredState Auto in the state machine: the demand resolves it, every other rule stays.

The overrides' rules are in test_decide.py; here Auto is held to them (same action and reason
for every desired x observed pair once the demand resolves it) and to what only Auto has:
triggers Claim/Schedule/Idle, drift that is not demand changing, the idle grace, requeues that
come no later than the demand's next change.
"""

from __future__ import annotations

import datetime as dt

import pytest

from controller.decide import LastOperation, Result, Situation, StartFailures, Timing, decide
from controller.demand import DecidedBy, Demand, LiveClaim, evaluate
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
from controller.reasons import Reason
from tests.unit.test_decide import TABLE

NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)
VM = VmRef("00000000-0000-0000-0000-000000000001", "rg-gpu", "vm-a100")
T = Timing()
P = PowerState
START, DEALLOC = Action.START, Action.DEALLOCATE
WAIT = Reason.WAITING_FOR_TRANSITION
R, D = DesiredState.RUNNING, DesiredState.DEALLOCATED


def auto_spec(drift: DriftPolicy = DriftPolicy.ENFORCE, deletion: DeletionPolicy = DeletionPolicy.RETAIN) -> GpuVmSpec:
    return GpuVmSpec(VM, DesiredState.AUTO, drift, deletion, idle_timeout=dt.timedelta(minutes=10))


def obs(power: PowerState, prov: ProvisioningState = ProvisioningState.SUCCEEDED) -> Observation:
    return Observation(power_state=power, provisioning_state=prov, observed_at=NOW)


CLAIMED = Demand(wanted=True, decided_by=DecidedBy.CLAIMS, active_claims=2, claims=("a", "b"))
SCHEDULED = Demand(wanted=True, decided_by=DecidedBy.SCHEDULE)
IDLE_OFF = Demand(wanted=False, decided_by=DecidedBy.IDLE, idle_since=NOW - dt.timedelta(minutes=30),
                  deallocate_at=NOW - dt.timedelta(minutes=20))
GRACE = Demand(wanted=False, decided_by=DecidedBy.IDLE, idle_since=NOW - dt.timedelta(minutes=4),
               deallocate_at=NOW + dt.timedelta(minutes=6), grace_until=NOW + dt.timedelta(minutes=6),
               recheck_at=NOW + dt.timedelta(minutes=6))


def situation(demand: Demand | None, power: PowerState = P.DEALLOCATED, **kw) -> Situation:
    base = dict(spec=auto_spec(), generation=2, now=NOW, observation=obs(power), demand=demand)
    base.update(kw)
    return Situation(**base)


@pytest.mark.parametrize(("desired", "power"), sorted(TABLE, key=str))
def test_auto_follows_every_rule_of_the_override_it_resolves_to(desired: DesiredState, power: PowerState) -> None:
    demand = CLAIMED if desired is R else IDLE_OFF
    d = decide(situation(demand, power))
    assert (d.action, d.reason) == TABLE[(desired, power)]
    if d.action is not None:
        expected = Trigger.CLAIM if desired is R else Trigger.IDLE
        assert d.trigger is expected and d.last_operation == LastOperation(d.action, expected, NOW)


@pytest.mark.parametrize(("demand", "trigger"), [(CLAIMED, Trigger.CLAIM), (SCHEDULED, Trigger.SCHEDULE)])
def test_demand_starts_the_vm_with_its_trigger(demand: Demand, trigger: Trigger) -> None:
    d = decide(situation(demand, P.DEALLOCATED))
    assert (d.action, d.trigger) == (START, trigger)


def test_idle_deadline_passed_deallocates_with_trigger_idle() -> None:
    last = LastOperation(START, Trigger.CLAIM, NOW - dt.timedelta(hours=1), Result.SUCCEEDED, NOW - dt.timedelta(minutes=58))
    d = decide(situation(IDLE_OFF, P.RUNNING, last_operation=last, converged_generation=2))
    assert (d.action, d.trigger) == (DEALLOC, Trigger.IDLE)


def test_demand_changing_is_not_drift_even_under_report() -> None:
    last = LastOperation(START, Trigger.CLAIM, NOW - dt.timedelta(hours=1), Result.SUCCEEDED, NOW - dt.timedelta(minutes=58))
    s = situation(IDLE_OFF, P.RUNNING, spec=auto_spec(DriftPolicy.REPORT), last_operation=last, converged_generation=2)
    d = decide(s)
    assert (d.action, d.trigger) == (DEALLOC, Trigger.IDLE)


def test_the_grace_keeps_a_running_vm_and_looks_again_when_it_ends() -> None:
    d = decide(situation(GRACE, P.RUNNING, converged_generation=2))
    assert d.ready and d.action is None
    assert d.message == ("VM is running as desired by Auto: idle since 2026-11-25T11:56:00Z, "
                         "switched off at 2026-11-25T12:06:00Z")
    assert d.requeue_after == T.resync  # the deadline is 6 min away: the usual resync comes first
    ending = Demand(wanted=False, decided_by=DecidedBy.IDLE, idle_since=NOW - dt.timedelta(minutes=10),
                    deallocate_at=NOW + dt.timedelta(seconds=25), grace_until=NOW + dt.timedelta(seconds=25),
                    recheck_at=NOW + dt.timedelta(seconds=25))
    d = decide(situation(ending, P.RUNNING, converged_generation=2))
    assert d.ready and d.requeue_after == 25


def test_requeue_comes_no_later_than_the_demand_changes_and_never_later_than_before() -> None:
    soon = Demand(wanted=True, decided_by=DecidedBy.CLAIMS, active_claims=1, recheck_at=NOW + dt.timedelta(seconds=3))
    assert decide(situation(soon, P.RUNNING)).requeue_after == 3
    late = Demand(wanted=True, decided_by=DecidedBy.CLAIMS, active_claims=1, recheck_at=NOW + dt.timedelta(hours=5))
    assert decide(situation(late, P.RUNNING)).requeue_after == T.resync
    passed = Demand(wanted=True, decided_by=DecidedBy.CLAIMS, active_claims=1, recheck_at=NOW - dt.timedelta(seconds=3))
    assert decide(situation(passed, P.RUNNING)).requeue_after == 0


def test_reconciled_messages_say_what_wants_the_vm() -> None:
    assert decide(situation(CLAIMED, P.RUNNING)).message == "VM is running as desired by Auto: wanted by 2 live claims"
    one = Demand(wanted=True, decided_by=DecidedBy.CLAIMS, active_claims=1, claims=("a",))
    assert decide(situation(one, P.RUNNING)).message.endswith("wanted by 1 live claim")
    assert decide(situation(SCHEDULED, P.RUNNING)).message.endswith("wanted by the schedule")
    assert decide(situation(IDLE_OFF, P.DEALLOCATED)).message == "VM is deallocated as desired by Auto: nothing wants it"


def test_unknown_demand_changes_nothing() -> None:
    for power in (P.RUNNING, P.DEALLOCATED):
        d = decide(situation(None, power))
        assert (d.action, d.reason) == (None, WAIT) and "not known yet" in d.message


def test_out_of_band_change_while_demand_holds_is_drift() -> None:
    """Claims want it running, our start reached Running, then someone deallocated it in the portal."""
    last = LastOperation(START, Trigger.CLAIM, NOW - dt.timedelta(hours=1), Result.SUCCEEDED, NOW - dt.timedelta(minutes=58))
    d = decide(situation(CLAIMED, P.DEALLOCATED, last_operation=last, converged_generation=2))
    assert (d.action, d.trigger) == (START, Trigger.DRIFT)
    s = situation(CLAIMED, P.DEALLOCATED, spec=auto_spec(DriftPolicy.REPORT), last_operation=last, converged_generation=2)
    d = decide(s)
    assert (d.action, d.reason) == (None, Reason.DRIFTED)
    assert "desiredState Auto wants it running (wanted by 2 live claims)" in d.message


def test_a_failed_start_is_retried_as_demand_not_drift() -> None:
    last = LastOperation(START, Trigger.CLAIM, NOW - dt.timedelta(minutes=5), Result.FAILED, NOW - dt.timedelta(minutes=4),
                         "AllocationFailed", "no capacity")
    s = situation(CLAIMED, P.DEALLOCATED, spec=auto_spec(DriftPolicy.REPORT), last_operation=last, converged_generation=2)
    assert (decide(s).action, decide(s).trigger) == (START, Trigger.CLAIM)


def test_a_new_generation_is_never_drift() -> None:
    last = LastOperation(START, Trigger.SPEC, NOW - dt.timedelta(hours=1), Result.SUCCEEDED, NOW - dt.timedelta(minutes=58))
    d = decide(situation(CLAIMED, P.DEALLOCATED, last_operation=last, converged_generation=1))
    assert (d.action, d.trigger) == (START, Trigger.CLAIM)


def test_a_start_wanted_while_a_deallocation_runs_waits_for_it() -> None:
    last = LastOperation(DEALLOC, Trigger.IDLE, NOW - dt.timedelta(seconds=20))
    d = decide(situation(CLAIMED, P.DEALLOCATING, in_flight=DEALLOC, last_operation=last))
    assert (d.action, d.reason) == (None, WAIT)
    assert d.message == "a deallocate is in flight; the VM will be running after it completes"
    d = decide(situation(CLAIMED, P.DEALLOCATING, last_operation=last))  # a restarted operator: no poller
    assert (d.action, d.reason) == (None, WAIT)
    d = decide(situation(CLAIMED, P.DEALLOCATED, last_operation=last))
    assert (d.action, d.trigger) == (START, Trigger.CLAIM)
    assert d.last_operation == LastOperation(START, Trigger.CLAIM, NOW)


def test_capacity_backoff_holds_auto_starts_too() -> None:
    failures = StartFailures(2, "ZonalAllocationFailed", NOW + dt.timedelta(seconds=90))
    d = decide(situation(CLAIMED, P.DEALLOCATED, start_failures=failures))
    assert (d.action, d.reason, d.requeue_after) == (None, Reason.ALLOCATION_FAILED, 90)


@pytest.mark.parametrize(("policy", "action"), [(DeletionPolicy.DEALLOCATE, DEALLOC), (DeletionPolicy.RETAIN, None)])
def test_deletion_wins_over_demand(policy: DeletionPolicy, action: Action | None) -> None:
    d = decide(situation(CLAIMED, P.RUNNING, spec=auto_spec(deletion=policy), deleting=True))
    assert d.action is action
    if action:
        assert d.trigger is Trigger.DELETION


@pytest.mark.parametrize("desired", [R, D])
def test_overrides_ignore_any_demand_given(desired: DesiredState) -> None:
    spec = GpuVmSpec(VM, desired, DriftPolicy.ENFORCE, DeletionPolicy.RETAIN)
    contrary = IDLE_OFF if desired is R else CLAIMED
    power = P.DEALLOCATED if desired is R else P.RUNNING
    d = decide(Situation(spec=spec, generation=2, now=NOW, observation=obs(power), demand=contrary))
    assert (d.action, d.trigger) == (START if desired is R else DEALLOC, Trigger.SPEC)
    soon = Demand(wanted=True, decided_by=DecidedBy.SPEC, recheck_at=NOW + dt.timedelta(seconds=1))
    d = decide(Situation(spec=spec, generation=2, now=NOW, observation=obs(desired.power_state), demand=soon))
    assert d.requeue_after == T.resync  # claim expiries of an override are the engine's timers, not the VM's


def test_a_days_story_through_evaluate_and_decide() -> None:
    """Two claims, one ends, the other ends, the grace runs out: start (Claim), keep, keep, deallocate (Idle)."""
    spec = auto_spec()
    power, idle_since, last = P.DEALLOCATED, None, None
    story = [
        (0, [LiveClaim("a"), LiveClaim("b")], START, Trigger.CLAIM),
        (5, [LiveClaim("b")], None, None),  # the first job finished: the VM stays up for the other
        (20, [], None, None),  # both done: the grace starts
        (29, [], None, None),
        (30, [], DEALLOC, Trigger.IDLE),  # idleTimeout 10m after the last claim ended
    ]
    for minute, claims, action, trigger in story:
        now = NOW + dt.timedelta(minutes=minute)
        demand = evaluate(spec, claims=claims, schedule=None, now=now, idle_since=idle_since, vm_on=power is P.RUNNING)
        d = decide(Situation(spec=spec, generation=1, now=now, observation=obs(power), demand=demand,
                             last_operation=last, converged_generation=1))
        assert (d.action, d.trigger) == (action, trigger), f"minute {minute}: {d}"
        if d.action is not None:
            power = d.action.target
            last = LastOperation(d.action, d.trigger, now, Result.SUCCEEDED, now)
        idle_since = demand.idle_since
    assert power is P.DEALLOCATED and idle_since == NOW + dt.timedelta(minutes=20)
