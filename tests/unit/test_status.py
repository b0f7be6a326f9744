"""Status rendering and reading: what users see, and what a restarted operator reads back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from controller.decide import Decision, LastOperation, Result, StartFailures
from controller.gpuvm import VmRef
from controller.power import Action, Observation, PowerState, ProvisioningState, Trigger, VmFacts
from controller.reasons import Reason
from controller.status import PreviousStatus, format_time, merge_patch, read_status, ready_condition, render_status

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


def test_merge_patch() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "gone": True, "list": [1]}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "list": [1, 2], "added": "x"}
    assert merge_patch(old, new) == {"b": {"d": 4}, "gone": None, "list": [1, 2], "added": "x"}
    assert merge_patch(new, new) == {}
    assert merge_patch({}, {"a": None}) == {"a": None}


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
