"""Spec parsing in the operator agrees with the CRD, and names the field when it cannot act."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from controller import gpuvm
from controller.gpuvm import GpuVmSpec, VmRef, parse_spec
from controller.power import DeletionPolicy, DesiredState, DriftPolicy, StopMode
from controller.reasons import SpecError

SUB = "3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a"
RID = f"/subscriptions/{SUB}/resourceGroups/rg-gpu/providers/Microsoft.Compute/virtualMachines/vm-a100-01"
CRD = Path(__file__).parents[2] / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml"


def crd_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def test_crd_patterns_are_the_parsers_patterns() -> None:
    vm = crd_schema()["properties"]["spec"]["properties"]["vm"]["properties"]
    assert vm["resourceId"]["pattern"] == gpuvm.RESOURCE_ID_PATTERN
    assert vm["subscriptionId"]["pattern"] == gpuvm.SUBSCRIPTION_PATTERN
    assert vm["resourceGroup"]["pattern"] == gpuvm.RESOURCE_GROUP_PATTERN
    assert vm["name"]["pattern"] == gpuvm.VM_NAME_PATTERN


def test_crd_enums_and_defaults_are_the_parsers() -> None:
    spec = crd_schema()["properties"]["spec"]["properties"]
    assert spec["desiredState"]["enum"] == [s.value for s in DesiredState]
    assert spec["driftPolicy"]["enum"] == [s.value for s in DriftPolicy]
    assert spec["deletionPolicy"]["enum"] == [s.value for s in DeletionPolicy]
    assert (spec["desiredState"]["default"], spec["driftPolicy"]["default"], spec["deletionPolicy"]["default"]) == (
        "Deallocated",
        "Enforce",
        "Retain",
    )


def test_by_resource_id_with_defaults() -> None:
    parsed = parse_spec({"vm": {"resourceId": RID}}, default_subscription=None)
    assert parsed == GpuVmSpec(
        vm=VmRef(SUB, "rg-gpu", "vm-a100-01"),
        desired_state=DesiredState.DEALLOCATED,
        drift_policy=DriftPolicy.ENFORCE,
        deletion_policy=DeletionPolicy.RETAIN,
    )
    assert parsed.vm.resource_id == RID


def test_resource_id_casing_variants_name_the_same_vm() -> None:
    # Azure CLI and portal disagree on casing; ARM treats all of these as one VM.
    other = (
        f"/subscriptions/{SUB.upper()}/resourcegroups/RG-GPU/providers/microsoft.compute/virtualmachines/VM-A100-01"
    )
    a = parse_spec({"vm": {"resourceId": RID}}, default_subscription=None)
    b = parse_spec({"vm": {"resourceId": other}}, default_subscription=None)
    assert isinstance(a, GpuVmSpec) and isinstance(b, GpuVmSpec)
    assert a.vm.key == b.vm.key


def test_by_name_uses_the_operators_default_subscription() -> None:
    parsed = parse_spec(
        {"vm": {"resourceGroup": "rg-gpu", "name": "vm-1"}, "desiredState": "Running", "driftPolicy": "Report",
         "deletionPolicy": "Deallocate"},
        default_subscription=SUB.upper(),
    )
    assert parsed == GpuVmSpec(VmRef(SUB, "rg-gpu", "vm-1"), DesiredState.RUNNING, DriftPolicy.REPORT, DeletionPolicy.DEALLOCATE)


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        (None, "spec", "required"),
        ({}, "spec.vm", "required"),
        ({"vm": "vm-1"}, "spec.vm", "must be an object with resourceId, or resourceGroup and name; got string"),
        ([1, 2], "spec", "must be an object, got array"),
        ({"vm": {"resourceId": 7}}, "spec.vm.resourceId", "must be a string, got integer"),
        ({"vm": {"resourceGroup": "rg", "name": None}}, "spec.vm.name", "must be a string, got null"),
        ({"vm": {"resourceId": RID}, "desiredState": ["Running"]}, "spec.desiredState", "unsupported value \"['Running']\""),
        ({"vm": {"resourceId": "/subscriptions/x/vm"}}, "spec.vm.resourceId", "is not a VM resource id"),
        ({"vm": {"resourceId": RID + "\n"}}, "spec.vm.resourceId", "is not a VM resource id"),
        ({"vm": {"resourceId": RID, "name": "x"}}, "spec.vm", "not both"),
        ({"vm": {"resourceId": RID, "subscriptionId": SUB}}, "spec.vm", "not both"),
        ({"vm": {"resourceGroup": "rg"}}, "spec.vm.name", "required"),
        ({"vm": {"name": "vm-1"}}, "spec.vm.resourceGroup", "required"),
        ({"vm": {"resourceGroup": "rg", "name": "vm/1"}}, "spec.vm.name", "is not a VM name"),
        ({"vm": {"resourceGroup": "rg.", "name": "vm"}}, "spec.vm.resourceGroup", "is not a resource group name"),
        ({"vm": {"resourceGroup": "rg", "name": 7}}, "spec.vm.name", "must be a string"),
        ({"vm": {"resourceGroup": "rg", "name": "vm", "subscriptionId": "nope"}}, "spec.vm.subscriptionId", "UUID"),
        ({"vm": {"resourceId": RID}, "desiredState": "Stopped"}, "spec.desiredState", 'unsupported value "Stopped"'),
        ({"vm": {"resourceId": RID}, "driftPolicy": "Ignore"}, "spec.driftPolicy", '"Enforce", "Report"'),
        ({"vm": {"resourceId": RID}, "deletionPolicy": "Delete"}, "spec.deletionPolicy", '"Retain", "Deallocate"'),
    ],
)
def test_invalid_specs_name_the_field(spec: object, field: str, fragment: str) -> None:
    parsed = parse_spec(spec, default_subscription=SUB)
    assert isinstance(parsed, SpecError)
    assert parsed.field == field
    assert fragment in parsed.message


def test_name_without_subscription_and_no_default() -> None:
    parsed = parse_spec({"vm": {"resourceGroup": "rg", "name": "vm"}}, default_subscription=None)
    assert parsed == SpecError(
        "spec.vm.subscriptionId",
        "required: this operator has no default subscription (set --subscription-id or AZURE_SUBSCRIPTION_ID)",
    )


def test_unicode_word_characters_are_refused_like_go_re2_does() -> None:
    parsed = parse_spec({"vm": {"resourceGroup": "rg-ü", "name": "vm"}}, default_subscription=SUB)
    assert isinstance(parsed, SpecError) and parsed.field == "spec.vm.resourceGroup"


# ------------------------------------------------------------------ Auto, idleTimeout, stopMode, schedule


def test_crd_idle_timeout_and_stop_mode_are_the_parsers() -> None:
    spec = crd_schema()["properties"]["spec"]["properties"]
    assert spec["idleTimeout"]["pattern"] == gpuvm.DURATION_PATTERN
    assert spec["stopMode"]["enum"] == [m.value for m in StopMode]
    # Defaults are the operator's (documented), not the CRD's: a CRD default would show up in
    # every existing GpuVm's spec.
    assert "default" not in spec["idleTimeout"] and "default" not in spec["stopMode"]


def test_auto_with_the_operators_defaults() -> None:
    parsed = parse_spec({"vm": {"resourceId": RID}, "desiredState": "Auto"}, default_subscription=None)
    assert isinstance(parsed, GpuVmSpec)
    assert parsed.desired_state is DesiredState.AUTO
    assert parsed.idle_timeout == dt.timedelta(minutes=10) == gpuvm.DEFAULT_IDLE_TIMEOUT
    assert parsed.stop_mode is StopMode.DEALLOCATE and parsed.schedule is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0s", 0), ("10m", 600), ("1h30m", 5400), ("2h", 7200), ("1h0m5s", 3605), ("90s", 90), ("999999h", 999999 * 3600)],
)
def test_idle_timeout_durations(value: str, expected: int) -> None:
    parsed = parse_spec({"vm": {"resourceId": RID}, "desiredState": "Auto", "idleTimeout": value}, default_subscription=None)
    assert isinstance(parsed, GpuVmSpec) and parsed.idle_timeout == dt.timedelta(seconds=expected)


@pytest.mark.parametrize("value", ["", "10", "10 m", "1.5h", "30m1h", "-5m", "1d", "10M", "1000000h", 600, ["10m"]])
def test_bad_idle_timeout_names_the_field_and_the_format(value: object) -> None:
    parsed = parse_spec({"vm": {"resourceId": RID}, "idleTimeout": value}, default_subscription=None)
    assert isinstance(parsed, SpecError) and parsed.field == "spec.idleTimeout"
    assert "is not a duration" in parsed.message and "10m, 0s or 1h30m" in parsed.message


def test_duration_pattern_agrees_with_the_parser() -> None:
    import re

    for value in ["0s", "10m", "1h30m", "", "h", "1h1h", "5", "01m"]:
        assert bool(re.fullmatch(gpuvm.DURATION_PATTERN, value) and len(value) >= 2) == (gpuvm.parse_duration(value) is not None)


def test_stop_mode() -> None:
    parsed = parse_spec({"vm": {"resourceId": RID}, "stopMode": "Hibernate"}, default_subscription=None)
    assert isinstance(parsed, GpuVmSpec) and parsed.stop_mode is StopMode.HIBERNATE
    bad = parse_spec({"vm": {"resourceId": RID}, "stopMode": "Stop"}, default_subscription=None)
    assert bad == SpecError("spec.stopMode", 'unsupported value "Stop": supported values: "Deallocate", "Hibernate"')


def test_schedule_is_parsed_into_windows() -> None:
    from controller.schedule import Schedule, Window

    raw = {"timeZone": "Europe/Berlin", "windows": [{"days": "Mon-Fri", "start": "08:00", "end": "18:30"}]}
    parsed = parse_spec({"vm": {"resourceId": RID}, "desiredState": "Auto", "schedule": raw}, default_subscription=None)
    assert isinstance(parsed, GpuVmSpec)
    assert parsed.schedule == Schedule("Europe/Berlin", (Window(frozenset(range(5)), 8 * 60, 18 * 60 + 30),))


def test_a_malformed_schedule_is_invalid_spec_naming_the_field() -> None:
    raw = {"timeZone": "Europe/Berlln", "windows": [{"days": "Mon-Fri", "start": "08:00", "end": "18:30"}]}
    parsed = parse_spec({"vm": {"resourceId": RID}, "desiredState": "Auto", "schedule": raw}, default_subscription=None)
    assert isinstance(parsed, SpecError) and parsed.field == "spec.schedule.timeZone"
    assert "Europe/Berlin" in parsed.message  # did you mean


def test_errors_of_other_fields_come_before_the_schedules() -> None:
    parsed = parse_spec({"vm": {"resourceId": RID}, "schedule": {"timeZone": "Mars/Olympus", "windows": []}},
                        default_subscription=None)
    assert isinstance(parsed, SpecError) and parsed.field == "spec.schedule.timeZone"
    # as before the schedule existed, the other fields' errors are named first
    parsed = parse_spec({"vm": {"resourceId": RID}, "driftPolicy": "x", "schedule": {}}, default_subscription=None)
    assert isinstance(parsed, SpecError) and parsed.field == "spec.driftPolicy"


def test_crd_schedule_patterns() -> None:
    import re

    schedule = crd_schema()["properties"]["spec"]["properties"]["schedule"]
    window = schedule["properties"]["windows"]["items"]["properties"]
    assert schedule["properties"]["timeZone"]["default"] == "UTC"
    assert schedule["properties"]["windows"]["maxItems"] == 32
    days, start, end = (window[k]["pattern"] for k in ("days", "start", "end"))
    for good in ["Mon-Fri", "Sat,Sun", "Mon,Wed-Fri", "Sun"]:
        assert re.fullmatch(days, good)
    for bad in ["mon", "Mon-", "Mon,,Tue", "Weekdays", "Mon Fri"]:
        assert not re.fullmatch(days, bad)
    assert re.fullmatch(start, "08:00") and re.fullmatch(start, "23:59") and not re.fullmatch(start, "24:00")
    assert re.fullmatch(end, "24:00") and re.fullmatch(end, "00:00") and not re.fullmatch(end, "24:01")
    assert not re.fullmatch(start, "8:00")


def test_a_huge_bad_value_is_quoted_short_on_one_line() -> None:
    """A 1 MB string (or one with newlines) in a bad field: the message stays readable."""
    huge = "x" * 1_000_000
    for spec, field in (({"vm": {"resourceId": huge}}, "spec.vm.resourceId"),
                        ({"vm": {"resourceId": RID}, "desiredState": huge}, "spec.desiredState"),
                        ({"vm": {"resourceGroup": "rg\nwith\nlines", "name": "vm-1"}}, "spec.vm.resourceGroup")):
        error = parse_spec(spec, default_subscription=SUB)
        assert isinstance(error, SpecError) and error.field == field
        assert len(error.message) < 300 and "\n" not in error.message
    assert "(1000000 characters)" in parse_spec({"vm": {"resourceId": huge}}, default_subscription=SUB).message
