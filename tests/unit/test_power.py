"""Power-state parsing: the statuses[1] bug of the scripts this project replaces, and friends."""

from __future__ import annotations

import pytest

from controller.power import Action, PowerState, ProvisioningState, parse_statuses


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("PowerState/starting", PowerState.STARTING),
        ("PowerState/running", PowerState.RUNNING),
        ("PowerState/stopping", PowerState.STOPPING),
        ("PowerState/stopped", PowerState.STOPPED),
        ("PowerState/deallocating", PowerState.DEALLOCATING),
        ("PowerState/deallocated", PowerState.DEALLOCATED),
        ("PowerState/unknown", PowerState.UNKNOWN),
        ("PowerState/hibernating", PowerState.UNKNOWN),  # anything new is unknown, not a guess
        ("powerstate/RUNNING", PowerState.RUNNING),
    ],
)
def test_every_power_code(code: str, state: PowerState) -> None:
    assert parse_statuses(["ProvisioningState/succeeded", code]).power_state is state


def test_order_does_not_matter() -> None:
    parsed = parse_statuses(["PowerState/running", "ProvisioningState/succeeded"])
    assert (parsed.power_state, parsed.provisioning_state) == (PowerState.RUNNING, ProvisioningState.SUCCEEDED)


def test_missing_power_state_is_unknown_not_an_index_error() -> None:
    parsed = parse_statuses(["ProvisioningState/succeeded"])
    assert parsed.power_state is PowerState.UNKNOWN
    assert parse_statuses([]).power_state is PowerState.UNKNOWN
    assert parse_statuses([None, ""]).provisioning_state is ProvisioningState.UNKNOWN


def test_failed_provisioning_keeps_the_error_code() -> None:
    parsed = parse_statuses(["ProvisioningState/failed/AllocationFailed", "PowerState/deallocated"])
    assert parsed.provisioning_state is ProvisioningState.FAILED
    assert parsed.provisioning_error == "AllocationFailed"
    assert parse_statuses(["ProvisioningState/updating"]).provisioning_error is None


def test_hibernation_status() -> None:
    parsed = parse_statuses(["PowerState/deallocated", "HibernationState/Hibernated"])
    assert parsed.hibernated and parsed.power_state is PowerState.HIBERNATED
    # in any order, any case; a hibernation status without a deallocated power state changes nothing
    assert parse_statuses(["hibernationstate/HIBERNATED", "PowerState/deallocated"]).power_state is PowerState.HIBERNATED
    assert parse_statuses(["PowerState/starting", "HibernationState/Hibernated"]).power_state is PowerState.STARTING
    assert parse_statuses(["PowerState/deallocated", "HibernationState/Resumed"]).power_state is PowerState.DEALLOCATED


def test_hibernated_is_settled_free_and_counts_as_deallocated() -> None:
    hibernated = PowerState.HIBERNATED
    assert hibernated.settled and not hibernated.billed and not hibernated.transitional
    assert hibernated.reaches(PowerState.DEALLOCATED) and hibernated.reaches(PowerState.HIBERNATED)
    assert not hibernated.reaches(PowerState.RUNNING)
    assert not PowerState.DEALLOCATED.reaches(PowerState.HIBERNATED)  # hibernating was asked for, not done
    assert all(state.reaches(state) for state in PowerState)
    assert not PowerState.STOPPED.reaches(PowerState.DEALLOCATED)


def test_state_properties() -> None:
    assert {s for s in PowerState if s.settled} == {
        PowerState.RUNNING, PowerState.STOPPED, PowerState.DEALLOCATED, PowerState.HIBERNATED,
    }
    assert {s for s in PowerState if s.transitional} == {PowerState.STARTING, PowerState.STOPPING, PowerState.DEALLOCATING}
    assert PowerState.STOPPED.billed and not PowerState.DEALLOCATED.billed and not PowerState.DEALLOCATING.billed
    assert {s for s in ProvisioningState if s.busy} == {
        ProvisioningState.CREATING,
        ProvisioningState.UPDATING,
        ProvisioningState.DELETING,
        ProvisioningState.MIGRATING,
    }
    assert (Action.START.target, Action.START.transient) == (PowerState.RUNNING, PowerState.STARTING)
    assert (Action.DEALLOCATE.target, Action.DEALLOCATE.transient) == (PowerState.DEALLOCATED, PowerState.DEALLOCATING)
