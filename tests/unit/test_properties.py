"""Properties of the pure core, for any input Hypothesis can think of.

``decide`` is driven through sequences of situations the way the engine drives it: each
Decision's records (lastOperation, startFailures, convergedGeneration) are fed into the next
Situation, an operation it requests is in flight until a later step ends it, and Azure, the
spec, the guard and the clock change in between. Spec parsing and status reading/rendering get
arbitrary JSON — what an apiserver without the CRD's validation, or a hand edit, could hold.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.decide import (
    Decision,
    LastOperation,
    RequestFailure,
    Result,
    Situation,
    StartFailures,
    Timing,
    complete_operation,
    decide,
)
from controller.demand import DecidedBy, Demand
from controller.gpuvm import GpuVmSpec, VmRef, parse_spec
from controller.power import (
    Action,
    DeletionPolicy,
    DesiredState,
    DriftPolicy,
    Observation,
    PowerState,
    ProvisioningState,
    Trigger,
    VmFacts,
)
from controller.reasons import Failure, Reason, SpecError
from controller.status import MAX_MESSAGE, read_status, render_status
from testbed.kubeemu.schema import StructuralSchema

CRD = Path(__file__).parents[2] / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml"
SCHEMA = StructuralSchema.build(yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
VM = VmRef("3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a", "rg-gpu", "vm-a100")
START = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)
TIMING = Timing(resync=60, transition_poll=10, capacity_backoff_base=60, capacity_backoff_max=1800, error_retry=30, denied_retry=300)
# The guard's refusals (and a failed claim): the VM must not be touched while one holds.
REFUSALS = [
    Failure(Reason.NOT_MANAGED, "NotManaged", "no opt-in tag"),
    Failure(Reason.NAMESPACE_NOT_ALLOWED, "NamespaceNotAllowed", "not this namespace"),
    Failure(Reason.DUPLICATE_VM, "DuplicateVm", "another GpuVm drives it"),
    Failure(Reason.AUTHORIZATION_FAILED, "AuthorizationFailed", "claim refused"),
]
FAILURES = [
    *REFUSALS,
    Failure(Reason.ALLOCATION_FAILED, "AllocationFailed", "no capacity"),
    Failure(Reason.QUOTA_EXCEEDED, "OperationNotAllowed", "quota"),
    Failure(Reason.THROTTLED, "TooManyRequests", "throttled", retry_after=5.0),
    Failure(Reason.AZURE_ERROR, "InternalServerError", "boom", retry_after=None),
    Failure(Reason.WAITING_FOR_TRANSITION, "OperationNotAllowed", "busy"),
    Failure(Reason.VM_NOT_FOUND, "ResourceNotFound", "gone"),
    Failure(Reason.AUTHENTICATION_FAILED, "ExpiredAuthenticationToken", "expired"),
]
SETTLED = [PowerState.RUNNING, PowerState.DEALLOCATED, PowerState.STOPPED]

valid_specs = st.builds(GpuVmSpec, vm=st.just(VM), desired_state=st.sampled_from(DesiredState),  # Auto too
                        drift_policy=st.sampled_from(DriftPolicy), deletion_policy=st.sampled_from(DeletionPolicy))
specs = st.one_of(st.builds(SpecError, st.sampled_from(["spec", "spec.vm", "spec.desiredState"]), st.just("bad")), valid_specs)
def mostly(common: Any, rare: list[Any]) -> st.SearchStrategy[Any]:
    """``common`` four times out of five, else one of ``rare``: failures must not drown the rest."""
    return st.sampled_from([common] * 4 * max(1, len(rare)) + rare)


observations = st.builds(
    Observation,
    power_state=st.sampled_from(SETTLED * 3 + list(PowerState)),
    provisioning_state=mostly(ProvisioningState.SUCCEEDED, list(ProvisioningState)),
    observed_at=st.just(START),
    facts=st.just(VmFacts(VM.resource_id, VM.name)),
    provisioning_failure=st.none() | st.sampled_from(FAILURES),
)


@dataclass(frozen=True)
class World:
    """What changes between two steps of the engine (None: unchanged)."""

    spec: GpuVmSpec | SpecError | None  # a spec edit (a new generation)
    observation: Observation | None  # Azure changed by itself (portal, platform); None: as before
    observation_failure: Failure | None  # ... or why it could not be read
    refusal: Failure | None
    end_operation: bool  # the operation in flight (if any) ends now ...
    operation_failure: Failure | None  # ... with this failure (None: success)
    request_failure: Failure | None  # the last request failed with this (429, 5xx ...)
    delete: bool
    seconds: float
    jitter: float
    wanted: bool | None = None  # desiredState Auto: demand changed (a claim came or went); None: as before


worlds = st.builds(
    World,
    spec=st.none() | valid_specs | valid_specs | specs,  # edits are mostly valid flips
    observation=st.none() | st.none() | observations,
    observation_failure=mostly(None, FAILURES),
    refusal=mostly(None, REFUSALS),
    end_operation=st.integers(0, 2).map(lambda i: i == 0),  # operations outlive a few steps
    operation_failure=mostly(None, FAILURES),
    request_failure=mostly(None, FAILURES),
    delete=st.integers(0, 9).map(lambda i: i == 0),  # deletion is rarer than the rest
    seconds=st.floats(min_value=0, max_value=4000, allow_nan=False),
    jitter=st.floats(min_value=0, max_value=0.999),
    wanted=st.none() | st.booleans(),
)


def demand_of(wanted: bool) -> Demand:
    """What demand.evaluate says, as far as decide reads it: wanted (by claims) or idle."""
    return Demand(wanted=wanted, decided_by=DecidedBy.CLAIMS if wanted else DecidedBy.IDLE)


def target_of(spec: GpuVmSpec, *, deleting: bool, demand: Demand, now: dt.datetime) -> PowerState:
    if deleting:
        return PowerState.DEALLOCATED
    return demand.target(now) if spec.desired_state is DesiredState.AUTO else spec.desired_state.power_state


@dataclass
class Engine:
    """The engine's bookkeeping around ``decide``, without I/O: records in, records out."""

    spec: GpuVmSpec | SpecError
    azure: Observation  # the VM as Azure has it
    generation: int = 1
    now: dt.datetime = START
    deleting: bool = False
    in_flight: Action | None = None
    last_operation: LastOperation | None = None
    start_failures: StartFailures | None = None
    converged_generation: int | None = None
    demand: Demand = demand_of(False)
    spot: bool = False  # a Spot VM: Azure deallocating it while wanted is an eviction, not drift

    @property
    def target(self) -> PowerState:
        assert isinstance(self.spec, GpuVmSpec)
        return target_of(self.spec, deleting=self.deleting, demand=self.demand, now=self.now)

    def situation(self, world: World) -> Situation:
        observation = self.azure if world.observation_failure is None else None
        return Situation(
            spec=self.spec,
            generation=self.generation,
            now=self.now,
            deleting=self.deleting,
            converged_generation=self.converged_generation,
            observation=observation,
            observation_failure=world.observation_failure if observation is None else None,
            refusal=world.refusal,
            in_flight=self.in_flight,
            last_operation=self.last_operation,
            start_failures=self.start_failures,
            request_failure=RequestFailure(world.request_failure, self.now) if world.request_failure else None,
            demand=self.demand if isinstance(self.spec, GpuVmSpec) and self.spec.desired_state is DesiredState.AUTO else None,
            spot=self.spot,
        )

    def advance(self, world: World) -> None:
        """Time passes, the spec may change, Azure may change by itself, an operation in flight
        may end (as _follow records it; Azure then shows its target, or is back where it was)."""
        self.now += dt.timedelta(seconds=world.seconds)
        if world.observation is not None:
            self.azure = world.observation
        if world.spec is not None and not self.deleting:
            self.spec, self.generation = world.spec, self.generation + 1
        if world.delete:
            self.deleting = True
        if world.wanted is not None:
            self.demand = demand_of(world.wanted)
        if world.end_operation and self.in_flight is not None:
            if world.operation_failure is None:
                self.azure = replace(self.azure, power_state=self.in_flight.target, provisioning_state=ProvisioningState.SUCCEEDED)
            self.in_flight = None
            if self.last_operation is not None and self.last_operation.result is Result.IN_PROGRESS:
                self.last_operation, self.start_failures = complete_operation(
                    self.last_operation, failure=world.operation_failure, start_failures=self.start_failures,
                    now=self.now, timing=TIMING, jitter=world.jitter,
                )

    def record(self, decision: Decision) -> None:
        """What the engine keeps from a decision: the records it writes to status, and the
        operation it requested, now in flight."""
        self.last_operation = decision.last_operation
        self.start_failures = decision.start_failures
        self.converged_generation = decision.converged_generation
        if decision.action is not None:
            self.in_flight = decision.action


def check(situation: Situation, decision: Decision) -> None:
    """The invariants every single decision keeps."""
    if decision.action is None:
        return
    assert situation.in_flight is None, "a second operation while one is in flight"
    assert situation.refusal is None, f"acted on a VM the guard refuses ({situation.refusal.reason})"
    assert situation.observation is not None, "acted without observing the VM"
    assert isinstance(situation.spec, GpuVmSpec), "acted on an invalid spec"
    assert not (situation.deleting and situation.spec.deletion_policy is DeletionPolicy.RETAIN), "acted under Retain"
    demand = situation.demand or demand_of(False)
    target = target_of(situation.spec, deleting=situation.deleting, demand=demand, now=situation.now)
    assert decision.action.target is target, f"{decision.action.value} while the desired power state is {target.value}"
    assert situation.observation.power_state is not target, "acted on a VM already in the desired state"
    assert not situation.observation.busy, "acted while Azure is busy with the VM"
    assert decision.last_operation is not None and decision.last_operation.result is Result.IN_PROGRESS
    assert decision.last_operation.action is decision.action and decision.last_operation.started_at == situation.now


def settled_in_desired_state(engine: Engine, world: World) -> Situation | None:
    """The situation once Azure has settled in the desired state (no operation of ours left)."""
    if not isinstance(engine.spec, GpuVmSpec):
        return None
    target = engine.target
    observation = Observation(target, ProvisioningState.SUCCEEDED, engine.now, facts=VmFacts(VM.resource_id, VM.name))
    return replace(engine.situation(world), in_flight=None, refusal=None, observation=observation, observation_failure=None)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=specs, azure=observations, steps=st.lists(worlds, min_size=1, max_size=25), spot=st.booleans())
def test_decide_over_any_sequence_of_situations(first: GpuVmSpec | SpecError, azure: Observation, steps: list[World],
                                                spot: bool) -> None:
    engine = Engine(spec=first, azure=azure, spot=spot)
    for world in steps:
        engine.advance(world)
        situation = engine.situation(world)
        decision = decide(situation, timing=TIMING, jitter=world.jitter)
        check(situation, decision)
        # Reconciled, always, once Azure shows the desired state and nothing of ours is in flight.
        settled = settled_in_desired_state(engine, world)
        if settled is not None:
            done = decide(settled, timing=TIMING, jitter=world.jitter)
            assert done.reason is Reason.RECONCILED and done.action is None, (done.reason, done.message)
            assert done.ready
            if not engine.deleting:
                assert done.converged_generation == engine.generation
        engine.record(decision)


@settings(max_examples=300, deadline=None)
@given(first=specs, azure=observations, steps=st.lists(worlds.map(lambda w: replace(w, delete=False)), min_size=1, max_size=15),
       last=valid_specs, spot=st.booleans())
def test_the_last_intent_wins_once_azure_follows(
    first: GpuVmSpec | SpecError, azure: Observation, steps: list[World], last: GpuVmSpec, spot: bool
) -> None:
    """Whatever happened before (invalid specs included), a valid last spec is reached: Azure
    settles and follows the requested operations (they succeed), and after at most one action the
    GpuVm is Reconciled. The last spec is drawn valid: an invalid one has nothing to reach, and
    drawn from ``specs`` half the examples returned here without checking anything."""
    engine = Engine(spec=first, azure=azure, spot=spot)
    for world in steps:
        engine.advance(world)
        engine.record(decide(engine.situation(world), timing=TIMING, jitter=world.jitter))
    engine.spec, engine.generation = last, engine.generation + 1
    power = engine.azure.power_state if engine.azure.power_state.settled else PowerState.STOPPED  # Azure settles somewhere
    if engine.in_flight is not None:  # the operation in flight ends, and Azure is where it went
        power = engine.in_flight.target
        engine.advance(World(None, None, None, None, True, None, None, False, 1.0, 0.5))
    actions = []
    for _ in range(3):
        engine.now += dt.timedelta(hours=1)  # past any back-off
        observation = Observation(power, ProvisioningState.SUCCEEDED, engine.now, facts=VmFacts(VM.resource_id, VM.name))
        situation = replace(engine.situation(steps[-1]), observation=observation, observation_failure=None,
                            refusal=None, request_failure=None)
        decision = decide(situation, timing=TIMING, jitter=0.5)
        check(situation, decision)
        engine.record(decision)
        if decision.ready:
            break
        if decision.action is not None:
            actions.append(decision.action)
            power = decision.action.target
            engine.advance(World(None, None, None, None, True, None, None, False, 1.0, 0.5))
    assert decision.ready, (decision.reason, decision.message)
    assert len(actions) <= 1 and power.reaches(engine.target)
    assert engine.converged_generation == engine.generation


# ---- any JSON value ----------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)
times = st.one_of(
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                 timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=14)), dt.timezone(dt.timedelta(hours=-12))]))
    .map(lambda t: t.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "2026-02-30T00:00:00Z", "now", ""]),
    json_values,
)


def near(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the right keys and (often) plausible, (often) wrong values."""
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()}).flatmap(
        lambda d: st.dictionaries(st.text(max_size=5), json_values, max_size=2).map(lambda extra: {**extra, **d}))


vm_refs = near({
    "resourceId": st.sampled_from([VM.resource_id, VM.resource_id.upper(), "/subscriptions/nope"]) | st.text(),
    "resourceGroup": st.sampled_from(["rg-gpu", "rg gpu", "", "ü" * 3]) | st.text(),
    "name": st.sampled_from(["vm-1", "-vm", "x" * 65]) | st.text(),
    "subscriptionId": st.sampled_from([VM.subscription_id, "not-a-uuid"]) | st.text(),
})
gpuvm_specs = json_values | near({
    "vm": vm_refs,
    "desiredState": st.sampled_from([s.value for s in DesiredState] + ["running", "On"]),
    "driftPolicy": st.sampled_from([s.value for s in DriftPolicy]),
    "deletionPolicy": st.sampled_from([s.value for s in DeletionPolicy]),
    "idleTimeout": st.sampled_from(["0s", "10m", "1h30m", "10", "-5m", "1d"]) | st.text(max_size=8),
    "stopMode": st.sampled_from(["Deallocate", "Hibernate", "Sleep"]),
    "schedule": near({
        "timeZone": st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", ""]) | st.text(max_size=12),
        "windows": st.lists(near({
            "days": st.sampled_from(["Mon-Fri", "Sat,Sun", "Fri-Mon", "Mon-Mon", "Funday"]) | st.text(max_size=8),
            "start": st.sampled_from(["08:00", "23:59", "24:00", "8:00", "25:00"]) | st.integers(),
            "end": st.sampled_from(["18:30", "24:00", "00:00", "08:00"]) | st.integers(),
        }), max_size=3),
    }),
})
statuses = json_values | near({
    "convergedGeneration": st.integers(min_value=-3, max_value=2**63) | st.booleans(),
    "observedGeneration": st.integers(),
    "lastOperation": near({
        "action": st.sampled_from([a.value for a in Action]),
        "trigger": st.sampled_from([t.value for t in Trigger]),
        "result": st.sampled_from([r.value for r in Result]),
        "startedAt": times, "finishedAt": times,
        "error": near({"code": st.text(), "message": st.text()}),
    }),
    "startFailures": near({"count": st.integers() | st.booleans(), "lastCode": st.text(), "nextRetryAt": times}),
    "demand": near({"decidedBy": st.sampled_from(["Claims", "Idle", "Nope"]), "idleSince": times, "deallocateAt": times}),
    "stopMode": near({"requested": st.sampled_from(["Hibernate", "Deallocate"]),
                      "effective": st.sampled_from(["Deallocate", "Hibernate"]), "reason": st.text()}),
    "evictions": near({"count": st.integers() | st.booleans(), "lastAt": times}),
    "conditions": st.lists(near({
        "type": st.just("Ready"), "status": st.sampled_from(["True", "False", "Maybe"]),
        "lastTransitionTime": times, "reason": st.text(), "message": st.text(),
    }), max_size=3),
})


@settings(max_examples=400, deadline=None)
@given(spec=gpuvm_specs, default_subscription=st.none() | st.just(VM.subscription_id))
def test_parse_spec_never_raises(spec: Any, default_subscription: str | None) -> None:
    parsed = parse_spec(spec, default_subscription=default_subscription)
    assert isinstance(parsed, (GpuVmSpec, SpecError))
    if isinstance(parsed, SpecError):
        assert parsed.field == "spec" or parsed.field.startswith("spec.")
        assert parsed.message and len(str(parsed)) <= MAX_MESSAGE, len(str(parsed))


@settings(max_examples=400, deadline=None)
@given(status=statuses, power=st.none() | st.sampled_from(PowerState), reason=st.sampled_from(Reason),
       message=st.text(max_size=3000), generation=st.integers(min_value=1, max_value=2**62))
def test_status_is_read_from_any_json_and_rendered_valid(status: Any, power: Any, reason: Reason, message: str, generation: int) -> None:
    previous = read_status(status)
    decision = Decision(reason, message or "x", last_operation=previous.last_operation,
                        start_failures=previous.start_failures, converged_generation=previous.converged_generation)
    observation = None if power is None else Observation(power, ProvisioningState.SUCCEEDED, START, facts=VmFacts(VM.resource_id, VM.name))
    rendered = render_status(decision, generation=generation, vm=VM, observation=observation, previous=previous, now=START)
    obj = {"apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm", "metadata": {"name": "x"},
           "spec": {"vm": {"resourceId": VM.resource_id}}, "status": rendered}
    assert SCHEMA.prune(obj) == [], "status fields the CRD does not declare (a real apiserver prunes them)"
    assert SCHEMA.validate(obj, only="status") == [], "a status the apiserver would refuse"
    # What was read back is what a restarted operator keeps; reading the rendering gives it again.
    again = read_status(rendered)
    assert (again.converged_generation, again.last_operation, again.start_failures) == (
        previous.converged_generation, _seconds(previous.last_operation), _seconds_failures(previous.start_failures))


def _seconds(op: LastOperation | None) -> LastOperation | None:
    """Status keeps times to the second (RFC 3339, as Kubernetes does)."""
    if op is None:
        return None
    trim = _trim
    return replace(op, started_at=trim(op.started_at), finished_at=op.finished_at and trim(op.finished_at),
                   error_message=(op.error_message or "") if op.error_code else None,
                   error_code=op.error_code or None)


def _seconds_failures(failures: StartFailures | None) -> StartFailures | None:
    return failures and replace(failures, next_retry_at=_trim(failures.next_retry_at))


def _trim(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.timezone.utc).replace(microsecond=0)


# JSON objects only: the callers hand over objects alone (pages keep the items that are objects),
# so any other value would be an example that checks nothing.
vm_answers = st.dictionaries(st.text(), json_values, max_size=4) | near({
    "id": st.just(VM.resource_id) | st.text(), "name": st.text(), "tags": st.dictionaries(st.text(), st.text()),
    "properties": near({
        "vmId": st.text(), "hardwareProfile": near({"vmSize": st.text()}),
        "instanceView": near({"statuses": st.lists(near({
            "code": st.sampled_from(["PowerState/running", "PowerState/frozen", "ProvisioningState/failed/AllocationFailed",
                                     "ProvisioningState/updating", "PowerState", "/", ""]) | st.text(),
            "message": st.text(), "displayStatus": st.text(),
        }), max_size=4)}),
    }),
})


@settings(max_examples=400, deadline=None)
@given(answer=vm_answers, source=st.sampled_from(["get", "list"]))
def test_an_observation_is_built_from_any_vm_answer(answer: dict[str, Any], source: str) -> None:
    """Whatever ARM (or a proxy) sent as a VM, the walk and the GET build an Observation."""
    from controller.azure_compute import observation_from_rest

    obs = observation_from_rest(answer, now=START, source=source)
    assert isinstance(obs.power_state, PowerState) and isinstance(obs.provisioning_state, ProvisioningState)
    if obs.provisioning_failure is not None:
        assert obs.provisioning_failure.message and "\n" not in obs.provisioning_failure.message
