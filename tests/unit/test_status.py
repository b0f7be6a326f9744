"""Status rendering and reading: what users see, and what a restarted operator reads back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from controller.decide import Decision, LastOperation, Result, StartFailures
from controller.demand import (
    MAX_LISTED_CLAIMS,
    MAX_TRANSITIONS,
    ClaimPhase,
    ClaimReason,
    ClaimState,
    DecidedBy,
    Demand,
    Transition,
)
from controller.gpuvm import VmRef
from controller.power import Action, Observation, PowerState, ProvisioningState, Trigger, VmFacts
from controller.reasons import Reason
from controller.status import PreviousStatus, read_status, ready_condition, render_claim_status, render_status
from controller.timestamps import format_time

NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)
VM = VmRef("3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a", "rg-gpu", "vm-a100")
CRD = Path(__file__).parents[2] / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml"
FACTS = VmFacts(VM.resource_id, "vm-a100", "0b6e-vmid", "Standard_NC24ads_A100_v4", "eastus")


def observed(power: PowerState = PowerState.RUNNING) -> Observation:
    return Observation(power, ProvisioningState.SUCCEEDED, NOW, facts=FACTS)


def schema_keys(schema: dict) -> set[str]:
    """Every dotted path a structural schema declares (arrays as [])."""
    out: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        for name, sub in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            out.add(path)
            walk(sub, path)
        if "items" in node:
            walk(node["items"], prefix + "[]")

    walk(schema, "")
    return out


def rendered_keys(value: object, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            out.add(path)
            out |= rendered_keys(v, path)
    elif isinstance(value, list):
        for item in value:
            out |= rendered_keys(item, prefix + "[]")
    return out


def full_decision() -> Decision:
    return Decision(
        Reason.ALLOCATION_FAILED,
        "start failed 2 times",
        last_operation=LastOperation(Action.START, Trigger.SPEC, NOW, Result.FAILED, NOW, "AllocationFailed", "no capacity"),
        start_failures=StartFailures(2, "AllocationFailed", NOW + dt.timedelta(minutes=2)),
        converged_generation=2,
    )


def test_every_rendered_field_is_declared_in_the_crd() -> None:
    crd = yaml.safe_load(CRD.read_text())
    status_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    status = render_status(full_decision(), generation=3, vm=VM, observation=observed(), previous=PreviousStatus(), now=NOW)
    assert rendered_keys(status) <= schema_keys(status_schema)
    assert "lastOperation.error.code" in rendered_keys(status)  # the check above is not vacuous


def test_render_full_status() -> None:
    status = render_status(full_decision(), generation=3, vm=VM, observation=observed(), previous=PreviousStatus(), now=NOW)
    assert status == {
        "observedGeneration": 3,
        "convergedGeneration": 2,
        "powerState": "Running",
        "provisioningState": "Succeeded",
        "vm": {
            "resourceId": VM.resource_id,
            "name": "vm-a100",
            "vmId": "0b6e-vmid",
            "size": "Standard_NC24ads_A100_v4",
            "location": "eastus",
        },
        "lastOperation": {
            "action": "Start",
            "trigger": "Spec",
            "startedAt": "2026-11-25T12:00:00Z",
            "result": "Failed",
            "finishedAt": "2026-11-25T12:00:00Z",
            "error": {"code": "AllocationFailed", "message": "no capacity"},
        },
        "startFailures": {"count": 2, "lastCode": "AllocationFailed", "nextRetryAt": "2026-11-25T12:02:00Z"},
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "AllocationFailed",
                "message": "start failed 2 times",
                "lastTransitionTime": "2026-11-25T12:00:00Z",
                "observedGeneration": 3,
            }
        ],
    }


def test_unobserved_vm_renders_unknown_power() -> None:
    d = Decision(Reason.VM_NOT_FOUND, "VM vm-a100 was not found")
    status = render_status(d, generation=1, vm=VM, observation=None, previous=PreviousStatus(), now=NOW)
    assert status["powerState"] == "Unknown" and "provisioningState" not in status
    assert status["vm"] == {"resourceId": VM.resource_id, "name": "vm-a100"}
    assert "lastOperation" not in status and "startFailures" not in status


def test_transition_time_moves_only_when_ready_flips() -> None:
    earlier = "2026-11-25T11:00:00Z"
    previous = PreviousStatus(conditions=({"type": "Ready", "status": "False", "lastTransitionTime": earlier},))
    waiting = Decision(Reason.STARTING, "start requested")
    status = render_status(waiting, generation=1, vm=VM, observation=observed(), previous=previous, now=NOW)
    assert status["conditions"][0]["lastTransitionTime"] == earlier
    ready = Decision(Reason.RECONCILED, "VM is running as desired")
    status = render_status(ready, generation=1, vm=VM, observation=observed(), previous=previous, now=NOW)
    assert status["conditions"][0]["lastTransitionTime"] == "2026-11-25T12:00:00Z"
    assert status["conditions"][0]["status"] == "True"


def test_long_messages_are_clipped() -> None:
    d = Decision(Reason.AZURE_ERROR, "x" * 5000)
    status = render_status(d, generation=1, vm=VM, observation=None, previous=PreviousStatus(), now=NOW)
    assert len(status["conditions"][0]["message"]) == 1024


def test_read_back_what_was_rendered() -> None:
    status = render_status(full_decision(), generation=3, vm=VM, observation=observed(), previous=PreviousStatus(), now=NOW)
    back = read_status(status)
    assert back.converged_generation == 2
    assert back.last_operation == full_decision().last_operation
    assert back.start_failures == full_decision().start_failures
    assert back.conditions[0]["reason"] == "AllocationFailed"


def test_read_tolerates_garbage() -> None:
    assert read_status(None) == PreviousStatus()
    assert read_status("nope") == PreviousStatus()
    broken = {
        "convergedGeneration": "2",
        "lastOperation": {"action": "Reboot", "trigger": "Spec", "startedAt": "2026-11-25T12:00:00Z", "result": "Succeeded"},
        "startFailures": {"count": 0, "lastCode": "x", "nextRetryAt": "2026-11-25T12:00:00Z"},
        "conditions": "Ready",
    }
    assert read_status(broken) == PreviousStatus()
    no_time = {"lastOperation": {"action": "Start", "trigger": "Spec", "startedAt": "yesterday", "result": "InProgress"}}
    assert read_status(no_time).last_operation is None


# ------------------------------------------------------------------ status.demand and claims

CLAIM_CRD = Path(__file__).parents[2] / "deploy" / "crds" / "gpuvmclaims.gpuvm.dev.yaml"


def status_schema_of(path: Path) -> dict:
    crd = yaml.safe_load(path.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def full_demand() -> Demand:
    return Demand(
        wanted=False,
        decided_by=DecidedBy.IDLE,
        active_claims=0,
        claims=(),
        idle_since=NOW - dt.timedelta(minutes=4),
        deallocate_at=NOW + dt.timedelta(minutes=6),
        next_transitions=(
            Transition(NOW + dt.timedelta(minutes=6), PowerState.DEALLOCATED, Trigger.IDLE),
            Transition(NOW + dt.timedelta(hours=20), PowerState.RUNNING, Trigger.SCHEDULE),
        ),
        grace_until=NOW + dt.timedelta(minutes=6),
    )


def test_demand_is_rendered_and_declared_in_the_crd() -> None:
    status = render_status(Decision(Reason.RECONCILED, "ok"), generation=1, vm=VM, observation=observed(),
                           previous=PreviousStatus(), now=NOW, demand=full_demand())
    assert status["demand"] == {
        "decidedBy": "Idle",
        "activeClaims": 0,
        "idleSince": "2026-11-25T11:56:00Z",
        "deallocateAt": "2026-11-25T12:06:00Z",
        "nextTransitions": [
            {"at": "2026-11-25T12:06:00Z", "to": "Deallocated", "by": "Idle"},
            {"at": "2026-11-26T08:00:00Z", "to": "Running", "by": "Schedule"},
        ],
    }
    assert rendered_keys(status) <= schema_keys(status_schema_of(CRD))
    claimed = Demand(wanted=True, decided_by=DecidedBy.CLAIMS, active_claims=20, claims=tuple(f"c{i}" for i in range(16)))
    status = render_status(Decision(Reason.RECONCILED, "ok"), generation=1, vm=VM, observation=observed(),
                           previous=PreviousStatus(), now=NOW, demand=claimed)
    assert status["demand"] == {"decidedBy": "Claims", "activeClaims": 20, "claims": [f"c{i}" for i in range(16)]}
    assert rendered_keys(status) <= schema_keys(status_schema_of(CRD))


def test_the_crd_bounds_demand_lists_as_the_core_does() -> None:
    demand = status_schema_of(CRD)["properties"]["demand"]["properties"]
    assert demand["claims"]["maxItems"] == MAX_LISTED_CLAIMS
    assert demand["nextTransitions"]["maxItems"] == MAX_TRANSITIONS
    assert demand["decidedBy"]["enum"] == [d.value for d in DecidedBy]
    assert set(demand["nextTransitions"]["items"]["properties"]["by"]["enum"]) == {"Claim", "Schedule", "Idle"}
    triggers = status_schema_of(CRD)["properties"]["lastOperation"]["properties"]["trigger"]["enum"]
    assert triggers == [t.value for t in Trigger]


def test_idle_since_survives_a_restart() -> None:
    status = render_status(Decision(Reason.RECONCILED, "ok"), generation=1, vm=VM, observation=observed(),
                           previous=PreviousStatus(), now=NOW, demand=full_demand())
    assert read_status(status).idle_since == NOW - dt.timedelta(minutes=4)
    assert read_status({"demand": {"idleSince": "soon"}}).idle_since is None
    assert read_status({"demand": "x"}).idle_since is None


def test_claim_status_is_declared_in_the_claim_crd() -> None:
    state = ClaimState(ClaimPhase.BOUND, ClaimReason.WAITING_FOR_VM, "GpuVm a100 (power Starting): Starting")
    status = render_claim_status(state, generation=1, previous=None, now=NOW)
    assert status == {
        "phase": "Bound",
        "observedGeneration": 1,
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "WaitingForVm",
            "message": "GpuVm a100 (power Starting): Starting",
            "lastTransitionTime": "2026-11-25T12:00:00Z", "observedGeneration": 1,
        }],
    }
    schema = status_schema_of(CLAIM_CRD)
    assert rendered_keys(status) <= schema_keys(schema)
    assert schema["properties"]["phase"]["enum"] == [p.value for p in ClaimPhase]


def test_claim_ready_transition_time_moves_only_when_it_flips() -> None:
    waiting = ClaimState(ClaimPhase.BOUND, ClaimReason.WAITING_FOR_VM, "starting")
    earlier = render_claim_status(waiting, generation=1, previous=None, now=NOW - dt.timedelta(minutes=3))
    still = render_claim_status(waiting, generation=1, previous=earlier, now=NOW)
    assert still["conditions"][0]["lastTransitionTime"] == "2026-11-25T11:57:00Z"
    ready = ClaimState(ClaimPhase.BOUND, ClaimReason.VM_RUNNING, "running")
    flipped = render_claim_status(ready, generation=1, previous=still, now=NOW)
    assert flipped["conditions"][0]["status"] == "True"
    assert flipped["conditions"][0]["lastTransitionTime"] == "2026-11-25T12:00:00Z"
    assert render_claim_status(ready, generation=1, previous={"conditions": "x"}, now=NOW)["conditions"][0]["status"] == "True"


def test_json_booleans_are_not_generations_or_counts() -> None:
    """Found by Hypothesis: Python's True is an int, the schema's integer is not; rendered back,
    ``convergedGeneration: true`` made every later status write one the apiserver refuses."""
    previous = read_status({"convergedGeneration": True,
                            "startFailures": {"count": True, "lastCode": "AllocationFailed", "nextRetryAt": "2026-11-25T12:00:00Z"}})
    assert previous.converged_generation is None and previous.start_failures is None


def test_times_that_are_no_utc_date_are_ignored() -> None:
    """Found by Hypothesis: a valid ISO string can overflow when moved to UTC, and format_time
    must write four-digit years (glibc's strftime writes the year 999 as "999")."""
    previous = read_status({"lastOperation": {"action": "Start", "trigger": "Spec", "result": "InProgress",
                                              "startedAt": "0001-01-01T00:00:00+14:00"}})
    assert previous.last_operation is None
    assert format_time(dt.datetime(999, 1, 2, 3, 4, 5, 678, tzinfo=dt.timezone.utc)) == "0999-01-02T03:04:05Z"
    assert format_time(NOW) == "2026-11-25T12:00:00Z"


def test_an_unparseable_transition_time_is_not_copied() -> None:
    """Found by Hypothesis: a hand-edited lastTransitionTime was copied verbatim, and the
    apiserver refuses a status whose date-time is not one."""
    decision = Decision(Reason.RECONCILED, "ok")
    for bad, expected in (("2026-02-30T00:00:00Z", "2026-11-25T12:00:00Z"), ("2026-01-01T00:00:00+01:00", "2025-12-31T23:00:00Z")):
        previous = read_status({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": bad}]})
        condition = ready_condition(decision, generation=1, previous=previous.conditions, now=NOW)
        assert condition["lastTransitionTime"] == expected
