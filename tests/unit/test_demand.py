"""The demand core: claim liveness, a GpuVm's demand and what it predicts, a claim's status.

The rules are the contract's (../shared/design/demand.md, docs/api.md): one test per rule, and
a step-by-step replay that holds the predicted transitions to what evaluate() itself says at
every minute of the future.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from controller.demand import (
    Claim,
    ClaimPhase,
    ClaimReason,
    ClaimState,
    DecidedBy,
    Demand,
    GpuVmView,
    LiveClaim,
    Liveness,
    OwnerPod,
    ScheduleEdge,
    ScheduleView,
    Transition,
    claim_event,
    claim_state,
    evaluate,
    gpuvm_view,
    is_on,
    liveness,
    owner_pods_to_read,
    parse_claim,
)
from controller.gpuvm import GpuVmSpec, VmRef
from controller.power import Action, DeletionPolicy, DesiredState, DriftPolicy, PowerState, Trigger
from controller.reasons import SpecError

NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)
VM = VmRef("00000000-0000-0000-0000-000000000001", "rg-gpu", "vm-a100")
RUN, OFF = PowerState.RUNNING, PowerState.DEALLOCATED
IDLE, SCHED = Trigger.IDLE, Trigger.SCHEDULE


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def at(m: float) -> dt.datetime:
    return NOW + minutes(m)


def spec(desired: DesiredState = DesiredState.AUTO, idle: float = 10) -> GpuVmSpec:
    return GpuVmSpec(VM, desired, DriftPolicy.ENFORCE, DeletionPolicy.RETAIN, idle_timeout=minutes(idle))


def claim(**kw) -> Claim:
    base = dict(namespace="ml", name="train-1", gpu_vm="a100", created=at(-30))
    base.update(kw)
    return Claim(**base)


# ----------------------------------------------------------------------------- parse_claim


def test_parse_claim_reads_what_liveness_needs() -> None:
    body = {
        "metadata": {
            "namespace": "ml", "name": "train-7f2c", "generation": 3, "creationTimestamp": "2026-11-25T11:00:00Z",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": "train-7f2c-xk2p9", "uid": "u-1"},
                {"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u-2"},
            ],
        },
        "spec": {"gpuVm": "a100", "expiresAt": "2026-11-25T14:00:00Z", "leaseDurationSeconds": 120,
                 "renewTime": "2026-11-25T11:59:00Z"},
    }
    assert parse_claim(body) == Claim(
        namespace="ml", name="train-7f2c", gpu_vm="a100", generation=3, created=at(-60), deleting=False,
        expires_at=at(120), lease_duration=dt.timedelta(seconds=120), renew_time=at(-1),
        owner_pods=(OwnerPod("train-7f2c-xk2p9", "u-1"),),
    )


def test_parse_claim_being_deleted() -> None:
    body = {"metadata": {"name": "c", "deletionTimestamp": "2026-11-25T12:00:00Z"}, "spec": {"gpuVm": "a100"}}
    parsed = parse_claim(body)
    assert isinstance(parsed, Claim) and parsed.deleting


@pytest.mark.parametrize(
    ("spec_", "field"),
    [
        ({}, "spec.gpuVm"),
        ({"gpuVm": ""}, "spec.gpuVm"),
        ({"gpuVm": 7}, "spec.gpuVm"),
        ({"gpuVm": "a", "expiresAt": "tomorrow"}, "spec.expiresAt"),
        ({"gpuVm": "a", "leaseDurationSeconds": 0}, "spec.leaseDurationSeconds"),
        ({"gpuVm": "a", "leaseDurationSeconds": True}, "spec.leaseDurationSeconds"),
        ({"gpuVm": "a", "leaseDurationSeconds": "120"}, "spec.leaseDurationSeconds"),
    ],
)
def test_parse_claim_names_the_bad_field(spec_: dict, field: str) -> None:
    parsed = parse_claim({"metadata": {"name": "c"}, "spec": spec_})
    assert isinstance(parsed, SpecError) and parsed.field == field


def test_parse_claim_survives_garbage() -> None:
    assert isinstance(parse_claim({"metadata": "x", "spec": None}), SpecError)


def test_owner_pods_to_read() -> None:
    claims = [
        claim(name="a", owner_pods=(OwnerPod("p1", "u1"),)),
        claim(name="b", owner_pods=(OwnerPod("p2", "u2"), OwnerPod("p1", "u1"))),
        claim(name="c", deleting=True, owner_pods=(OwnerPod("p3", "u3"),)),
        claim(name="d", namespace="other", owner_pods=(OwnerPod("p1", "u9"),)),
    ]
    assert owner_pods_to_read(claims) == {("ml", "p1"), ("ml", "p2"), ("other", "p1")}


# ----------------------------------------------------------------------------- liveness


def test_a_plain_claim_is_live_until_it_changes() -> None:
    assert liveness(claim(), now=NOW) == Liveness(True, until=None)


def test_a_claim_being_deleted_is_released() -> None:
    live = liveness(claim(deleting=True, expires_at=at(60)), now=NOW)
    assert (live.live, live.reason) == (False, ClaimReason.DELETED)


@pytest.mark.parametrize(("phase", "is_live"), [("Succeeded", False), ("Failed", False), ("Running", True),
                                                ("Pending", True), ("Unknown", True)])
def test_a_terminated_owner_pod_releases_the_claim(phase: str, is_live: bool) -> None:
    c = claim(owner_pods=(OwnerPod("job-x", "u-1"),))
    live = liveness(c, now=NOW, pod_phases={"u-1": phase})
    assert live.live is is_live
    if not is_live:
        assert live.reason is ClaimReason.OWNER_FINISHED and f"owner Pod job-x has finished (phase {phase})" == live.message


def test_an_owner_pod_not_seen_is_not_held_against_the_claim() -> None:
    c = claim(owner_pods=(OwnerPod("job-x", "u-1"),))
    assert liveness(c, now=NOW, pod_phases={"other-uid": "Failed"}).live


def test_owner_is_matched_by_uid_not_by_name() -> None:
    """A new Pod with the old one's name (a StatefulSet, a re-created Job pod) is another owner."""
    c = claim(owner_pods=(OwnerPod("job-x", "u-old"),))
    assert liveness(c, now=NOW, pod_phases={"u-new": "Succeeded"}).live


def test_expires_at() -> None:
    assert liveness(claim(expires_at=at(5)), now=NOW) == Liveness(True, until=at(5))
    for end in (at(0), at(-1)):
        live = liveness(claim(expires_at=end), now=NOW)
        assert (live.live, live.reason) == (False, ClaimReason.EXPIRED)
        assert live.message == f"expired at {end.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def test_lease() -> None:
    lease = dt.timedelta(seconds=120)
    assert liveness(claim(lease_duration=lease, renew_time=at(-1)), now=NOW) == Liveness(True, until=at(1))
    lapsed = liveness(claim(lease_duration=lease, renew_time=at(-2)), now=NOW)
    assert (lapsed.live, lapsed.reason) == (False, ClaimReason.EXPIRED)
    assert lapsed.message == "lease not renewed since 2026-11-25T11:58:00Z (leaseDurationSeconds 120)"
    # renewed again after lapsing: live again, the claim's current fields are all that count
    assert liveness(claim(lease_duration=lease, renew_time=at(-0.5)), now=NOW).live


def test_lease_without_renew_time_counts_from_creation() -> None:
    lease = dt.timedelta(seconds=120)
    assert liveness(claim(lease_duration=lease, created=at(-1)), now=NOW) == Liveness(True, until=at(1))
    assert not liveness(claim(lease_duration=lease, created=at(-3)), now=NOW).live


def test_the_earlier_of_lease_and_expiry_ends_it() -> None:
    lease = dt.timedelta(minutes=2)
    assert liveness(claim(lease_duration=lease, renew_time=NOW, expires_at=at(1)), now=NOW).until == at(1)
    assert liveness(claim(lease_duration=lease, renew_time=NOW, expires_at=at(5)), now=NOW).until == at(2)


def test_owner_finished_wins_over_expiry() -> None:
    c = claim(expires_at=at(-1), owner_pods=(OwnerPod("p", "u"),))
    assert liveness(c, now=NOW, pod_phases={"u": "Succeeded"}).reason is ClaimReason.OWNER_FINISHED


# ----------------------------------------------------------------------------- evaluate: overrides


@pytest.mark.parametrize("desired", [DesiredState.RUNNING, DesiredState.DEALLOCATED])
def test_an_override_ignores_demand_but_counts_claims(desired: DesiredState) -> None:
    claims = [LiveClaim("b", at(30)), LiveClaim("a"), LiveClaim("c", at(20))]
    schedule = ScheduleView(True, (ScheduleEdge(at(60), False),))
    d = evaluate(spec(desired), claims=claims, schedule=schedule, now=NOW, idle_since=at(-60), vm_on=True)
    assert d == Demand(
        wanted=desired is DesiredState.RUNNING, decided_by=DecidedBy.SPEC, active_claims=3, claims=("a", "b", "c"),
        idle_since=None, deallocate_at=None, next_transitions=(), recheck_at=at(20),
    )
    assert d.trigger is Trigger.SPEC


# ----------------------------------------------------------------------------- evaluate: Auto


def auto(claims=(), schedule=None, *, idle=10, idle_since=None, vm_on=True, now=NOW) -> Demand:
    return evaluate(spec(idle=idle), claims=list(claims), schedule=schedule, now=now, idle_since=idle_since, vm_on=vm_on)


def test_claims_want_the_vm() -> None:
    d = auto([LiveClaim("train")], vm_on=False)
    assert (d.wanted, d.decided_by, d.active_claims, d.claims) == (True, DecidedBy.CLAIMS, 1, ("train",))
    assert (d.idle_since, d.deallocate_at, d.next_transitions, d.recheck_at) == (None, None, (), None)
    assert d.target(NOW) is RUN and d.trigger is Trigger.CLAIM


def test_a_claim_with_an_end_predicts_the_switch_off() -> None:
    d = auto([LiveClaim("train", at(60))])
    assert d.next_transitions == (Transition(at(70), OFF, IDLE),)
    assert d.deallocate_at == at(70) and d.recheck_at == at(60)


def test_the_last_claim_to_end_decides() -> None:
    d = auto([LiveClaim("a", at(60)), LiveClaim("b", at(90)), LiveClaim("c", at(30))])
    assert d.next_transitions == (Transition(at(100), OFF, IDLE),)
    assert d.recheck_at == at(30)


def test_a_claim_without_end_predicts_nothing() -> None:
    d = auto([LiveClaim("a", at(60)), LiveClaim("forever")])
    assert d.next_transitions == () and d.deallocate_at is None and d.recheck_at == at(60)


def test_idle_starts_the_grace_now_and_switches_off_after_it() -> None:
    d = auto()
    assert (d.wanted, d.decided_by, d.idle_since, d.deallocate_at) == (False, DecidedBy.IDLE, NOW, at(10))
    assert d.next_transitions == (Transition(at(10), OFF, IDLE),)
    assert d.recheck_at == at(10) and d.trigger is Trigger.IDLE
    assert d.target(NOW) is RUN and d.target(at(9.99)) is RUN and d.target(at(10)) is OFF


def test_the_grace_continues_from_the_idle_since_written_before() -> None:
    d = auto(idle_since=at(-4))
    assert (d.idle_since, d.deallocate_at, d.recheck_at) == (at(-4), at(6), at(6))


def test_an_idle_since_in_the_future_is_clamped_to_now() -> None:
    assert auto(idle_since=at(5)).idle_since == NOW


def test_past_the_deadline_the_switch_off_is_due() -> None:
    d = auto(idle_since=at(-30))
    assert d.deallocate_at == at(-20) and d.target(NOW) is OFF
    assert d.next_transitions == () and d.recheck_at is None


def test_an_idle_vm_that_is_off_stays_off() -> None:
    """The grace keeps a running VM running; it never starts one."""
    d = auto(vm_on=False)
    assert d.idle_since == NOW and d.deallocate_at is None and d.target(NOW) is OFF
    assert d.next_transitions == ()


def test_demand_during_the_grace_cancels_it() -> None:
    d = auto([LiveClaim("late")], idle_since=at(-5))
    assert d.wanted and d.idle_since is None and d.deallocate_at is None


def test_idle_timeout_zero_switches_off_when_demand_ends() -> None:
    d = auto(idle=0)
    assert d.deallocate_at == NOW and d.target(NOW) is OFF
    d = auto([LiveClaim("a", at(30))], idle=0)
    assert d.next_transitions == (Transition(at(30), OFF, IDLE),) and d.deallocate_at == at(30)


def test_claims_past_their_end_are_not_demand() -> None:
    d = auto([LiveClaim("gone", at(0)), LiveClaim("older", at(-1))], vm_on=False)
    assert not d.wanted and d.active_claims == 0 and d.claims == ()


def test_claims_listed_are_the_first_16_by_name_but_all_are_counted() -> None:
    names = [f"job-{i:02d}" for i in range(40)]
    random.Random(1).shuffle(names)
    d = auto([LiveClaim(n) for n in names])
    assert d.active_claims == 40 and d.claims == tuple(f"job-{i:02d}" for i in range(16))


# ----------------------------------------------------------------------------- evaluate: schedule


def office(day0: float = 0) -> ScheduleView:
    """Open now until +6h30 (18:30), then again at 08:00 the next day for 10h30, and so on."""
    edges = (
        ScheduleEdge(at(day0 + 390), False),
        ScheduleEdge(at(day0 + 1200), True),
        ScheduleEdge(at(day0 + 1830), False),
        ScheduleEdge(at(day0 + 2640), True),
    )
    return ScheduleView(True, edges)


def test_the_schedule_wants_the_vm_and_predicts_its_days() -> None:
    d = auto(schedule=office())
    assert (d.wanted, d.decided_by, d.trigger) == (True, DecidedBy.SCHEDULE, Trigger.SCHEDULE)
    assert d.next_transitions == (
        Transition(at(400), OFF, IDLE),
        Transition(at(1200), RUN, SCHED),
        Transition(at(1840), OFF, IDLE),
    )
    assert d.deallocate_at == at(400) and d.recheck_at == at(390)


def test_claims_and_schedule_together_say_claims() -> None:
    d = auto([LiveClaim("a")], schedule=office())
    assert d.decided_by is DecidedBy.CLAIMS and d.wanted


def test_a_schedule_never_switches_off_a_vm_live_claims_need() -> None:
    d = auto([LiveClaim("long", at(600))], schedule=office())
    assert d.next_transitions[0] == Transition(at(610), OFF, IDLE)
    d = auto([LiveClaim("forever")], schedule=office())
    assert d.next_transitions == () and d.deallocate_at is None


def test_a_window_opening_inside_the_grace_cancels_the_switch_off() -> None:
    schedule = ScheduleView(False, (ScheduleEdge(at(5), True), ScheduleEdge(at(60), False), ScheduleEdge(at(600), True)))
    d = auto(schedule=schedule)
    assert d.idle_since == NOW and d.grace_until == at(10) and d.target(NOW) is RUN
    assert d.next_transitions == (Transition(at(70), OFF, IDLE), Transition(at(600), RUN, SCHED))
    assert d.deallocate_at == at(70) and d.recheck_at == at(5)
    # with the window's close as the last edge known, no switch-off is promised, yet the grace holds
    d = auto(schedule=ScheduleView(False, schedule.edges[:2]))
    assert d.next_transitions == () and d.deallocate_at is None and d.target(NOW) is RUN


def test_a_claim_ending_as_a_window_opens_leaves_no_gap() -> None:
    schedule = ScheduleView(False, (ScheduleEdge(at(30), True), ScheduleEdge(at(90), False)))
    d = auto([LiveClaim("a", at(30))], schedule=schedule, idle=0)
    assert d.next_transitions == (Transition(at(90), OFF, IDLE),)


def test_an_idle_vm_that_is_off_starts_with_the_next_window() -> None:
    schedule = ScheduleView(False, (ScheduleEdge(at(20), True), ScheduleEdge(at(80), False), ScheduleEdge(at(200), True)))
    d = auto(schedule=schedule, vm_on=False)
    assert d.deallocate_at is None and d.target(NOW) is OFF
    assert d.next_transitions == (
        Transition(at(20), RUN, SCHED),
        Transition(at(90), OFF, IDLE),
        Transition(at(200), RUN, SCHED),
    )


def test_nothing_is_predicted_beyond_the_last_edge_given() -> None:
    """The schedule may open again after its last edge given: a later switch-off is not promised."""
    schedule = ScheduleView(True, (ScheduleEdge(at(60), False),))
    d = auto(schedule=schedule)
    assert d.next_transitions == () and d.deallocate_at is None
    d = auto(schedule=ScheduleView(True, (ScheduleEdge(at(60), False), ScheduleEdge(at(600), True))))
    assert d.next_transitions == (Transition(at(70), OFF, IDLE), Transition(at(600), RUN, SCHED))


def test_edges_already_passed_are_ignored() -> None:
    schedule = ScheduleView(False, (ScheduleEdge(at(-5), False), ScheduleEdge(at(20), True), ScheduleEdge(at(40), False)))
    d = auto(schedule=schedule, vm_on=False)
    assert d.next_transitions == (Transition(at(20), RUN, SCHED),)  # the close at 40 is the horizon: +10 is past it
    assert d.recheck_at == at(20)


def test_at_most_three_transitions() -> None:
    edges = tuple(ScheduleEdge(at(100 * i), i % 2 == 0) for i in range(1, 20))
    d = auto(schedule=ScheduleView(True, edges), idle=0)
    assert len(d.next_transitions) == 3


@pytest.mark.parametrize("seed", range(60))
def test_predictions_are_what_evaluate_says_minute_by_minute(seed: int) -> None:
    """Replay the future a minute at a time, feeding each answer into the next call like the engine
    does (idleSince back, the VM on when the target was Running), and compare the target changes
    with what the first call predicted."""
    rng = random.Random(seed)
    idle = rng.choice([0, 1, 5, 10, 30])
    claims = [LiveClaim(f"c{i}", at(rng.randint(1, 300)) if rng.random() < 0.8 else None) for i in range(rng.randint(0, 3))]
    edge_times = sorted(rng.sample(range(1, 400), rng.randint(0, 6)))
    open_now = rng.random() < 0.5
    edges = tuple(ScheduleEdge(at(m), (i % 2 == 0) != open_now) for i, m in enumerate(edge_times))
    vm_on = rng.random() < 0.7
    idle_since = at(-rng.randint(0, 40)) if rng.random() < 0.5 else None

    def view(t: dt.datetime) -> ScheduleView:
        passed = [e for e in edges if e.at <= t]
        return ScheduleView(passed[-1].opens if passed else open_now, tuple(e for e in edges if e.at > t))

    first = evaluate(spec(idle=idle), claims=claims, schedule=view(NOW), now=NOW, idle_since=idle_since, vm_on=vm_on)
    horizon = edges[-1].at if edges else at(400)
    on = first.target(NOW) is RUN
    since = first.idle_since
    seen: list[Transition] = []
    t = NOW
    while t < horizon and len(seen) < 3:
        t += minutes(1)
        live = [c for c in claims if c.until is None or c.until > t]
        d = evaluate(spec(idle=idle), claims=live, schedule=view(t), now=t, idle_since=since, vm_on=on)
        now_on = d.target(t) is RUN
        if now_on != on:
            seen.append(Transition(t, RUN if now_on else OFF, SCHED if now_on else IDLE))
        on, since = now_on, d.idle_since
    predicted = list(first.next_transitions)
    assert all(tr.at <= horizon for tr in predicted)
    assert predicted == seen[: len(predicted)]
    if len(predicted) < 3:
        assert len(seen) == len(predicted), f"missed {seen[len(predicted):]}"
    if first.target(NOW) is RUN:  # deallocateAt is the first switch-off ahead, or None if none is known
        offs = [tr.at for tr in predicted if tr.to is OFF]
        assert first.deallocate_at == (offs[0] if offs else None)


def test_is_on() -> None:
    assert is_on(PowerState.RUNNING) and is_on(PowerState.STARTING)
    assert is_on(PowerState.DEALLOCATED, Action.START)
    for power in (PowerState.STOPPED, PowerState.STOPPING, PowerState.DEALLOCATING, PowerState.DEALLOCATED,
                  PowerState.UNKNOWN, None):
        assert not is_on(power)
    assert is_on(PowerState.RUNNING, Action.DEALLOCATE)  # on until Azure shows it going off


# ----------------------------------------------------------------------------- a claim's status


def vm(**kw) -> GpuVmView:
    base = dict(name="a100", desired=DesiredState.AUTO, power_state="Running", ready=True, reason="Reconciled",
                message="VM is running as desired", current=True)
    base.update(kw)
    return GpuVmView(**base)


LIVE = Liveness(True)


def test_bound_and_running_is_ready() -> None:
    state = claim_state(claim(), LIVE, vm())
    assert state == ClaimState(ClaimPhase.BOUND, ClaimReason.VM_RUNNING, "the VM of GpuVm a100 is running")
    assert state.ready
    assert claim_state(claim(), LIVE, vm(desired=DesiredState.RUNNING)).ready  # pinned Running serves claims too


def test_waiting_carries_the_gpuvms_reason_and_message() -> None:
    state = claim_state(claim(), LIVE, vm(power_state="Deallocated", ready=False, reason="AllocationFailed",
                                          message="start failed 2 times (last: ZonalAllocationFailed)"))
    assert (state.phase, state.reason, state.ready) == (ClaimPhase.BOUND, ClaimReason.WAITING_FOR_VM, False)
    assert state.message == "GpuVm a100 (power Deallocated): AllocationFailed: start failed 2 times (last: ZonalAllocationFailed)"


def test_an_evicted_vm_puts_claims_back_to_waiting_and_says_so() -> None:
    state = claim_state(claim(), LIVE, vm(power_state="Deallocated", ready=False, reason="Evicted",
                                          message="Azure evicted the Spot VM; restarting"))
    assert state.reason is ClaimReason.WAITING_FOR_VM and "Evicted: Azure evicted the Spot VM" in state.message


@pytest.mark.parametrize(
    ("view", "fragment"),
    [
        (vm(power_state="Running", ready=False, reason="Deallocating", message="deallocate requested"),
         "Deallocating: deallocate requested"),
        (vm(power_state="Running", ready=True, current=False), "not yet up to date"),
        (vm(power_state=None, ready=False, reason=None, message=None), "has not written its status yet"),
        (vm(power_state="Starting", ready=False, reason="Starting", message=None), "(power Starting): Starting"),
        (vm(desired=None, ready=False, reason="InvalidSpec", message="spec.desiredState: bad"), "InvalidSpec"),
        (vm(power_state="Deallocated", ready=True, reason="Reconciled", message="VM is deallocated as desired by Auto"),
         "GpuVm a100 (power Deallocated): a start is due for this claim"),
    ],
)
def test_not_running_and_ready_means_waiting(view: GpuVmView, fragment: str) -> None:
    state = claim_state(claim(), LIVE, view)
    assert state.reason is ClaimReason.WAITING_FOR_VM and fragment in state.message


def test_a_pinned_deallocated_gpuvm_binds_claims_and_says_why_they_wait() -> None:
    state = claim_state(claim(), LIVE, vm(desired=DesiredState.DEALLOCATED, power_state="Deallocated"))
    assert (state.phase, state.reason) == (ClaimPhase.BOUND, ClaimReason.GPUVM_NOT_AUTO)
    assert "desiredState Deallocated" in state.message and "Auto" in state.message


def test_no_gpuvm_is_pending() -> None:
    state = claim_state(claim(gpu_vm="a100x"), LIVE, None)
    assert state == ClaimState(ClaimPhase.PENDING, ClaimReason.GPUVM_NOT_FOUND, "no GpuVm a100x in namespace ml")


@pytest.mark.parametrize(
    ("live", "phase"),
    [
        (Liveness(False, reason=ClaimReason.EXPIRED, message="expired at X"), ClaimPhase.EXPIRED),
        (Liveness(False, reason=ClaimReason.OWNER_FINISHED, message="owner Pod p has finished"), ClaimPhase.RELEASED),
        (Liveness(False, reason=ClaimReason.DELETED, message="the claim is being deleted"), ClaimPhase.RELEASED),
    ],
)
def test_a_dead_claim_is_released_or_expired_whatever_the_vm(live: Liveness, phase: ClaimPhase) -> None:
    for view in (vm(), None):
        state = claim_state(claim(), live, view)
        assert (state.phase, state.reason, state.ready) == (phase, live.reason, False)
        assert state.message.startswith(live.message) and "no longer counts as demand" in state.message


def test_claim_events_on_phase_changes_only() -> None:
    bound = ClaimState(ClaimPhase.BOUND, ClaimReason.WAITING_FOR_VM, "GpuVm a100: Starting")
    assert claim_event(None, bound) == ("Normal", "Bound", "counted as demand: GpuVm a100: Starting")
    assert claim_event(ClaimPhase.PENDING, bound)[1] == "Bound"
    assert claim_event(ClaimPhase.BOUND, bound) is None
    released = ClaimState(ClaimPhase.RELEASED, ClaimReason.OWNER_FINISHED, "owner Pod p has finished")
    assert claim_event(ClaimPhase.BOUND, released) == ("Normal", "Released", "owner Pod p has finished")
    expired = ClaimState(ClaimPhase.EXPIRED, ClaimReason.EXPIRED, "expired at X")
    assert claim_event(ClaimPhase.BOUND, expired) == ("Warning", "Expired", "expired at X")
    assert claim_event(None, ClaimState(ClaimPhase.PENDING, ClaimReason.GPUVM_NOT_FOUND, "x")) is None


def test_gpuvm_view_reads_the_object() -> None:
    body = {
        "metadata": {"name": "a100", "generation": 4},
        "spec": {"desiredState": "Auto"},
        "status": {"observedGeneration": 4, "powerState": "Running",
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok"}]},
    }
    assert gpuvm_view(body) == GpuVmView("a100", DesiredState.AUTO, "Running", True, "Reconciled", "ok", True)
    assert gpuvm_view({"metadata": {"name": "x"}, "spec": {}}).desired is DesiredState.DEALLOCATED  # the CRD default
    odd = gpuvm_view({"metadata": {"name": "x", "generation": 2}, "spec": {"desiredState": "On"},
                      "status": {"observedGeneration": 1, "conditions": "nope"}})
    assert odd == GpuVmView("x", None, None, False, None, None, False)
